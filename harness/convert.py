"""Stage 1, convert: a Keras model becomes an INT8 `.tflite` (float32 I/O by
default), checked against the Keras model on held-out samples, plus the
`_validation_data.npz` a device is later compared with, and a JSON report.

`convert(...)` is the API; `hil convert` only parses arguments and calls it.
Models with one input and one output are supported. The phases, in order:
check the options, resolve the paths and the model config, load the model
and the data, convert (float baseline and quantized), validate on the host,
build the report, write every output at once.
"""

from __future__ import annotations

import contextlib
import io as _io
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import __version__, npu
from harness import data as hdata
from harness.boards import load_board
from harness.config import ModelConfig, read_config
from harness.config import find_model_config as find_config
from harness.console import NullProgress
from harness.errors import ConfigError, DataError, ModelError, ToolError
from harness.fileio import OutputSet, sha256_file, write_json_atomic
from harness.metrics import agreement
from harness.model import ModelInfo, TensorInfo, inspect_bytes
from harness.results import ConvertReport, Status
from harness.runtime import HostInterpreter, dequantize, prepare_input, quantize
from harness.valdata import NPZ_FORMAT, load_validation_npz, npz_path_for, write_npz

QUANTIZATION = ("ptq", "dynamic")
IO_TYPES = ("float32", "int8")
REPORT_SCHEMA = "tinyhil-convert-report/1"
GATE_METRIC = "cosine_mean"


@dataclass(frozen=True)
class ConvertOptions:
    """Every setting of a conversion (the `hil convert` options); see docs/convert.md."""

    checkpoint_path: str | os.PathLike
    model_config: str | os.PathLike | None = None
    output_path: str | os.PathLike | None = None
    data_path_train: str | os.PathLike | None = None
    num_samples: int = 1024
    validate_samples: int = 256
    min_cosine_sim: float = 0.95
    quantization: str = "ptq"
    per_tensor: bool = False
    batch_validate: int = 0
    export_onnx: bool = False
    report_json: str | os.PathLike | None = None
    seed: int = 0
    io: str = "float32"
    signal_threshold: float = 0.05
    min_class_samples: int = 2
    board: str | None = None  # an STM32N6 board: warn per layer the NPU would leave to software

    @property
    def rounds(self) -> int:
        return max(int(self.batch_validate), 1)

    def check(self) -> None:
        """Bad settings raise at once, before anything is loaded."""
        q, io = self.quantization, self.io
        if q not in QUANTIZATION:
            raise ConfigError(f"unknown quantization '{q}'", f"choose one of: {', '.join(QUANTIZATION)}")
        if io not in IO_TYPES:
            raise ConfigError(f"unknown I/O type '{io}'", f"choose one of: {', '.join(IO_TYPES)}")
        if io == "int8" and q != "ptq":
            raise ConfigError(
                "--io int8 needs --quantization ptq", "dynamic-range models keep float activations and I/O"
            )
        for name, v in (("--num_samples", self.num_samples), ("--validate_samples", self.validate_samples)):
            if int(v) < 1:
                raise ConfigError(
                    f"{name} must be at least 1, not {v}", "use e.g. --num_samples 1024 --validate_samples 256"
                )
        if int(self.batch_validate) < 0:
            raise ConfigError(
                f"--batch_validate must be 0 or more, not {self.batch_validate}", "use e.g. --batch_validate 5"
            )
        c = float(self.min_cosine_sim)
        if not math.isfinite(c) or not -1.0 <= c <= 1.01:
            raise ConfigError(f"--min_cosine_sim {self.min_cosine_sim} is outside [-1, 1]", "use e.g. 0.95")
        if self.min_class_samples < 2:
            raise ConfigError("--min_class_samples must be at least 2", "one sample calibrates, one validates")
        if self.export_onnx:
            try:
                import tf2onnx  # noqa: F401
            except ImportError as exc:
                raise ConfigError(
                    "--export_onnx needs tf2onnx, which is not installed", "pip install 'tinyhil[onnx]'"
                ) from exc


