"""Per-operator tracing on MLPerf Tiny's four reference architectures
(harness/testing/mlperf_tiny.py): the host's two references agree operator
by operator (and where they cannot, why), the simulated board is localized
to a perturbed operator of DS-CNN, and the native firmware's trace equals
the host's on every operator (needs HIL_TFLM_DIR, as
tests/test_firmware_native.py).

ds_cnn and fc_autoencoder convert in seconds and run in the regular suite;
resnet8 and mobilenet_v1_025 take longer and are marked slow."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_firmware_native import NativeDevice, build_for, tflm_native  # noqa: F401 - the fixture

from harness.cli import main
from harness.device.sim import start_sim
from harness.localize import OpChain, localize_on_device, model_ops, output_crc, reference_outputs
from harness.model import inspect_model
from harness.protocol.session import DeviceSession
from harness.runtime import HostInterpreter, prepare_input
from harness.testing.mlperf_tiny import ARCHITECTURES, mlperf_tiny_models
from harness.valdata import load_data, load_validation_npz, npz_path_for

FAST = ("ds_cnn", "fc_autoencoder")
SLOW = ("resnet8", "mobilenet_v1_025")
ALL = [*FAST, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW)]

# Keras's count_params() of each reference definition: 4 values per BN channel
# (gamma, beta and the two moving statistics) included.
PARAMS = {"ds_cnn": 24_908, "resnet8": 78_666, "mobilenet_v1_025": 221_794, "fc_autoencoder": 269_992}
_CNN = {"QUANTIZE", "CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX", "DEQUANTIZE"}
OPS = {
    "ds_cnn": _CNN | {"DEPTHWISE_CONV_2D"},
    "resnet8": _CNN | {"ADD"},
    "mobilenet_v1_025": _CNN | {"DEPTHWISE_CONV_2D"},
    "fc_autoencoder": {"QUANTIZE", "FULLY_CONNECTED", "DEQUANTIZE"},
}


@pytest.fixture(scope="session")
def mlperf():
    """name -> .tflite, each model converted once per session (its npz beside it)."""
    return lambda name: mlperf_tiny_models([name])[name]


def _inputs(tflite, n=2):
    info = inspect_model(tflite)
    x = np.load(npz_path_for(tflite))["x"]
    return [[prepare_input(x[i], info.inputs[0])] for i in range(n)]


@pytest.mark.parametrize("name", ALL)
def test_models_are_the_published_architectures(name, mlperf):
    tflite = mlperf(name)
    report = json.loads(tflite.with_name(f"{name}_report.json").read_text())
    assert report["model"]["keras_params"] == PARAMS[name]
    assert set(report["model"]["ops"]) == OPS[name]
    info = inspect_model(tflite)
    assert (info.inputs[0].dtype, info.outputs[0].dtype) == ("float32", "float32")
    assert info.per_channel_tensors > 0 and report["settings"]["per_channel"]
    # the validation data is what `hil convert` writes, and `hil validate --data` reads it
    arrays, meta = load_validation_npz(npz_path_for(tflite))
    assert meta["model_sha256"] == info.sha256 and {"x", "y_tflm", "y_litert"} <= set(arrays)
    data = load_data(npz_path_for(tflite), info)
    assert data.ref_source == {"tflm": "file", "litert": "file"} and data.samples == len(arrays["x"])


# ------------------------------------------------------------------ the two host references

# TFLM's FULLY_CONNECTED requantizes the int32 accumulator with TFLite's
# fixed-point multiplier and two roundings (SaturatingRoundingDoublingHighMul,
# then RoundingDivideByPOT), as its CONV_2D does. LiteRT's reference
# FULLY_CONNECTED for int8 (BUILTIN_REF, per-tensor and per-channel weights)
# calls the overloads of reference_integer_ops::FullyConnected(PerChannel)
# that take the float scales and compute round(acc * in_scale * w_scale /
# out_scale) in double precision: one rounding. The two differ by 1 LSB where
# TFLM's first rounding lands on a tie of its second: about 1 output in 2000
# (ai-edge-litert 2.3, tflite-micro 2026-10). Every other kernel of these
# models (CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D, SOFTMAX,
# (DE)QUANTIZE) agrees bit for bit, in millions of outputs.


def _mul_tflm(acc: int, real: float) -> int:
    """TFLite's QuantizeMultiplier + MultiplyByQuantizedMultiplier (double rounding)."""
    m, e = np.frexp(real)
    q = int(round(m * (1 << 31)))
    if q == 1 << 31:
        q, e = q // 2, e + 1
    left, right = max(int(e), 0), max(-int(e), 0)
    ab = acc * (1 << left) * q
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    hi = abs(ab + nudge) >> 31
    hi = hi if ab + nudge >= 0 else -hi  # C++ division truncates toward 0
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if hi < 0 else 0)
    return (hi >> right) + (1 if (hi & mask) > threshold else 0)


