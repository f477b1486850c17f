"""Unit tests of harness.validate: comparison math against independent
NumPy, LSB counting, data loading (int8 I/O), gates and exit codes, partial
reports — with a fake session (the real link is in test_validate_e2e.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.fakes import FakeSession

from harness.errors import ConfigError, DataError, DeviceError
from harness.model import TensorInfo, dequantize_sources, inspect_model
from harness.runtime import quantize
from harness.testing.models import tiny_models
from harness.validate import (
    Gates,
    LsbScale,
    compare_output,
    estimate_step,
    evaluate_gates,
    load_data,
    lsb_diff,
    validate,
)

F32 = TensorInfo("out", "float32", (1, 6))
I8 = TensorInfo("out", "int8", (1, 6), scale=0.05, zero_point=-3, scales=(0.05,))


# --------------------------------------------------------------------------- comparison math


def test_float_metrics_match_independent_numpy():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(40, 1, 6)).astype(np.float32)
    dev = (ref + rng.normal(scale=0.05, size=ref.shape)).astype(np.float32)
    o = compare_output(ref, dev, F32, None, classifier=True)
    r, d = ref.reshape(40, -1).astype(np.float64), dev.reshape(40, -1).astype(np.float64)
    cos = [float(a @ b / np.sqrt(a @ a) / np.sqrt(b @ b)) for a, b in zip(r, d)]
    f = o["float"]
    assert f["cosine_min"] == pytest.approx(min(cos), abs=1e-12)
    assert f["cosine_mean"] == pytest.approx(sum(cos) / len(cos), abs=1e-12)
    assert f["mse"] == pytest.approx(float(((d - r) ** 2).mean()), rel=1e-12)
    assert f["mae"] == pytest.approx(float(np.abs(d - r).mean()), rel=1e-12)
    assert f["max_abs_error"] == pytest.approx(float(np.abs(d - r).max()), rel=1e-12)
    rm, dm = r.ravel() - r.mean(), d.ravel() - d.mean()
    assert f["pearson_r"] == pytest.approx(float(rm @ dm / np.sqrt(rm @ rm) / np.sqrt(dm @ dm)), abs=1e-12)
    flips = [i for i in range(40) if np.argmax(r[i]) != np.argmax(d[i])]
    assert [x["sample"] for x in o["classifier"]["flips"]] == flips
    assert o["classifier"]["top1_agreement"] == pytest.approx(1 - len(flips) / 40)
    assert o["lsb"] is None and o["bit_exact_samples"] == 0


def test_lsb_counts_int8_outputs():
    ref = np.zeros((3, 1, 6), np.int8)
    dev = ref.copy()
    dev[0, 0, 0] = 1  # +1
    dev[1, 0, 2] = -1  # -1
    dev[1, 0, 3] = 3  # +3
    q = LsbScale(I8.scale, I8.zero_point, "output tensor")
    o = compare_output(ref, dev, I8, q, classifier=False)
    lsb = o["lsb"]
    assert (lsb["elements"], lsb["exact"], lsb["off_by_one"], lsb["over_one"], lsb["max_lsb"]) == (18, 15, 2, 1, 3)
    assert lsb["histogram"] == {"-1": 1, "0": 15, "1": 1, "3": 1}
    assert list(o["_max_lsb"]) == [1, 3, 0]
    assert list(o["_exact"]) == [False, False, True]
    assert o["bit_exact_samples"] == 1
    # float domain is computed on dequantized values: (q - zp) * scale
    assert o["float"]["max_abs_error"] == pytest.approx(3 * 0.05)


def test_lsb_of_float_outputs_through_the_dequantize_scale():
    scale, zp = 1 / 256, -128
    rng = np.random.default_rng(2)
    q_ref = rng.integers(-128, 128, size=(50, 1, 6))
    q_dev = np.clip(q_ref + rng.choice([-2, -1, 0, 0, 0, 1], size=q_ref.shape), -128, 127)
    ref = ((q_ref - zp) * scale).astype(np.float32)
    dev = ((q_dev - zp) * scale).astype(np.float32)
    d = lsb_diff(ref, dev, F32, LsbScale(scale, zp, "dequantize input"))
    assert np.array_equal(d, (q_dev - q_ref).astype(np.int64))


def test_int8_int8_clipping_does_not_wrap():
    ref = np.full((1, 1, 6), -128, np.int8)
    dev = np.full((1, 1, 6), 127, np.int8)
    assert lsb_diff(ref, dev, I8, LsbScale(0.05, 0, "x")).max() == 255


def test_estimate_step():
    assert estimate_step(np.array([0.25, 0.5, 1.5, 0.75])) == pytest.approx(0.25)
    assert estimate_step(np.array([0.1, 0.13, 0.5])) is None  # not on one grid
    assert estimate_step(np.array([1.0, 1.0])) is None


def test_dequantize_sources_finds_the_tensor_behind_float_outputs():
    m = tiny_models()
    src = dequantize_sources(m["float_io"].read_bytes())
    assert src[0] is not None and src[0].dtype == "int8" and src[0].scale > 0
    assert dequantize_sources(m["int8_io"].read_bytes()) == (None,)  # int8 output: no DEQUANTIZE at the end


# --------------------------------------------------------------------------- gates


def _out(cos_min, max_lsb, top1=None, samples=10):
    return {
        "samples": samples,
        "float": {"cosine_min": cos_min},
        "lsb": None if max_lsb is None else {"max_lsb": max_lsb},
        "classifier": None if top1 is None else {"top1_agreement": top1},
    }


@pytest.mark.parametrize(
    "cos,lsb,want", [(0.999, 1, ["pass", "pass"]), (0.98, 0, ["fail", "pass"]), (1.0, 2, ["pass", "fail"])]
)
def test_gate_statuses(cos, lsb, want):
    g = evaluate_gates([_out(cos, lsb)], Gates(), samples_done=10, samples_planned=10, error=None)
    assert [x.status for x in g] == want
    assert [x.name for x in g] == ["cosine_min", "max_lsb"]


def test_gate_boundaries_are_inclusive():
    g = evaluate_gates([_out(0.99, 1, 0.9)], Gates(0.99, 1, 0.9), samples_done=5, samples_planned=5, error=None)
    assert [x.status for x in g] == ["pass", "pass", "pass"]


def test_gate_without_lsb_is_skipped_and_multi_output_names():
    g = evaluate_gates([_out(1.0, None), _out(1.0, 0)], Gates(), samples_done=3, samples_planned=3, error=None)
    assert [(x.name, x.status) for x in g] == [
        ("output0.cosine_min", "pass"),
        ("output0.max_lsb", "skipped"),
        ("output1.cosine_min", "pass"),
        ("output1.max_lsb", "pass"),
    ]


def test_partial_run_fail_is_fail_and_pass_is_error():
    g = evaluate_gates([_out(0.5, 0)], Gates(), samples_done=3, samples_planned=10, error="interrupted")
    assert [x.status for x in g] == ["fail", "error"]
    g = evaluate_gates([], Gates(), samples_done=0, samples_planned=10, error="port busy")
    assert [x.status for x in g] == ["error", "error"] and "port busy" in g[0].message


def test_bad_gate_settings():
    for gates in (Gates(min_cosine=2.0), Gates(max_lsb=-2), Gates(min_top1=1.5)):
        with pytest.raises(ConfigError):
            gates.check()


# --------------------------------------------------------------------------- data


def test_load_npy_inputs_for_int8_model(tmp_path):
    m = tiny_models()["int8_io"]
    info = inspect_model(m)
    x = np.random.default_rng(0).normal(size=(7, 300)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    d = load_data(tmp_path / "x.npy", info)
    assert d.samples == 7 and d.refs == {} and d.inputs[0].dtype == np.float32
    from harness.validate import device_inputs

    s = device_inputs(d, info, 3)[0]
    assert s.dtype == np.int8 and s.shape == (1, 300)
    assert np.array_equal(s, quantize(x[3].reshape(1, 300), info.inputs[0]))
    # int8 data goes through unchanged
    xi = np.random.default_rng(1).integers(-128, 128, size=(4, 1, 300)).astype(np.int8)
    np.savez(tmp_path / "xi.npz", x=xi)
    d = load_data(tmp_path / "xi.npz", info, samples=2)
    assert d.samples == 2 and d.available == 4
    assert np.array_equal(device_inputs(d, info, 1)[0], xi[1])


def test_load_data_errors(tmp_path):
    info = inspect_model(tiny_models()["int8_io"])
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "nope.npz", info)
    np.save(tmp_path / "bad.npy", np.zeros((3, 17), np.float32))
    with pytest.raises(DataError, match="shape"):
        load_data(tmp_path / "bad.npy", info)
    np.save(tmp_path / "big.npy", np.full((2, 300), 1000, np.int32))
    with pytest.raises(DataError, match="range"):
        load_data(tmp_path / "big.npy", info)
    np.savez(tmp_path / "none.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(DataError, match="no input array"):
        load_data(tmp_path / "none.npz", info)
    finfo = inspect_model(tiny_models()["float_io"])
    np.save(tmp_path / "i.npy", np.zeros((2, 300), np.int8))
    with pytest.raises(DataError, match="float"):
        load_data(tmp_path / "i.npy", finfo)
    np.save(tmp_path / "nan.npy", np.full((2, 300), np.nan, np.float32))
    with pytest.raises(DataError, match="NaN"):
        load_data(tmp_path / "nan.npy", finfo)
    with pytest.raises(ConfigError):
        load_data(tmp_path / "i.npy", finfo, samples=0)


def test_references_of_another_model_are_ignored(tmp_path):
    info = inspect_model(tiny_models()["float_io"])
    x = np.zeros((3, 300), np.float32)
    meta = {"model_sha256": "ab" * 32}
    np.savez(tmp_path / "d.npz", x=x, y_tflm=np.zeros((3, 5), np.float32), meta=np.array(json.dumps(meta)))
    d = load_data(tmp_path / "d.npz", info)
    assert d.refs == {} and any("ignored" in n for n in d.notes)
    meta = {"model_sha256": info.sha256}
    np.savez(tmp_path / "e.npz", x=x, y_tflm=np.zeros((3, 5), np.float32), meta=np.array(json.dumps(meta)))
    assert set(load_data(tmp_path / "e.npz", info).ref_source) == {"tflm"}
    np.savez(tmp_path / "f.npz", x=x, y_tflm=np.zeros((3, 4), np.float32), meta=np.array(json.dumps(meta)))
    with pytest.raises(DataError, match="reference"):
        load_data(tmp_path / "f.npz", info)


# --------------------------------------------------------------------------- the run, with a fake session


@pytest.fixture(scope="module")
def int8_case(tmp_path_factory):
    m = tiny_models()["int8_io"]
    d = tmp_path_factory.mktemp("v") / "x.npy"
    np.save(d, np.random.default_rng(5).normal(size=(12, 300)).astype(np.float32))
    return m, d


def test_validate_passes_and_computes_missing_references(int8_case):
    m, d = int8_case
    fake = FakeSession(m)
    rep = validate("fake://", m, d, session_factory=fake)
    r = rep.to_dict()
    assert (rep.status, rep.exit_code, r["partial"]) == ("pass", 0, False)
    assert r["data"]["references"] == {"tflm": "host", "litert_ref": "host", "litert": "host"}
    assert r["data"]["quantized_on_host"] == [True]
    assert all(x[0].dtype == np.int8 for x in fake.received) and len(fake.received) == 12
    assert r["outputs"][0]["lsb"]["source"] == "output tensor" and r["outputs"][0]["lsb"]["max_lsb"] == 0
    assert "tflm" in r["triangulation"]["matches"]
    assert r["timing"]["clock"] == "host" and r["timing"]["invoke_us"]["min"] == 100
    assert r["timing"]["invoke_us"]["median"] == pytest.approx(float(np.median(np.arange(100, 112))))
    assert fake.closed and r["device_logs"][0]["text"] == "fake board up"


def test_validate_reports_drift_with_exit_1(int8_case):
    m, d = int8_case

    def bump(i, outs):  # two samples off by 2 LSB
        if i in (3, 7):
            o = outs[0].astype(np.int16)
            o[..., 0] += 2
            return [np.clip(o, -128, 127).astype(np.int8)]
        return outs

    rep = validate("fake://", m, d, session_factory=FakeSession(m, perturb=bump))
    r = rep.to_dict()
    assert (rep.status, rep.exit_code) == ("fail", 1)
    g = {x["name"]: x for x in r["gates"]}
    assert g["max_lsb"]["status"] == "fail" and g["max_lsb"]["value"] == 2
    assert {w["index"] for w in r["worst_samples"]} == {3, 7}
    assert r["outputs"][0]["lsb"]["over_one"] == 2
    assert r["triangulation"]["matches"] == []
    assert "device's own" in r["triangulation"]["verdict"]
    # a looser gate passes the same outputs
    rep = validate("fake://", m, d, gates=Gates(max_lsb=2), session_factory=FakeSession(m, perturb=bump))
    assert rep.exit_code == 0


def test_validate_refuses_another_model(int8_case):
    m, d = int8_case
    rep = validate("fake://", m, d, session_factory=FakeSession(m, other_model=True))
    r = rep.to_dict()
    assert (rep.status, rep.exit_code, r["samples_done"]) == ("error", 2, 0)
    assert isinstance(rep.error, DeviceError) and "sha256" in rep.error.message
    assert all(g["status"] == "error" for g in r["gates"])


def test_ctrl_c_writes_a_partial_report(int8_case):
    m, d = int8_case
    rep = validate("fake://", m, d, session_factory=FakeSession(m, fail_at=5, fail_with=KeyboardInterrupt()))
    r = rep.to_dict()
    assert rep.interrupted and r["partial"] and r["interrupted"]
    assert (r["samples_done"], r["samples_planned"], len(r["samples"])) == (5, 12, 5)
    assert rep.exit_code == 2 and r["status"] == "error"
    assert "interrupted after 5 of 12" in r["error"]["message"]
    assert all(g["status"] == "error" and "5 of 12" in g["message"] for g in r["gates"])


def test_device_lost_mid_run_keeps_samples_and_proven_drift(int8_case):
    m, d = int8_case

    def bad(i, outs):
        return [np.full_like(outs[0], 127)] if i == 1 else outs

    err = DeviceError("device at fake:// stopped answering", "check the cable")
    rep = validate("fake://", m, d, session_factory=FakeSession(m, perturb=bad, fail_at=4, fail_with=err))
    r = rep.to_dict()
    assert r["partial"] and r["samples_done"] == 4 and r["error"]["message"].startswith("device at fake://")
    assert rep.exit_code == 1  # drift proven on the samples done is a FAIL, not an ERROR


def test_missing_model_is_an_error_report(tmp_path, int8_case):
    _, d = int8_case
    rep = validate("fake://", tmp_path / "none.tflite", d, session_factory=lambda *a, **k: None)
    assert rep.exit_code == 2 and "does not exist" in rep.error.message
    with pytest.raises(ConfigError):
        validate("", tmp_path / "none.tflite", d)
    with pytest.raises(ConfigError):
        validate("x", tmp_path / "none.tflite", d, reference="keras")
