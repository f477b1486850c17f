"""Per-operator trace and drift localization: the codec's trace messages,
the host reference (TFLM preserved tensors vs LiteRT reference kernels), the
simulated board's trace and its perturbation fault, end to end."""

from __future__ import annotations

import numpy as np
import pytest

from harness.device.link import parse_faults
from harness.device.sim import start_sim
from harness.errors import ConfigError
from harness.localize import OpChain, localize, localize_on_device, model_ops, output_crc, reference_outputs
from harness.protocol import codec as c
from harness.protocol.session import DeviceSession


def _samples(npz, n=2):
    d = np.load(npz)
    return d["x"][:n] if "x" in d else d[d.files[0]][:n]


def _inputs(tflite, npz, n=2):
    from harness.model import inspect_bytes

    t = inspect_bytes(tflite.read_bytes()).inputs[0]
    xs = _samples(npz, n)
    out = []
    for x in xs:
        if t.quantized and x.dtype != t.np_dtype:
            x = np.clip(np.round(x / t.scale + t.zero_point), -128, 127).astype(t.np_dtype)
        out.append([np.asarray(x, t.np_dtype).reshape(t.shape)])
    return out


def test_trace_messages_round_trip():
    for msg in (
        c.TraceRead(7, 3, 40),
        c.CaptureRead(7, 512, 1000),
        c.Trace(7, 12, 3, (1, 0xFFFFFFFF), (10, 20)),
        c.Capture(7, 4, 2, 900, 0, b"\x01\x02"),
        c.Invoke(5, 0x1234, 1, c.INVOKE_TRACE | c.INVOKE_CAPTURE, 9),
    ):
        got, seq, _ = c.decode_message(c.encode_message(msg, 3))
        assert got == msg and seq == 3
    # an INVOKE without options encodes as before (version-2 devices without the feature)
    assert c.Invoke(5, 0x1234, 1).payload() == bytes.fromhex("05000000341200000100 0000".replace(" ", ""))
    with pytest.raises(c.CodecError) as e:
        c.Trace.parse(b"\x00" * 8 + b"\x01" * 5)
    assert e.value.reason == "BAD_LENGTH"


def test_info_trace_fields_only_with_the_feature():
    base = dict(
        version=2,
        flags=0,
        max_frame=1024,
        rx_window=4,
        arena_size=1,
        arena_used=1,
        model_size=1,
        model_sha256="00" * 32,
        cpu_hz=64_000_000,
        firmware="f",
        board="b",
        line_baud=0,
        staging_bytes=0,
    )
    plain = c.Info(**base, features=c.FEATURE_NAK)
    traced = c.Info(**base, features=c.FEATURE_NAK | c.FEATURE_TRACE, n_ops=31, capture_bytes=2048, tick_hz=64_000_000)
    assert len(traced.payload()) == len(plain.payload()) + 12
    assert c.Info.parse(traced.payload()) == traced
    assert c.Info.parse(plain.payload()).n_ops == 0 and not c.Info.parse(plain.payload()).traces
    with pytest.raises(c.CodecError):
        c.Info.parse(traced.payload()[:-1])


def test_perturbation_fault_is_parsed():
    f = parse_faults("op=4:lsb=-2,ber=1e-5")
    assert (f.perturb_op, f.perturb_lsb) == (4, -2) and "op=4:lsb=-2" in f.describe()
    for bad in ("op=4", "op=x:lsb=1", "op=2:lsb=0", "op=-1:lsb=1", "op=1:ulp=1"):
        with pytest.raises(ConfigError):
            parse_faults(bad)


@pytest.mark.parametrize("which", ["gesture_model", "audio_model"])
def test_host_references_agree_per_operator(which, request):
    m = request.getfixturevalue(which)
    model = m.tflite.read_bytes()
    chain = OpChain(model)
    for ins in _inputs(m.tflite, m.npz):
        tflm = reference_outputs(model, ins, "tflm")
        ref = reference_outputs(model, ins, "litert_ref")
        per_op, ns, outs = chain.run(ins)
        assert len(tflm) == len(model_ops(model)) == len(per_op) == len(ns)
        for k in range(len(tflm)):
            assert output_crc(tflm[k]) == output_crc(ref[k]) == output_crc(per_op[k]), k
        loc = localize(model, ins, [output_crc(o) for o in tflm])
        assert loc.first_divergence is None and loc.reference_agrees


def test_localize_names_the_perturbed_operator(gesture_model):
    model = gesture_model.tflite.read_bytes()
    ops = model_ops(model)
    ins = _inputs(gesture_model.tflite, gesture_model.npz, 1)[0]
    k = len(ops) // 2
    per_op, _, _ = OpChain(model).run(ins, k, 3)
    cap = b"".join(np.ascontiguousarray(o[0]).tobytes() for o in per_op[k:])
    loc = localize(model, ins, [output_crc(o) for o in per_op], capture=(k, len(ops) - k, cap))
    assert loc.first_divergence == k
    f = loc.first
    assert f.op_type == ops[k].op_type and f.name == ops[k].output_name
    assert f.max_lsb == 3 and 0 < f.differing_pct <= 100 and f.cosine < 1.0
    assert all(o.crc_match for o in loc.ops[:k])
    assert f"op {k} {ops[k].op_type}" in loc.line()


