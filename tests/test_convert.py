"""`hil convert` on the two bundled examples: model structure, npz content,
metrics against an independent NumPy computation, the quality gate, bad
input and atomic outputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from harness import convert as hc
from harness import data as hdata
from harness.cli import main
from harness.model import inspect_model
from harness.runtime import HostInterpreter, dequantize

EXAMPLES = ("gesture", "audio")


def _ex(request, name):
    return request.getfixturevalue(f"{name}_example")


def _model(request, name):
    return request.getfixturevalue(f"{name}_model")


@pytest.fixture(scope="module")
def variants(request, tmp_path_factory):
    """Each example in per-tensor ptq and in dynamic mode (converted once)."""
    out = {}
    for name in EXAMPLES:
        ex = _ex(request, name)
        d = tmp_path_factory.mktemp(f"variants_{name}")
        for key, kw in (("per_tensor", {"per_tensor": True}), ("dynamic", {"quantization": "dynamic"})):
            out[(name, key)] = hc.convert(
                ex.keras,
                output_path=d / f"{name}_{key}.tflite",
                data_path_train=ex.data,
                num_samples=64,
                validate_samples=32,
                seed=0,
                **kw,
            )
    return out


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("name", EXAMPLES)
def test_ptq_model_has_float_io_and_int8_inside(request, name):
    m = _model(request, name)
    info = inspect_model(m.tflite)
    assert [t.dtype for t in info.inputs] == ["float32"] and [t.dtype for t in info.outputs] == ["float32"]
    # float32 only at the two ends (input and output, and nothing else)
    assert info.tensor_types.count("float32") == 2
    assert info.tensor_types.count("int8") >= 5
    assert info.per_channel_tensors > 0  # per-channel is the default
    assert m.result.passed and m.result.metrics["cosine_mean"] > 0.99


@pytest.mark.parametrize("name", EXAMPLES)
def test_per_tensor_has_one_scale_everywhere(request, variants, name):
    pc = inspect_model(_model(request, name).tflite)
    pt = inspect_model(variants[(name, "per_tensor")].tflite)
    assert pt.per_channel_tensors == 0 and pc.per_channel_tensors > 0
    # the same tensors are quantized; the per-channel ones now have a single scale
    assert pt.per_tensor_quantized == pc.per_tensor_quantized + pc.per_channel_tensors
    assert [t.dtype for t in pt.inputs + pt.outputs] == ["float32", "float32"]
    assert variants[(name, "per_tensor")].report["settings"]["per_channel"] is False


def test_per_channel_conv_weights_have_one_scale_per_output_channel(audio_model):
    from ai_edge_litert import schema_py_generated as s

    m = s.Model.GetRootAs(audio_model.tflite.read_bytes(), 0)
    g = m.Subgraphs(0)
    codes = [
        max(m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode())
        for i in range(m.OperatorCodesLength())
    ]
    checked = 0
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        if codes[op.OpcodeIndex()] == s.BuiltinOperator.CONV_2D:
            w = g.Tensors(op.Inputs(1))
            out_channels = int(w.ShapeAsNumpy()[0])
            assert w.Quantization().ScaleLength() == out_channels and out_channels % 8 == 0
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("name", EXAMPLES)
def test_dynamic_mode_int8_weights_float_activations(request, variants, name):
    res = variants[(name, "dynamic")]
    info = inspect_model(res.tflite)
    assert [t.dtype for t in info.inputs + info.outputs] == ["float32", "float32"]
    assert "int8" in info.tensor_types  # weights
    assert info.tensor_types.count("float32") > info.tensor_types.count("int8")  # activations stay float
    assert res.tflite_size < res.float_tflite_size
    arrays, meta = hc.load_validation_npz(res.npz)
    assert "y_tflm" not in arrays and meta["kernels"]["y_tflm"] is None  # TFLM has no hybrid kernels
    assert res.metrics["candidate"] == "litert" and res.passed


def test_dynamic_without_data_converts_without_validation(gesture_example, tmp_path):
    keras = tmp_path / "m.keras"
    shutil.copy(gesture_example.keras, keras)
    res = hc.convert(keras, quantization="dynamic")
    assert res.tflite == tmp_path / "m_quantized.tflite" and res.tflite.is_file()
    assert res.npz is None and res.metrics is None and res.passed
    assert not (tmp_path / "m_quantized_validation_data.npz").exists()
    assert any("not validated" in n for n in res.notes)


# --------------------------------------------------------------------------- npz


@pytest.mark.parametrize("name", EXAMPLES)
def test_npz_holds_what_is_promised(request, name):
    import tensorflow as tf

    m = _model(request, name)
    ex = _ex(request, name)
    with np.load(m.npz, allow_pickle=False) as z:
        assert {"x", "y_tflm", "y_litert", "y_keras", "y", "x_raw", "meta"} <= set(z.files)
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    cfg = json.loads(ex.config.read_text())
    info = inspect_model(m.tflite)
    n = meta["samples"]
    assert n == 32 == len(arrays["x"]) == len(arrays["y"]) == len(arrays["y_keras"])
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (n, *cfg["input_shape"])
    assert arrays["y_tflm"].shape == arrays["y_keras"].shape == (n, len(cfg["class_names"]))
    assert meta["model_sha256"] == info.sha256 and meta["model_file"] == m.tflite.name
    assert meta["inputs"][0]["dtype"] == "float32" and meta["inputs"][0]["shape"] == list(info.inputs[0].shape)
    assert meta["class_names"] == cfg["class_names"] and meta["x_is_normalized"]
    # x is the normalized x_raw
    mean = np.asarray(cfg["normalization"]["mean"], np.float32)
    std = np.asarray(cfg["normalization"]["std"], np.float32)
    assert np.allclose(
        arrays["x"],
        (arrays["x_raw"] - mean.reshape(-1) if mean.size > 1 else arrays["x_raw"] - mean)
        / (std if std.size > 1 else std),
        atol=1e-5,
    )
    # the host outputs are reproducible from x alone
    ip = HostInterpreter(m.tflite.read_bytes(), "tflm")
    for i in (0, n - 1):
        assert np.array_equal(ip.run([arrays["x"][i][None]])[0][0], arrays["y_tflm"][i])
    keras = tf.keras.models.load_model(m.keras, compile=False)
    assert np.allclose(keras(arrays["x"][:4], training=False), arrays["y_keras"][:4], atol=1e-5)
    # labels match the stored data; validation samples were not calibration samples
    ds = hdata.load_dataset(ex.data, cfg["input_shape"], cfg["class_names"])
    ids = {ds.sample_id(i): i for i in range(len(ds))}
    rows = [ids[s] for s in meta["sample_ids"]]
    assert np.array_equal(ds.y[rows], arrays["y"]) and np.allclose(ds.x[rows], arrays["x_raw"])
    sp = hdata.split(ds, 64, 32, seed=0, signal_channels=cfg.get("signal_channels", 1))
    assert not set(rows) & set(sp.calibration.tolist())
    assert np.array_equal(np.sort(rows), sp.validation[0])


@pytest.mark.parametrize("name", EXAMPLES)
def test_report_metrics_match_numpy(request, name):
    m = _model(request, name)
    arrays, meta = hc.load_validation_npz(m.npz)
    rep = json.loads(m.report.read_text())
    ref = arrays["y_keras"].astype(np.float64).reshape(len(arrays["x"]), -1)
    cand = arrays["y_tflm"].astype(np.float64).reshape(ref.shape)
    cos = np.array([a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(ref, cand)])
    met = rep["metrics"]
    assert met["cosine_mean"] == pytest.approx(cos.mean(), abs=1e-9)
    assert met["cosine_min"] == pytest.approx(cos.min(), abs=1e-9)
    assert met["mse"] == pytest.approx(((ref - cand) ** 2).mean(), rel=1e-9)
    assert met["mae"] == pytest.approx(np.abs(ref - cand).mean(), rel=1e-9)
    assert met["max_abs_error"] == pytest.approx(np.abs(ref - cand).max(), rel=1e-9)
    assert met["pearson_r"] == pytest.approx(np.corrcoef(ref.ravel(), cand.ravel())[0, 1], abs=1e-9)
    assert met["top1_agreement"] == pytest.approx(np.mean(ref.argmax(1) == cand.argmax(1)))
    assert met["worst_samples"][0] == int(np.argmin(cos))
    # host kernels: TFLM vs LiteRT recorded
    d = np.abs(arrays["y_tflm"] - arrays["y_litert"]).max()
    assert rep["host_kernels"]["tflm_vs_litert_max_abs_diff"] == pytest.approx(d)


@pytest.mark.parametrize("name", EXAMPLES)
def test_report_schema(request, name):
    m = _model(request, name)
    rep = json.loads(m.report.read_text())
    assert rep["schema"] == hc.REPORT_SCHEMA and rep["passed"] is True
    assert set(rep) >= {
        "settings",
        "outputs",
        "model",
        "sizes",
        "data",
        "float_baseline",
        "metrics",
        "gate",
        "rounds",
        "timing_s",
        "notes",
    }
    s = rep["sizes"]
    assert s["tflite_bytes"] == m.tflite.stat().st_size
    assert s["compression_ratio"] == pytest.approx(s["float_tflite_bytes"] / s["tflite_bytes"], rel=1e-3)
    assert s["compression_ratio"] > 1.1
    assert rep["float_baseline"]["max_abs_diff"] < 1e-4  # conversion itself is exact enough
    assert rep["data"]["skipped_silent"] > 0  # both examples hold some flat recordings
    assert rep["data"]["calibration_samples"] == 64 and rep["data"]["validation_samples"] == 32
    assert {"calibration", "conversion", "validation", "total"} <= set(rep["timing_s"])
    assert rep["settings"]["num_samples"] == 64 and rep["settings"]["quantization"] == "ptq"


# --------------------------------------------------------------------------- options


def test_int8_io_records_quantization(gesture_example, tmp_path):
    res = hc.convert(
        gesture_example.keras,
        output_path=tmp_path / "g8.tflite",
        data_path_train=gesture_example.data,
        num_samples=64,
        validate_samples=16,
        io="int8",
    )
    info = inspect_model(res.tflite)
    assert info.inputs[0].dtype == "int8" and info.outputs[0].dtype == "int8"
    arrays, meta = hc.load_validation_npz(res.npz)
    assert info.inputs[0].scale > 0 and meta["inputs"][0]["scale"] == pytest.approx(info.inputs[0].scale)
    assert meta["inputs"][0]["zero_point"] == info.inputs[0].zero_point
    assert arrays["x"].dtype == np.float32 and arrays["x_q"].dtype == np.int8
    assert arrays["y_tflm"].dtype == np.int8
    deq = dequantize(arrays["y_tflm"], info.outputs[0])
    assert np.abs(deq - arrays["y_keras"]).max() < 0.05
    assert res.passed


def test_batch_validate_reports_the_worst_round(gesture_example, tmp_path):
    res = hc.convert(
        gesture_example.keras,
        output_path=tmp_path / "b.tflite",
        data_path_train=gesture_example.data,
        num_samples=64,
        validate_samples=16,
        batch_validate=3,
        seed=7,
    )
    rounds = res.report["rounds"]
    assert [r["seed"] for r in rounds] == [7, 8, 9]
    assert res.metrics["cosine_mean"] == min(r["cosine_mean"] for r in rounds)
    assert res.report["gate"]["round"] == min(rounds, key=lambda r: r["cosine_mean"])["round"]


def test_cli_defaults_infer_config_data_and_outputs(gesture_example, tmp_path, capsys):
    d = tmp_path / "copy"
    shutil.copytree(gesture_example.out_dir, d)
    rc = main(
        [
            "convert",
            "--checkpoint-path",
            str(d / "gesture.keras"),
            "--num-samples",
            "32",
            "--validate_samples",
            "16",
            "--report-json",
            str(d / "r.json"),
            "-q",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out.split()
    assert str(d / "gesture_quantized.tflite") in out
    assert str(d / "gesture_quantized_validation_data.npz") in out
    rep = json.loads((d / "r.json").read_text())
    assert rep["settings"]["model_config"] == str(d / "gesture_model_config.json")
    assert rep["data"]["layout"] == "xy_npy" and rep["data"]["normalization"]["applied"]


def test_seed_changes_the_draw(gesture_example, tmp_path):
    runs = [
        hc.convert(
            gesture_example.keras,
            output_path=tmp_path / f"s{s}.tflite",
            data_path_train=gesture_example.data,
            num_samples=32,
            validate_samples=8,
            seed=s,
        )
        for s in (1, 1, 2)
    ]
    x = [hc.load_validation_npz(r.npz)[0]["x"] for r in runs]
    assert np.array_equal(x[0], x[1]) and not np.array_equal(x[0], x[2])
    assert runs[0].tflite.read_bytes() == runs[1].tflite.read_bytes()


# --------------------------------------------------------------------------- quality gate


def test_quality_gate_fails_with_exit_1_and_still_writes(gesture_example, tmp_path, capsys):
    out = tmp_path / "g.tflite"
    rep = tmp_path / "g.json"
    rc = main(
        [
            "convert",
            "--checkpoint_path",
            str(gesture_example.keras),
            "--data_path_train",
            str(gesture_example.data),
            "--num_samples",
            "32",
            "--validate_samples",
            "16",
            "--min_cosine_sim",
            "1.01",
            "--output_path",
            str(out),
            "--report_json",
            str(rep),
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "FAIL" in err and "worst samples" in err and "X.npy[" in err
    assert out.is_file() and (tmp_path / "g_validation_data.npz").is_file()
    report = json.loads(rep.read_text())
    assert report["passed"] is False and report["gate"]["passed"] is False
    assert len(report["gate"]["worst_samples"]) == 5


# --------------------------------------------------------------------------- bad input


@pytest.fixture()
def work(gesture_example, tmp_path):
    """A private copy of the gesture example to break in various ways."""
    d = tmp_path / "w"
    shutil.copytree(gesture_example.out_dir, d)
    return d


def _bad(work, case):
    k = ["--checkpoint_path", str(work / "gesture.keras"), "--num_samples", "16", "--validate_samples", "8"]
    data = work / "gesture_data"
    if case == "missing_keras":
        k[1] = str(work / "nope.keras")
    elif case == "corrupt_keras":
        (work / "gesture.keras").write_bytes(b"PK\x03\x04 not really a zip")
    elif case == "invalid_config":
        (work / "gesture_model_config.json").write_text("{ 'single': quotes }")
    elif case == "missing_config":
        k += ["--model_config", str(work / "none.json")]
    elif case == "empty_data":
        (work / "empty").mkdir()
        k += ["--data_path_train", str(work / "empty")]
    elif case == "shape_mismatch":
        np.save(data / "X.npy", np.zeros((50, 299), np.float32))
        np.save(data / "y.npy", np.zeros(50, np.int64))
    elif case == "nan":
        x = np.load(data / "X.npy")
        x[3, 7] = np.nan
        np.save(data / "X.npy", x)
    elif case == "inf":
        x = np.load(data / "X.npy")
        x[9, 0] = -np.inf
        np.save(data / "X.npy", x)
    elif case == "few_samples":
        y = np.load(data / "y.npy")
        y[y == 3] = 0
        y[np.flatnonzero(y == 0)[0]] = 3
        np.save(data / "y.npy", y)
    elif case == "bad_quantization":
        k += ["--quantization", "float16"]
    elif case == "bad_io":
        k += ["--io", "int16"]
    elif case == "int8_io_dynamic":
        k += ["--io", "int8", "--quantization", "dynamic"]
    elif case == "ptq_no_data":
        cfg = json.loads((work / "gesture_model_config.json").read_text())
        cfg.pop("training_data")
        (work / "gesture_model_config.json").write_text(json.dumps(cfg))
    elif case == "bad_threshold":
        k += ["--signal_threshold", "-1"]
    elif case == "zero_samples":
        k[3] = "0"
    elif case == "wrong_config":
        cfg = json.loads((work / "gesture_model_config.json").read_text())
        cfg["class_names"] = ["a", "b"]
        (work / "gesture_model_config.json").write_text(json.dumps(cfg))
    elif case == "not_keras":
        (work / "model.tflite").write_bytes(b"x")
        k[1] = str(work / "model.tflite")
    return ["convert", *k]


BAD = {
    "missing_keras": "does not exist",
    "corrupt_keras": "cannot load Keras model",
    "not_keras": "not a .keras",
    "invalid_config": "not valid JSON",
    "missing_config": "does not exist",
    "empty_data": "holds no .npy",
    "shape_mismatch": "does not match the model input",
    "nan": "NaN or Inf",
    "inf": "NaN or Inf",
    "few_samples": "has 1 usable sample",
    "bad_quantization": "invalid choice",
    "bad_io": "invalid choice",
    "int8_io_dynamic": "--io int8 needs --quantization ptq",
    "ptq_no_data": "--quantization dynamic",
    "bad_threshold": "signal threshold",
    "zero_samples": "at least 1",
    "wrong_config": "names 2 classes",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exit_2_one_line(work, case, capsys):
    good = work / "gesture_quantized.tflite"
    good.write_bytes(b"GOOD")
    argv = _bad(work, case)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse rejects unknown choices itself
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert BAD[case] in err
    if not err.startswith("usage"):
        assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert good.read_bytes() == b"GOOD"
    assert not list(work.glob("*.part")) and not (work / "gesture_quantized_validation_data.npz").exists()


def test_export_onnx_without_tf2onnx(work, capsys):
    try:
        import tf2onnx  # noqa: F401

        pytest.skip("tf2onnx is installed; the missing-extra error cannot be shown")
    except ImportError:
        pass
    rc = main(["convert", "--checkpoint_path", str(work / "gesture.keras"), "--export_onnx"])
    assert rc == 2
    assert "pip install 'tinyhil[onnx]'" in capsys.readouterr().err


def test_failed_write_keeps_the_good_model(work, monkeypatch):
    good = work / "gesture_quantized.tflite"
    good.write_bytes(b"GOOD")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hc.np, "savez", boom)
    with pytest.raises(OSError):
        hc.convert(work / "gesture.keras", num_samples=16, validate_samples=8)
    assert good.read_bytes() == b"GOOD"
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []
    assert not (work / "gesture_quantized_validation_data.npz").exists()