def _mul_litert_ref(acc: int, real: float) -> int:
    """round(acc * real), half away from zero (C's round)."""
    r = acc * real
    return int(np.sign(r) * np.floor(abs(r) + 0.5))


def _fully_connected(model: bytes, op, x: np.ndarray, mul) -> np.ndarray:
    """One int8 FULLY_CONNECTED operator computed in Python with `mul` as its requantization."""
    from ai_edge_litert import schema_py_generated as s

    m = s.Model.GetRootAs(model, 0)
    g = m.Subgraphs(0)

    def tensor(t):
        tt = g.Tensors(t)
        q = tt.Quantization()
        raw = m.Buffers(tt.Buffer()).DataAsNumpy()
        dt = {9: np.int8, 2: np.int32}[tt.Type()]
        data = None if isinstance(raw, int) else np.frombuffer(raw.tobytes(), dt).reshape(tuple(tt.ShapeAsNumpy()))
        return data, q.ScaleAsNumpy().astype(np.float64), int(q.ZeroPointAsNumpy()[0])

    _, in_scale, in_zp = tensor(op.inputs[0])
    w, w_scale, _ = tensor(op.inputs[1])
    has_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
    bias = tensor(op.inputs[2])[0].astype(np.int64) if has_bias else np.zeros(len(w), np.int64)
    _, out_scale, out_zp = tensor(op.outputs[0])
    acc = w.astype(np.int64) @ (x.reshape(-1).astype(np.int64) - in_zp) + bias
    scales = w_scale if len(w_scale) == len(w) else np.full(len(w), w_scale[0])
    y = np.array([mul(int(a), float(in_scale[0]) * float(sc) / float(out_scale[0])) for a, sc in zip(acc, scales)])
    relu = s.FullyConnectedOptions()
    opts = g.Operators(op.index).BuiltinOptions()
    relu.Init(opts.Bytes, opts.Pos)
    assert relu.FusedActivationFunction() in (0, 1)  # none or ReLU: what the converter fuses here
    lo = out_zp if relu.FusedActivationFunction() == 1 else -128
    return np.clip(y + out_zp, lo, 127).astype(np.int8).reshape(op.shape)


def _check_references(model: bytes, ins) -> tuple[list[int], int]:
    """TFLM's and LiteRT-ref's per-operator outputs: equal wherever they
    should be; where they differ, explained by the FULLY_CONNECTED rounding.
    Returns the operators that differ and the FC elements that differ on equal inputs."""
    ops = model_ops(model)
    tflm = reference_outputs(model, ins, "tflm")
    ref = reference_outputs(model, ins, "litert_ref")
    differ = [k for k in range(len(ops)) if output_crc(tflm[k]) != output_crc(ref[k])]
    fc_elements = 0
    for k, op in enumerate(ops):
        inputs_agree = k == 0 or all(output_crc(tflm[j]) == output_crc(ref[j]) for j in range(k))
        if not inputs_agree:
            break  # after the first divergence both run on different inputs
        if op.op_type != "FULLY_CONNECTED":
            assert k not in differ, f"op {k} {op.op_type}: TFLM and LiteRT-ref differ on equal inputs"
            continue
        x = tflm[k - 1][0]
        assert np.array_equal(tflm[k][0], _fully_connected(model, op, x, _mul_tflm)), f"op {k}: TFLM's rounding"
        assert np.array_equal(ref[k][0], _fully_connected(model, op, x, _mul_litert_ref)), f"op {k}: LiteRT's"
        fc_elements += int(np.count_nonzero(tflm[k][0] != ref[k][0]))
    if differ:
        first = ops[differ[0]]
        assert first.op_type == "FULLY_CONNECTED"
        a, b = tflm[differ[0]][0].astype(int), ref[differ[0]][0].astype(int)
        assert np.abs(a - b).max() == 1
    return differ, fc_elements