@dataclass
class ConvertResult:
    tflite: Path
    npz: Path | None  # None when there was no data to validate with
    report_path: Path | None
    onnx: Path | None
    float_tflite_size: int
    tflite_size: int
    metrics: dict | None  # worst validation round (harness.metrics.Agreement.to_dict())
    float_max_abs_diff: float | None
    passed: bool
    convert_report: ConvertReport | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def report(self) -> dict:
        """The JSON report (`to_json` of `convert_report`)."""
        return self.convert_report.to_dict() if self.convert_report is not None else {}


def default_output_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}_quantized.tflite")


# --------------------------------------------------------------------------- TensorFlow parts (lazy)


@contextlib.contextmanager
def _tf_quiet():
    """The converter prints "Saved artifact at ..." to stdout and its C++
    side chats on fd 2; the library never prints. Python-level stderr (the
    progress bars) keeps going to the real stderr through a duplicate."""
    import sys
    import warnings

    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(_io.StringIO()))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield
            return
        null = os.open(os.devnull, os.O_WRONLY)
        old_stderr = sys.stderr
        try:
            os.dup2(null, 2)
            sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
            yield
        finally:
            try:
                sys.stderr.flush()
                sys.stderr.close()
            finally:
                sys.stderr = old_stderr
                os.dup2(saved, 2)
                os.close(saved)
                os.close(null)


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import sys

    if "tensorflow" not in sys.modules:
        with _tf_quiet():  # absl prints start-up chatter before the log level applies
            import tensorflow  # noqa: F401
    import tensorflow as tf

    return tf


def check_checkpoint(path: Path) -> None:
    if not path.exists():
        raise ModelError(f"Keras model {path} does not exist", "check --checkpoint_path")
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a .keras file", "pass the .keras (or .h5) file")
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelError(f"{path} is not a .keras or .h5 file", "pass the trained model saved by model.save()")


