"""`hil profile` on the simulated board: per-operator time from the trace,
the clock labelled as what it is."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness.cli import main
from harness.device.sim import start_sim
from harness.localize import model_ops
from harness.profile import _report, clock_of


@pytest.mark.timeout(300)
def test_profile_on_the_simulated_board(gesture_model, tmp_path, capsys):
    ops = model_ops(gesture_model.tflite.read_bytes())
    rj, rh = tmp_path / "p.json", tmp_path / "p.html"
    with start_sim(gesture_model.tflite, listen="tcp:0", baud=0, latency_ms=0) as sim:
        argv = ["profile", "--port", sim.url, "--model", str(gesture_model.tflite), "--data", str(gesture_model.npz)]
        rc = main([*argv, "--samples", "6", "--json", str(rj), "--html", str(rh)])
        invokes = sim.device.stats.invokes
    assert rc == 0 and invokes == 6
    r = json.loads(rj.read_text())
    assert r["schema"] == "tinyhil-profile-report/1" and r["samples"] == 6 and r["inputs"] == "data"
    assert r["clock"]["kind"] == "host" and r["clock"]["unit"] == "us" and "HOST time" in r["clock"]["note"]
    assert [o["op_type"] for o in r["ops"]] == [o.op_type for o in ops]
    assert all(0 < o["time"]["min"] <= o["time"]["median"] <= o["time"]["p99"] for o in r["ops"])
    assert sum(o["share"] for o in r["ops"]) == pytest.approx(1.0)
    assert sum(t["count"] for t in r["op_types"]) == len(ops)
    assert sum(t["share"] for t in r["op_types"]) == pytest.approx(1.0)
    html = rh.read_text()
    assert "<svg" in html and "HOST" in html and "FULLY_CONNECTED" in html
    out = capsys.readouterr().out
    assert "per operator" in out and "HOST time" in out


@pytest.mark.timeout(300)
def test_profile_of_a_board_without_the_trace_is_exit_2(gesture_model, capsys):
    with start_sim(gesture_model.tflite, listen="tcp:0", baud=0, latency_ms=0, max_version=1) as sim:
        rc = main(["profile", "--port", sim.url, "--model", str(gesture_model.tflite), "--samples", "2"])
    assert rc == 2 and "no per-operator trace" in capsys.readouterr().err


def test_clock_labels_and_tick_conversion():
    dev = clock_of(SimpleNamespace(tick_hz=0, cpu_hz=64_000_000, host_time=False, board="nano33ble"))
    assert dev == {"kind": "device", "tick_hz": 64_000_000, "note": "the device's own clock", "unit": "us"}
    qemu = clock_of(SimpleNamespace(tick_hz=0, cpu_hz=32_000_000, host_time=False, board="qemu_m55"))
    assert qemu["kind"] == "qemu" and "QEMU time" in qemu["note"]
    native = clock_of(SimpleNamespace(tick_hz=1_000_000, cpu_hz=0, host_time=False, board="native"))
    assert native["kind"] == "host" and "native firmware runs on this host" in native["note"]
    none = clock_of(SimpleNamespace(tick_hz=0, cpu_hz=0, host_time=False, board="x"))
    assert none["unit"] == "ticks"
    ops = [SimpleNamespace(op_type=t, output_name=t.lower()) for t in ("CONV_2D", "CONV_2D", "SOFTMAX")]
    r = _report(ops, [[6400, 3200, 6400], [6400, 6400, 0]], [300, 200], dev, {}, "p", "m", None, "x")
    assert r["ops"][0]["time"]["median"] == pytest.approx(100.0)  # 6400 ticks at 64 MHz
    conv = next(t for t in r["op_types"] if t["op_type"] == "CONV_2D")
    assert conv["count"] == 2 and conv["share"] == pytest.approx((0.6 + 1.0) / 2)


# --------------------------------------------------------------------------- the validate report's profile


def _validate(sim, m, tmp_path, *extra):
    rj, rh = tmp_path / "r.json", tmp_path / "r.html"
    argv = ["validate", "--port", sim.url, "--model", str(m.tflite), "--data", str(m.npz), "--samples", "8"]
    rc = main([*argv, "--report-json", str(rj), "--html", str(rh), *extra])
    return rc, json.loads(rj.read_text()), rh.read_text()


@pytest.mark.timeout(300)
def test_validate_profile_traces_every_sample(gesture_model, tmp_path, capsys):
    ops = model_ops(gesture_model.tflite.read_bytes())
    with start_sim(gesture_model.tflite, listen="tcp:0", baud=0, latency_ms=0) as sim:
        rc, r, html = _validate(sim, gesture_model, tmp_path, "--profile")
        invokes = sim.device.stats.invokes
    assert rc == 0 and invokes == 8 and r["settings"]["profile"] is True and r["settings"]["localize"] is None
    p = r["profile"]
    assert p["source"] == "every sample" and p["error"] is None and p["samples"] == 8
    assert p["clock"]["kind"] == "host" and p["clock"]["unit"] == "us"
    assert [o["op_type"] for o in p["ops"]] == [o.op_type for o in ops]
    assert sum(o["share"] for o in p["ops"]) == pytest.approx(1.0)
    assert p["invoke_us"]["median"] == pytest.approx(r["timing"]["invoke_us"]["median"])
    assert r["outputs"][0]["bit_exact_samples"] == 8  # the traced run's outputs are the outputs compared
    assert "Time per operator" in html and "HOST clock" in html and html.count("<svg") >= 2
    cap = capsys.readouterr()
    assert "profile (8 samples, host clock): operators median" in cap.err and "FULLY_CONNECTED" in cap.err
    assert "slowest operators (µs, host clock, 8 samples)" in cap.out


@pytest.mark.timeout(300)
def test_validate_profile_and_localize_share_the_trace(gesture_model, tmp_path):
    k = 1
    with start_sim(gesture_model.tflite, listen="tcp:0", baud=0, latency_ms=0, faults=f"op={k}:lsb=+3") as sim:
        rc, r, _ = _validate(sim, gesture_model, tmp_path, "--profile", "--localize")
        invokes = sim.device.stats.invokes
    assert rc in (0, 1) and r["settings"]["localize"] == 1
    s = r["localization"]["samples"][0]
    assert s["first_divergence"] == k and s["invokes"] == 1  # only the capture: the trace came with the sample
    assert invokes == 8 + 1


@pytest.mark.timeout(300)
def test_validate_localize_alone_profiles_its_traces(gesture_model, tmp_path):
    with start_sim(gesture_model.tflite, listen="tcp:0", baud=0, latency_ms=0) as sim:
        rc, r, html = _validate(sim, gesture_model, tmp_path, "--localize", "2")
    assert rc == 0 and r["settings"]["profile"] is False
    p = r["profile"]
    assert p["source"] == "the localization traces (2 samples)" and p["samples"] == 2
    loc_us = [o["ticks"] * 1e6 / r["localization"]["clock"]["tick_hz"] for o in r["localization"]["samples"][0]["ops"]]
    assert min(loc_us) > 0 and "µs (HOST clock)" in html


@pytest.mark.timeout(300)
def test_validate_profile_on_a_board_without_the_trace_still_validates(gesture_model, tmp_path, capsys):
    with start_sim(gesture_model.tflite, listen="tcp:0", baud=0, latency_ms=0, max_version=1) as sim:
        rc, r, html = _validate(sim, gesture_model, tmp_path, "--profile")
    assert rc == 0 and r["samples_done"] == 8
    assert r["profile"] == {"source": None, "error": "the device has no per-operator trace (INFO features lack TRACE)"}
    assert "no profile" in html
    assert "profile: the device has no per-operator trace" in capsys.readouterr().err