@pytest.mark.parametrize("name", ALL)
def test_host_references_agree_on_every_operator(name, mlperf):
    """TFLM (all tensors preserved) against LiteRT's reference kernels, and
    the simulated board's operator-by-operator executor against both."""
    model = mlperf(name).read_bytes()
    chain = OpChain(model)
    for ins in _inputs(mlperf(name)):
        differ, _ = _check_references(model, ins)
        if name != "fc_autoencoder":  # on these inputs only its FULLY_CONNECTED layers hit a tie
            assert differ == []
        tflm = reference_outputs(model, ins, "tflm")
        per_op, _, outs = chain.run(ins)
        assert [output_crc(o) for o in per_op] == [output_crc(o) for o in tflm]


def test_fully_connected_rounding_is_where_the_references_part(mlperf):
    """The FULLY_CONNECTED difference is real, not a reading of the test:
    on the autoencoder's validation samples (10 FC layers, 1288 outputs a
    sample) some outputs differ by 1 LSB, each one as the two roundings say."""
    model = mlperf("fc_autoencoder").read_bytes()
    total = sum(_check_references(model, ins)[1] for ins in _inputs(mlperf("fc_autoencoder"), 8))
    assert total > 0, "no FULLY_CONNECTED output hit a rounding tie on these samples"


# ------------------------------------------------------------------ the simulated board


def _validate_sim(tflite, tmp_path, faults=None, *extra):

    rj = tmp_path / "r.json"
    with start_sim(tflite, listen="tcp:0", baud=0, latency_ms=0, faults=faults) as sim:
        argv = ["validate", "--port", sim.url, "--model", str(tflite), "--data", str(npz_path_for(tflite))]
        rc = main([*argv, "--samples", "4", "--report-json", str(rj), *extra])
    return rc, json.loads(rj.read_text())


@pytest.mark.timeout(300)
def test_sim_localizes_a_perturbed_depthwise_conv_of_ds_cnn(mlperf, tmp_path, capsys):
    tflite = mlperf("ds_cnn")
    ops = model_ops(tflite.read_bytes())
    dw = [op.index for op in ops if op.op_type == "DEPTHWISE_CONV_2D"]
    k = dw[len(dw) // 2]  # the third of four, op 6: mid-network
    rc, r = _validate_sim(tflite, tmp_path, f"op={k}:lsb=+1", "--localize")
    assert rc in (0, 1)
    loc = r["localization"]
    assert loc["error"] is None and len(loc["samples"]) == 1
    s = loc["samples"][0]
    assert s["first_divergence"] == k and s["ops"][k]["op_type"] == "DEPTHWISE_CONV_2D"
    assert s["ops"][k]["name"] == ops[k].output_name and s["ops"][k]["max_lsb"] == 1
    assert all(o["crc_match"] for o in s["ops"][:k]) and s["invokes"] == 2 and s["reference_agrees"]
    assert f"first divergence: op {k} DEPTHWISE_CONV_2D" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_sim_unperturbed_ds_cnn_has_no_divergence(mlperf, tmp_path, capsys):
    rc, r = _validate_sim(mlperf("ds_cnn"), tmp_path, None, "--localize", "2")
    assert rc == 0
    samples = r["localization"]["samples"]
    assert [s["first_divergence"] for s in samples] == [None, None]
    assert all(s["invokes"] == 1 and s["reference_agrees"] for s in samples)
    assert "no divergence" in capsys.readouterr().err


# ------------------------------------------------------------------ the native firmware (TFLM tree)


@pytest.mark.tflm
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_native_trace_equals_the_host_on_every_operator(name, mlperf, tflm_native, tmp_path_factory):  # noqa: F811
    tflite = mlperf(name)
    model = tflite.read_bytes()
    n_ops = len(model_ops(model))
    exe = build_for(tflite, tflm_native, tmp_path_factory, defines=("-DHIL_CAPTURE_BYTES=4096",))
    y_tflm = np.load(npz_path_for(tflite))["y_tflm"]
    host = HostInterpreter(model, "tflm")
    dev = NativeDevice(exe)
    try:
        with DeviceSession(dev.port, timeout=5.0) as s:
            info = s.handshake()
            assert info.traces and info.n_ops == n_ops and 0 < info.arena_used <= info.arena_size
            for i, ins in enumerate(_inputs(tflite)):
                tr = s.trace(ins)
                assert tr.crcs == [output_crc(o) for o in reference_outputs(model, ins)]
                loc = localize_on_device(s, model, ins)
                assert loc.first_divergence is None and loc.invokes == 1
                out = s.infer(ins).outputs[0]
                assert out.tobytes() == host.run(ins)[0].tobytes()
                assert out.tobytes() == np.asarray(y_tflm[i], out.dtype).reshape(out.shape).tobytes()
    finally:
        dev.close()