@pytest.mark.timeout(300)
def test_sim_trace_end_to_end(gesture_model):
    model = gesture_model.tflite.read_bytes()
    ops = model_ops(model)
    ins = _inputs(gesture_model.tflite, gesture_model.npz, 1)[0]
    k = len(ops) - 2
    with start_sim(model, listen="tcp:0", baud=0, latency_ms=0) as sim, DeviceSession(sim.url) as s:
        tr = s.trace(ins)
        assert tr.crcs == [output_crc(o) for o in reference_outputs(model, ins)]
        assert len(tr.ticks) == len(ops) and all(t > 0 for t in tr.ticks) and tr.tick_hz == 10**9
        loc = localize_on_device(s, model, ins)
        assert loc.first_divergence is None and loc.invokes == 1
    with start_sim(model, listen="tcp:0", baud=0, latency_ms=0, faults=f"op={k}:lsb=1") as sim:
        with DeviceSession(sim.url) as s:
            plain = s.infer(ins).outputs
            n0 = sim.device.stats.invokes
            loc = localize_on_device(s, model, ins)
            assert sim.device.stats.invokes - n0 == loc.invokes <= 2
    host = reference_outputs(model, ins)
    assert any(not np.array_equal(a, b) for a, b in zip(plain, host[-1])) or loc.first_divergence == k
    assert loc.first_divergence == k and loc.first.captured > 0 and loc.first.max_lsb >= 1


def test_version_1_board_has_no_trace(gesture_model):
    from harness.errors import DeviceError

    model = gesture_model.tflite.read_bytes()
    ins = _inputs(gesture_model.tflite, gesture_model.npz, 1)[0]
    with start_sim(model, listen="tcp:0", baud=0, latency_ms=0, max_version=1) as sim, DeviceSession(sim.url) as s:
        with pytest.raises(DeviceError, match="no per-operator trace"):
            s.trace(ins)


def _validate(sim, m, tmp_path, *extra):
    import json

    from harness.cli import main

    rj, rh = tmp_path / "r.json", tmp_path / "r.html"
    argv = ["validate", "--port", sim.url, "--model", str(m.tflite), "--data", str(m.npz), "--samples", "12"]
    rc = main([*argv, "--report-json", str(rj), "--html", str(rh), *extra])
    return rc, json.loads(rj.read_text()), rh.read_text()


@pytest.mark.timeout(300)
def test_validate_localize_names_the_perturbed_operator(gesture_model, tmp_path, capsys):
    ops = model_ops(gesture_model.tflite.read_bytes())
    k = 2
    with start_sim(gesture_model.tflite, listen="tcp:0", baud=0, latency_ms=0, faults=f"op={k}:lsb=+2") as sim:
        rc, r, html = _validate(sim, gesture_model, tmp_path, "--localize")
    assert rc in (0, 1)
    loc = r["localization"]
    assert loc["trigger"] == "asked" and loc["error"] is None and len(loc["samples"]) == 1
    s = loc["samples"][0]
    assert s["first_divergence"] == k and s["ops"][k]["op_type"] == ops[k].op_type
    assert s["ops"][k]["max_lsb"] == 2 and s["invokes"] == 2
    assert all(o["crc_match"] for o in s["ops"][:k])
    err = capsys.readouterr().err
    assert f"first divergence: op {k} {ops[k].op_type}" in err and "max 2 LSB" in err
    assert "Localization" in html and "DIFFERS" in html and "<svg" in html


@pytest.mark.timeout(300)
def test_validate_localize_unperturbed_is_no_divergence(gesture_model, tmp_path, capsys):
    with start_sim(gesture_model.tflite, listen="tcp:0", baud=0, latency_ms=0) as sim:
        rc, r, _ = _validate(sim, gesture_model, tmp_path, "--localize", "2")
    assert rc == 0
    assert [s["first_divergence"] for s in r["localization"]["samples"]] == [None, None]
    assert all(s["invokes"] == 1 for s in r["localization"]["samples"])
    assert "no divergence" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_failed_gate_localizes_the_worst_sample_by_itself(gesture_model, tmp_path, capsys):
    k = 1
    with start_sim(gesture_model.tflite, listen="tcp:0", baud=0, latency_ms=0, faults=f"op={k}:lsb=+6") as sim:
        rc, r, _ = _validate(sim, gesture_model, tmp_path, "--max-lsb", "0")
    assert rc == 1
    loc = r["localization"]
    assert loc["trigger"] == "gate failed" and loc["samples"][0]["first_divergence"] == k
    worst = r["worst_samples"][0]["index"]
    assert loc["samples"][0]["sample"] == worst
    assert f"first divergence: op {k}" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_passing_run_without_localize_does_not_trace(gesture_model, tmp_path):
    with start_sim(gesture_model.tflite, listen="tcp:0", baud=0, latency_ms=0) as sim:
        rc, r, _ = _validate(sim, gesture_model, tmp_path)
    assert rc == 0 and r["localization"] is None


def test_quiet_stderr_from_many_threads_never_loses_fd_2(tmp_path):
    """A lab validates boards in threads, each silencing TFLM's chatter:
    overlapping callers must leave fd 2 where it was (it once stayed on
    /dev/null, and the lab's DRIFT line vanished)."""
    import os
    import threading
    import time

    from harness.runtime import _quiet_stderr

    log = tmp_path / "stderr.txt"
    keep = os.dup(2)
    try:
        with open(log, "wb") as f:
            os.dup2(f.fileno(), 2)

        def work():
            for _ in range(100):
                with _quiet_stderr():
                    time.sleep(0.0002)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        os.write(2, b"still here\n")
    finally:
        os.dup2(keep, 2)
        os.close(keep)
    assert log.read_bytes() == b"still here\n"