def load_keras(path: Path):
    check_checkpoint(path)
    tf = _tf()
    try:
        with _tf_quiet():
            model = tf.keras.models.load_model(path, compile=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ModelError(
            f"cannot load Keras model {path}: {first}",
            "the file is corrupt or was not saved by Keras; re-save it with model.save()",
        ) from exc
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(
            f"{path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs",
            "hil convert supports models with one input and one output",
        )
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ModelError(
            f"{path} has an input with unknown dimensions {shape}",
            "give the model a fixed input shape (tf.keras.Input(shape=...))",
        )
    return model


def _keras_predict(model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    outs = [np.asarray(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float32)


def _convert_tflite(
    model, quantization: str | None, per_tensor: bool, io: str, rep: np.ndarray | None, progress
) -> tuple[bytes, float, float]:
    """Returns (flatbuffer, calibration seconds, total seconds)."""
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    calib = {"start": None, "end": None}
    if quantization is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if per_tensor:
        conv._experimental_disable_per_channel = True
    if quantization == "ptq":
        task = progress.task("calibration", total=len(rep))

        def representative():
            calib["start"] = time.perf_counter()
            for i in range(len(rep)):
                yield [rep[i : i + 1]]
                task.advance(1)
            calib["end"] = time.perf_counter()

        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io == "int8":
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    t0 = time.perf_counter()
    try:
        with _tf_quiet():
            flat = conv.convert()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(
            f"the TFLite converter failed: {first}",
            "check that the model uses TFLite builtin ops (see --debug for details)",
        ) from exc
    total = time.perf_counter() - t0
    cal = (calib["end"] - calib["start"]) if calib["start"] and calib["end"] else 0.0
    return bytes(flat), cal, total


def _export_onnx(model, target: Path) -> None:
    import tf2onnx  # checked before any work starts

    tf = _tf()
    spec = (tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="input"),)
    try:
        with _tf_quiet():
            tf2onnx.convert.from_keras(model, input_signature=spec, opset=13, output_path=str(target))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ToolError(
            f"ONNX export failed: {first}", "run without --export_onnx, or try another tf2onnx version"
        ) from exc


# --------------------------------------------------------------------------- host runs


def _run_host(flat: bytes, x: np.ndarray, kernels: str, info_in: TensorInfo, task) -> np.ndarray:

    with _tf_quiet():
        ip = HostInterpreter(flat, kernels)
    outs = []
    for sample in x:
        outs.append(ip.run([prepare_input(sample, info_in)])[0])
        task.advance(1)
    return np.stack(outs).reshape(len(x), *np.asarray(outs[0]).shape[1:])


def _dequant(y: np.ndarray, t: TensorInfo) -> np.ndarray:

    return dequantize(y, t) if t.np_dtype.kind in "iu" else np.asarray(y, np.float32)


def _tensor_meta(t: TensorInfo) -> dict:
    d = t.to_dict()
    d["scales"] = list(t.scales)
    return d


# --------------------------------------------------------------------------- the phases


@dataclass
class _Paths:
    """Where everything is read from and written to."""

    ckpt: Path
    cfg: ModelConfig
    out: Path
    npz: Path
    onnx: Path | None
    report: Path | None
    data: Path | None
    class_names: list[str] | None

    def outputs(self) -> OutputSet:
        return OutputSet(
            outputs={
                "--output_path": self.out,
                "validation data": self.npz,
                "ONNX": self.onnx,
                "--report_json": self.report,
            },
            inputs={"--checkpoint_path": self.ckpt, "--model_config": self.cfg.path, "--data_path_train": self.data},
        )


def _resolve_paths(opts: ConvertOptions) -> _Paths:
    ckpt = Path(opts.checkpoint_path)
    check_checkpoint(ckpt)
    cfg = ModelConfig.load(opts.model_config, ckpt)
    out = Path(opts.output_path) if opts.output_path else default_output_path(ckpt)
    if out.suffix != ".tflite":
        raise ConfigError(f"--output_path {out} does not end in .tflite", "name the output <model>.tflite")
    data_path = Path(opts.data_path_train) if opts.data_path_train else cfg.training_data()
    if opts.quantization == "ptq" and data_path is None:
        raise ConfigError(
            "--quantization ptq needs calibration data and no --data_path_train was given",
            "pass --data_path_train DATA, or use --quantization dynamic (no data needed)",
        )
    paths = _Paths(
        ckpt=ckpt,
        cfg=cfg,
        out=out,
        npz=npz_path_for(out),
        onnx=out.with_suffix(".onnx") if opts.export_onnx else None,
        report=Path(opts.report_json) if opts.report_json else None,
        data=data_path,
        class_names=cfg.class_names(),
    )
    paths.outputs().check()  # before minutes of conversion: no output may destroy an input
    return paths


@dataclass
class _Loaded:
    """The Keras model and, when there is data, the split and the normalization."""

    model: object
    in_shape: tuple[int, ...]
    out_size: int
    ds: hdata.Dataset | None
    sp: hdata.Split | None
    norm: hdata.Normalization | None
    notes: list[str]
    seconds: float

    def feed(self, a: np.ndarray) -> np.ndarray:
        """Raw samples as the model takes them."""
        return self.norm.apply(a) if self.norm is not None else np.asarray(a, np.float32)


def _check_model_against_config(p: _Paths, in_shape: tuple[int, ...], out_size: int) -> None:
    want = p.cfg.input_shape()
    if want is not None and math.prod(want) != math.prod(in_shape):
        raise ConfigError(
            f"model config {p.cfg.path} says input_shape {list(want)}, the model has {list(in_shape)}",
            "pass the config that belongs to this model",
        )
    if p.class_names and len(p.class_names) != out_size:
        raise ConfigError(
            f"model config {p.cfg.path} names {len(p.class_names)} classes, the model outputs {out_size} values",
            "pass the config that belongs to this model",
        )


def _load_model_and_data(opts: ConvertOptions, p: _Paths) -> _Loaded:
    t0 = time.perf_counter()
    model = load_keras(p.ckpt)
    in_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    out_size = math.prod(int(d) if d is not None else 1 for d in model.outputs[0].shape[1:])
    _check_model_against_config(p, in_shape, out_size)
    notes: list[str] = []
    ds = sp = norm = None
    if p.data is not None:
        ds = hdata.load_dataset(p.data, in_shape, p.class_names)
        if not p.class_names and ds.y is not None and len(ds.class_names) > out_size:
            raise DataError(
                f"{p.data} has {len(ds.class_names)} classes, the model outputs {out_size} values",
                "pass the training data of this model",
            )
        sp = hdata.split(
            ds,
            opts.num_samples,
            opts.validate_samples,
            seed=opts.seed,
            rounds=opts.rounds,
            signal_threshold=opts.signal_threshold,
            min_class_samples=opts.min_class_samples,
            signal_channels=p.cfg.signal_channels(),
        )
        notes.extend(sp.notes)
        norm = p.cfg.normalization_for(in_shape)
    elif p.cfg.path is None:
        notes.append("no model config found: no normalization, class names unknown")
    return _Loaded(model, in_shape, out_size, ds, sp, norm, notes, time.perf_counter() - t0)


@dataclass
class _Converted:
    flat_float: bytes
    flat: bytes
    info: ModelInfo
    t_float: float
    t_calib: float
    t_conv: float


def _convert_both(opts: ConvertOptions, ld: _Loaded, progress) -> _Converted:
    """The float baseline, then the quantized model, checked for what was asked."""
    flat_float, _, t_float = _convert_tflite(ld.model, None, False, "float32", None, progress)
    rep = ld.feed(ld.ds.x[ld.sp.calibration]) if ld.sp is not None and opts.quantization == "ptq" else None
    flat, t_calib, t_conv = _convert_tflite(ld.model, opts.quantization, opts.per_tensor, opts.io, rep, progress)
    info = inspect_bytes(flat)
    t_in, t_out = info.inputs[0], info.outputs[0]
    if opts.per_tensor and info.per_channel_tensors:
        raise ModelError(
            f"the converter left {info.per_channel_tensors} per-channel tensors despite --per_tensor",
            "this TensorFlow version ignores the per-tensor switch; try another TensorFlow release",
        )
    if opts.quantization == "ptq" and opts.io == "float32" and (t_in.dtype, t_out.dtype) != ("float32", "float32"):
        raise ModelError(
            f"converted model has {t_in.dtype}/{t_out.dtype} I/O, not float32",
            "report this TensorFlow version; the converter did not honour float I/O",
        )
    return _Converted(flat_float, flat, info, t_float, t_calib, t_conv)


@dataclass
class _Validation:
    """What the host validation found (empty without data)."""

    rounds: list[dict] = field(default_factory=list)
    worst: dict | None = None
    float_max: float | None = None
    npz_arrays: dict[str, np.ndarray] | None = None
    npz_ids: list[str] = field(default_factory=list)
    oracle: str | None = "tflm"
    tflm_litert_diff: float | None = None
    seconds: float = 0.0


def _host_oracle(flat: bytes, notes: list[str]) -> str | None:
    """ "tflm" when TFLite Micro can run the model, else None (LiteRT is then the reference)."""

    try:
        with _tf_quiet():
            HostInterpreter(flat, "tflm")
    except ModelError:
        notes.append(
            "TFLite Micro cannot run this model (dynamic-range models use hybrid kernels that TFLM "
            "lacks): y_tflm is left out and metrics use LiteRT"
        )
        return None
    return "tflm"


def _round_entry(r: int, seed: int, kernel: str, ag, ds: hdata.Dataset, idx: np.ndarray) -> dict:
    return {
        "round": r,
        "seed": seed + r,
        "reference": "keras",
        "candidate": kernel,
        **ag.to_dict(),
        "worst": [
            {
                "index": i,
                "id": ds.sample_id(int(idx[i])),
                "label": ds.label_name(int(idx[i])),
                "cosine": ag.per_sample_cosine[i],
            }
            for i in ag.worst_samples
        ],
    }


def _npz_arrays(
    ld: _Loaded, idx: np.ndarray, x: np.ndarray, ys: dict, y_keras: np.ndarray, t_in: TensorInfo
) -> dict[str, np.ndarray]:
    """Round 0 as the validation npz stores it (docs/convert.md)."""
    arrays = {"x": x.astype(np.float32)}
    if "tflm" in ys:
        arrays["y_tflm"] = ys["tflm"]
    arrays["y_litert"] = ys["litert"]
    arrays["y_keras"] = y_keras
    if ld.ds.y is not None:
        arrays["y"] = ld.ds.y[idx].astype(np.int64)
    if ld.norm is not None:
        arrays["x_raw"] = ld.ds.x[idx].astype(np.float32)
    if t_in.np_dtype.kind in "iu":
        arrays["x_q"] = quantize(x, t_in)
    return arrays


def _validate_on_host(opts: ConvertOptions, ld: _Loaded, cv: _Converted, progress) -> _Validation:
    """Keras against the quantized model on every validation round; round 0
    also gives the float baseline and the npz."""
    v = _Validation()
    if ld.sp is None:
        ld.notes.append("no training data: the quantized model was not validated and no validation .npz was written")
        v.oracle = "tflm"
        return v
    t0 = time.perf_counter()
    t_in, t_out = cv.info.inputs[0], cv.info.outputs[0]
    v.oracle = _host_oracle(cv.flat, ld.notes)
    kernel_sets = ["tflm", "litert"] if v.oracle else ["litert"]
    total = sum(len(d) for d in ld.sp.validation) * len(kernel_sets) + len(ld.sp.validation[0])
    task = progress.task("validation", total=total)
    for r, idx in enumerate(ld.sp.validation):
        x = ld.feed(ld.ds.x[idx])
        y_keras = _keras_predict(ld.model, x)
        ys = {k: _run_host(cv.flat, x, k, t_in, task) for k in kernel_sets}
        y_q = _dequant(ys[kernel_sets[0]], t_out).reshape(y_keras.shape)
        entry = _round_entry(r, opts.seed, kernel_sets[0], agreement(y_keras, y_q, worst_k=5), ld.ds, idx)
        if v.oracle:
            d = np.abs(_dequant(ys["tflm"], t_out) - _dequant(ys["litert"], t_out))
            v.tflm_litert_diff = max(v.tflm_litert_diff or 0.0, float(d.max()) if d.size else 0.0)
        v.rounds.append(entry)
        if v.worst is None or entry[GATE_METRIC] < v.worst[GATE_METRIC]:
            v.worst = entry
        if r == 0:
            y_float = _run_host(cv.flat_float, x, "litert", inspect_bytes(cv.flat_float).inputs[0], task)
            v.float_max = float(np.max(np.abs(y_float.reshape(y_keras.shape) - y_keras))) if y_keras.size else 0.0
            v.npz_arrays = _npz_arrays(ld, idx, x, ys, y_keras, t_in)
            v.npz_ids = [ld.ds.sample_id(int(i)) for i in idx]
    v.seconds = time.perf_counter() - t0
    return v


def _settings(opts: ConvertOptions, p: _Paths) -> dict:
    return {
        "checkpoint_path": str(p.ckpt),
        "model_config": str(p.cfg.path) if p.cfg.path else None,
        "output_path": str(p.out),
        "data_path_train": str(p.data) if p.data else None,
        "num_samples": int(opts.num_samples),
        "validate_samples": int(opts.validate_samples),
        "min_cosine_sim": float(opts.min_cosine_sim),
        "quantization": opts.quantization,
        "per_channel": not opts.per_tensor,
        "batch_validate": int(opts.batch_validate),
        "export_onnx": bool(opts.export_onnx),
        "seed": int(opts.seed),
        "io": opts.io,
        "signal_threshold": float(opts.signal_threshold),
        "min_class_samples": int(opts.min_class_samples),
    }


def _norm_meta(ld: _Loaded) -> dict:
    return {"applied": True, **ld.norm.to_dict()} if ld.norm is not None else {"applied": False}


def _model_section(info: ModelInfo, ckpt_sha: str, keras_params: int) -> dict:
    return {
        "sha256": info.sha256,
        "checkpoint_sha256": ckpt_sha,
        "inputs": [_tensor_meta(t) for t in info.inputs],
        "outputs": [_tensor_meta(t) for t in info.outputs],
        "ops": list(info.builtin_ops),
        "tensor_types": {t: info.tensor_types.count(t) for t in sorted(set(info.tensor_types))},
        "per_channel_tensors": info.per_channel_tensors,
        "per_tensor_quantized": info.per_tensor_quantized,
        "keras_params": keras_params,
    }


def _data_section(ld: _Loaded) -> dict | None:
    ds, sp = ld.ds, ld.sp
    if ds is None:
        return None
    return {
        "source": str(ds.source),
        "layout": ds.layout,
        "samples": len(ds),
        "class_names": list(ds.class_names),
        "class_counts": (
            {n: int(np.sum(ds.y == i)) for i, n in enumerate(ds.class_names)} if ds.y is not None else None
        ),
        "skipped_silent": int(len(sp.skipped)),
        "skipped_ids": [ds.sample_id(int(i)) for i in sp.skipped[:50]],
        "calibration_samples": int(len(sp.calibration)),
        "holdout_samples": int(len(sp.holdout)),
        "validation_samples": int(len(sp.validation[0])),
        "normalization": _norm_meta(ld),
    }


def _build_report(
    opts: ConvertOptions, p: _Paths, ld: _Loaded, cv: _Converted, v: _Validation, ckpt_sha: str
) -> ConvertReport:
    w = v.worst
    passed = w is None or w[GATE_METRIC] >= float(opts.min_cosine_sim)
    float_size, q_size = len(cv.flat_float), len(cv.flat)
    return ConvertReport(
        schema=REPORT_SCHEMA,
        tool={"name": "tinyhil", "version": __version__, "command": "convert"},
        status=Status.PASS if passed else Status.FAIL,
        settings=_settings(opts, p),
        outputs={
            "tflite": str(p.out),
            "npz": str(p.npz) if v.npz_arrays is not None else None,
            "onnx": str(p.onnx) if p.onnx else None,
            "report": str(p.report) if p.report else None,
        },
        model=_model_section(cv.info, ckpt_sha, int(ld.model.count_params())),
        sizes={
            "keras_bytes": p.ckpt.stat().st_size,
            "float_tflite_bytes": float_size,
            "tflite_bytes": q_size,
            "compression_ratio": round(float_size / q_size, 3),
        },
        data=_data_section(ld),
        float_baseline=None if v.float_max is None else {"max_abs_diff": v.float_max, "kernels": "litert"},
        metrics=None if w is None else {k: x for k, x in w.items() if k != "worst"},
        host_kernels={"oracle": v.oracle, "tflm_vs_litert_max_abs_diff": v.tflm_litert_diff},
        gate={
            "metric": GATE_METRIC,
            "threshold": float(opts.min_cosine_sim),
            "value": None if w is None else w[GATE_METRIC],
            "passed": passed,
            "round": None if w is None else w["round"],
            "worst_samples": [] if w is None else w["worst"],
        },
        rounds=v.rounds,
        timing_s={
            "load": round(ld.seconds, 3),
            "float_conversion": round(cv.t_float, 3),
            "calibration": round(cv.t_calib, 4),
            "conversion": round(cv.t_conv - cv.t_calib, 3),
            "validation": round(v.seconds, 3),
        },
        notes=ld.notes,
    )


def _npz_meta(opts: ConvertOptions, p: _Paths, ld: _Loaded, cv: _Converted, v: _Validation, ckpt_sha: str) -> dict:
    """The npz's `meta` (docs/convert.md); valdata adds `format` and `created_by`."""
    return {
        "model_file": p.out.name,
        "model_sha256": cv.info.sha256,
        "model_size": len(cv.flat),
        "quantization": opts.quantization,
        "per_channel": not opts.per_tensor,
        "io": opts.io,
        "inputs": [_tensor_meta(t) for t in cv.info.inputs],
        "outputs": [_tensor_meta(t) for t in cv.info.outputs],
        "x_is_normalized": ld.norm is not None,
        "normalization": _norm_meta(ld),
        "class_names": list(ld.ds.class_names),
        "task": p.cfg.task,
        "samples": int(len(v.npz_arrays["x"])),
        "kernels": {"y_tflm": "tflm" if v.oracle else None, "y_litert": "litert"},
        "sample_ids": v.npz_ids,
        "source": {
            "checkpoint": str(p.ckpt),
            "checkpoint_sha256": ckpt_sha,
            "model_config": str(p.cfg.path) if p.cfg.path else None,
            "data": str(ld.ds.source),
            "layout": ld.ds.layout,
            "seed": int(opts.seed),
        },
    }


def _write_outputs(
    p: _Paths, cv: _Converted, npz: tuple[dict, dict] | None, model, report: ConvertReport, finish: Callable[[], None]
) -> Path | None:
    """Every output at once (`OutputSet.staged`): each goes to a temporary
    file and all replace their targets only when all were written; `finish`
    runs just before the report is written. Returns the npz written."""
    with p.outputs().staged() as st:
        st.path(p.out).write_bytes(cv.flat)
        if npz is not None:
            write_npz(st.path(p.npz), *npz)
        if p.onnx is not None:
            _export_onnx(model, st.path(p.onnx))
        finish()
        if p.report is not None:
            write_json_atomic(st.path(p.report), report.to_dict())
    return p.npz if npz is not None else None


# --------------------------------------------------------------------------- the stage


def convert(checkpoint_path: str | os.PathLike, *, progress=None, **options) -> ConvertResult:
    """Convert, validate and write the outputs; the options are the fields
    of `ConvertOptions` (see docs/convert.md).

    Raises a `HilError` subclass for anything the user must fix (nothing is
    written then). A failed quality gate is not an exception: the outputs
    are written and `passed` is False."""
    return convert_with(ConvertOptions(checkpoint_path, **options), progress=progress)


def convert_with(opts: ConvertOptions, *, progress=None) -> ConvertResult:
    """`convert` with its options as one value."""
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    opts.check()
    board = load_board(opts.board) if opts.board else None  # an unknown board fails before TF loads
    paths = _resolve_paths(opts)
    loaded = _load_model_and_data(opts, paths)
    converted = _convert_both(opts, loaded, progress)
    validation = _validate_on_host(opts, loaded, converted, progress)
    ckpt_sha = sha256_file(paths.ckpt)
    report = _build_report(opts, paths, loaded, converted, validation, ckpt_sha)
    npz = None
    if validation.npz_arrays is not None:
        npz = (validation.npz_arrays, _npz_meta(opts, paths, loaded, converted, validation, ckpt_sha))

    def finish() -> None:
        report.timing_s["total"] = round(time.perf_counter() - t_start, 3)

    npz_written = _write_outputs(paths, converted, npz, loaded.model, report, finish)
    return ConvertResult(
        tflite=paths.out,
        npz=npz_written,
        report_path=paths.report,
        onnx=paths.onnx,
        float_tflite_size=len(converted.flat_float),
        tflite_size=len(converted.flat),
        metrics=report.metrics,
        float_max_abs_diff=validation.float_max,
        passed=report.passed,
        convert_report=report,
        notes=loaded.notes + npu.npu_warnings(converted.flat, board),
    )


__all__: Sequence[str] = (
    "convert",
    "convert_with",
    "ConvertOptions",
    "ConvertResult",
    "ConvertReport",
    "default_output_path",
    "npz_path_for",
    "find_config",
    "read_config",
    "load_validation_npz",
    "NPZ_FORMAT",
    "QUANTIZATION",
    "IO_TYPES",
)
