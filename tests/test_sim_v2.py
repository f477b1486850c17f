"""Protocol version 2 on the host and the simulated board: negotiation and
version-1 devices, the overlapped stream under faults (exact results), the
NAK path, the no-mix guarantee, RTO and frame-size adaptation (no timing:
injected samples and event counts)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.device.sim import SimDevice, start_sim
from harness.model import inspect_model
from harness.protocol import codec as c
from harness.protocol.session import DeviceSession, FrameSizer, RtoEstimator, optimal_chunk
from harness.runtime import HostInterpreter
from harness.testing.models import random_inputs, tiny_models

pytestmark = pytest.mark.timeout(120)
BAUD = 4_000_000


@pytest.fixture(scope="module")
def models():
    return tiny_models()


def _req(dev: SimDevice, msg, seq: int) -> list:
    return [c.decode_body(b).message() for b in dev.handle_all(c.decode_body(c.message_body(msg, seq)))]


def _stream(model_path, samples, seed=0, **sim_kw):
    data = model_path.read_bytes()
    mi = inspect_model(model_path)
    host = HostInterpreter(data, "tflm")
    rng = np.random.default_rng(seed)
    xs = [random_inputs(mi.inputs, rng) for _ in range(samples)]
    kw = {k: sim_kw.pop(k) for k in ("max_version_host", "adaptive") if k in sim_kw}
    with start_sim(data, baud=BAUD, latency_ms=1.0, seed=seed, arena_size=100_000, **sim_kw) as sim:
        skw = {"max_version": kw.get("max_version_host", c.VERSION), "adaptive": kw.get("adaptive", True)}
        with DeviceSession(sim.url, baudrate=BAUD, retries=6, **skw) as s:
            info = s.handshake()
            got = list(s.infer_stream(xs))
            summary = sim.summary()
            stats = s.stats
    for x, r in zip(xs, got):
        for a, b in zip(r.outputs, host.run(x)):
            assert a.dtype == b.dtype and np.array_equal(a, b), "wrong output delivered"
    assert len(got) == samples
    return info, stats, summary


# ----------------------------------------------------------------- codec


def test_v2_messages_round_trip_and_v1_forms_stay():
    for m in (
        c.Invoke(7, 0xDEADBEEF, 1),
        c.Invoke(7),
        c.Read(1, 8, 16, 9),
        c.Read(1, 8, 16),
        c.Write(0, 4, b"ab", 1),
        c.Nak(65535, 3, c.NAK_GAP),
    ):
        assert c.decode_message(c.encode_message(m, 5))[0] == m
    assert len(c.Invoke(7).payload()) == 4 and len(c.Invoke(7, 1).payload()) == 12
    assert len(c.Read(0, 0, 1).payload()) == 12 and len(c.Read(0, 0, 1, 2).payload()) == 16


def test_info_v2_tail_only_in_version_2():
    base = SimDevice(tiny_models()["float_io"].read_bytes(), arena_size=1000, line_baud=115200).info()
    v1 = c.Info.parse(base.payload())  # version 1: no tail, fields default
    assert v1.version == 1 and v1.line_baud == 0
    from dataclasses import replace

    v2 = replace(base, version=2)
    back = c.Info.parse(v2.payload())
    assert back == v2 and back.line_baud == 115200 and back.input_slots == 2 and back.staged_outputs
    # the version-2 tail, and FEATURE_TRACE's n_ops, capture_bytes, tick_hz (the sim traces)
    assert len(v2.payload()) == len(base.payload()) + 16 + (12 if v2.traces else 0)
    with pytest.raises(c.CodecError):
        c.Info.parse(v2.payload()[:-1])


def test_sequence_arithmetic_wraps_without_zero():
    assert c.next_seq(65535) == 1 and c.seq_distance(65535, 1) == 1 and c.seq_distance(3, 1) == -2


def test_input_crc_is_crc32_of_the_inputs_in_order():
    import zlib

    assert c.input_crc([b"ab", b"cd"]) == zlib.crc32(b"abcd")


# ----------------------------------------------------------------- device


def test_no_mix_a_lost_write_never_yields_an_output(models):
    """The device refuses an INVOKE whose input CRC does not match: a lost
    WRITE leaves the previous sample's bytes, and nothing runs on them."""
    data = models["float_io"].read_bytes()
    mi = inspect_model(models["float_io"])
    dev = SimDevice(data, arena_size=100_000)
    n = mi.inputs[0].nbytes
    old, new = (
        bytes([1] * n),
        bytes(range(n % 256)) * (n // max(1, n % 256)) + bytes(n - (n // max(1, n % 256)) * (n % 256)),
    )
    assert len(new) == n
    _req(dev, c.Hello(1, 2), 1)
    assert _req(dev, c.Write(0, 0, old, 0), 2) == [c.Ack()]
    assert isinstance(_req(dev, c.Invoke(1, c.input_crc([old]), 0), 3)[0], c.Result)
    half = n // 2
    assert _req(dev, c.Write(0, 0, new[:half], 0), 4) == [c.Ack()]
    assert _req(dev, c.Write(0, half, old[half:], 0), 6)[-1] == c.Ack()  # seq 5 (new's 2nd half) lost
    refused = _req(dev, c.Invoke(2, c.input_crc([new]), 0), 7)[-1]
    assert refused.name == "INCOMPLETE_INPUT" or refused.name == "INPUT_MISMATCH"
    _req(dev, c.Write(0, 0, new[:half], 0), 8)
    assert _req(dev, c.Invoke(2, c.input_crc([new]), 0), 9)[-1].name == "INPUT_MISMATCH"  # a mix
    assert dev.stats.invokes == 1
    assert _req(dev, c.Read(0, 0, 4, 2), 10)[-1].name == "STALE"  # nothing of sample 2 exists
    _req(dev, c.Write(0, half, new[half:], 0), 11)
    assert isinstance(_req(dev, c.Invoke(2, c.input_crc([new]), 0), 12)[-1], c.Result)


def test_device_naks_a_gap_and_a_bad_frame(models):
    dev = SimDevice(models["float_io"].read_bytes(), arena_size=100_000)
    _req(dev, c.Hello(1, 2), 1)
    out = _req(dev, c.Ping(b"x"), 4)
    assert out == [c.Nak(2, 2, c.NAK_GAP), c.Pong(b"x")]
    nak = c.decode_body(dev.nak_bad_frame()).message()
    assert nak == c.Nak(5, 1, c.NAK_BAD_FRAME)
    assert _req(dev, c.Ping(b"y"), 6) == [c.Pong(b"y")]


def test_v1_board_speaks_version_1(models):
    dev = SimDevice(models["float_io"].read_bytes(), arena_size=100_000, max_version=1)
    info = _req(dev, c.Hello(1, 2), 1)[0]
    assert info.version == 1 and info.line_baud == 0
    assert _req(dev, c.Invoke(1, 5, 0), 2)[0].name == "BAD_LENGTH"
    assert _req(dev, c.Ping(b""), 9) == [c.Pong(b"")]  # no NAK in version 1


def test_invoke_ms_is_the_reported_compute_time(models):
    slept = []
    dev = SimDevice(models["float_io"].read_bytes(), arena_size=100_000, invoke_ms=30, sleep=slept.append)
    n = dev.info().inputs[0].nbytes
    _req(dev, c.Hello(1, 2), 1)
    _req(dev, c.Write(0, 0, bytes(n), 0), 2)
    _req(dev, c.Invoke(1, c.input_crc([bytes(n)]), 0), 3)
    assert len(slept) == 1 and 0 < slept[0] <= 0.030


# ----------------------------------------------------------------- session + sim


@pytest.mark.parametrize("name", ["float_io", "two_outputs"])
def test_stream_is_exact_and_clean(models, name):
    info, stats, summary = _stream(models[name], 12)
    assert info.version == 2 and info.input_slots == 2 and info.line_baud == BAUD
    assert summary["input_mismatches"] == 0 and summary["naks"] == 0


def test_stream_under_faults_is_exact_and_uses_naks(models):
    _, stats, summary = _stream(models["float_io"], 25, seed=3, faults="ber=3e-4,drop=1e-4,garbage=0.01")
    assert summary["naks"] > 0 and stats.naks > 0 and stats.nak_resends > 0


def test_stream_survives_a_reset(models):
    _, stats, summary = _stream(models["int8_io"], 20, seed=2, faults="reset_after=30")
    assert summary["resets"] == 1 and stats.device_resets == 1


def test_v2_host_with_a_v1_board_and_the_forced_v1_flow(models):
    info, stats, _ = _stream(models["float_io"], 6, max_version=1)
    assert info.version == 1
    info, stats, _ = _stream(models["float_io"], 6, max_version_host=1, adaptive=False)
    assert info.version == 1 and stats.naks == 0


def test_validate_against_a_v1_only_board(models, tmp_path):
    """The whole validate path with a version-1 device."""
    from harness.validate import validate

    mp = models["int8_io"]
    mi = inspect_model(mp)
    rng = np.random.default_rng(0)
    xs = np.stack([random_inputs(mi.inputs, rng)[0][0] for _ in range(5)])
    data = tmp_path / "d.npz"
    np.savez(data, x=xs)
    with start_sim(mp, baud=BAUD, arena_size=100_000, max_version=1) as sim:
        rep = validate(sim.url, mp, data, baud=BAUD)
    assert rep.samples_done == 5 and rep.error is None, rep.error


# ----------------------------------------------------------------- adaptation


def test_rto_follows_rfc6298_with_bounds_and_backoff():
    r = RtoEstimator(2.0, min_rto=0.04, max_rto=2.0)
    assert r.rto == 2.0  # nothing measured yet
    r.sample(0.010)
    assert r.srtt == 0.010 and r.rttvar == 0.005 and r.rto == pytest.approx(0.040)  # 0.010 + 4*0.005 = 0.030 -> floor
    for _ in range(50):
        r.sample(0.100)
    assert r.rto == pytest.approx(r.srtt + max(0.001, 4 * r.rttvar)) and 0.1 <= r.rto < 0.2
    before = r.rto
    r.backoff()
    assert r.rto == pytest.approx(2 * before)
    for _ in range(10):
        r.backoff()
    assert r.rto == 2.0


def test_optimal_chunk_matches_the_issue_figures():
    assert optimal_chunk(1e-5, 14, 1, 65535) == pytest.approx(411, abs=2)
    assert optimal_chunk(1e-4, 14, 1, 65535) == pytest.approx(125, abs=2)
    assert optimal_chunk(0.0, 14, 1, 4080) == 4080


def test_frame_sizer_shrinks_under_loss_and_grows_back():
    z = FrameSizer(4080)
    assert z.chunk == 4080
    rng = np.random.default_rng(0)
    for _ in range(3000):  # frames of ~250 B at BER 1e-4: 18 % lost
        z.record(250, failed=bool(rng.random() < 1 - (1 - 1e-4) ** (8 * 250)))
    assert z.ber == pytest.approx(1e-4, rel=0.3)
    assert 80 <= z.chunk <= 250  # optimal_chunk(1e-4, 31) = 117; the prior pulls the estimate down a little
    for _ in range(3000):
        z.record(2000, failed=False)
    assert z.chunk == 4080
