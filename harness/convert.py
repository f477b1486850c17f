"""Stage 1, convert: a Keras model becomes an INT8 `.tflite` (float32 I/O by
default), checked against the Keras model on held-out samples, plus the
`_validation_data.npz` a device is later compared with, and a JSON report.

`convert(...)` is the API; `hil convert` only parses arguments and calls it.
Models with one input and one output are supported.
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import __version__
from harness import data as hdata
from harness.console import NullProgress
from harness.errors import ConfigError, DataError, ModelError, ToolError
from harness.fileio import OutputSet, sha256_file
from harness.metrics import agreement
from harness.model import TensorInfo, inspect_bytes

QUANTIZATION = ("ptq", "dynamic")
IO_TYPES = ("float32", "int8")
REPORT_SCHEMA = "tinyhil-convert-report/1"
NPZ_FORMAT = "tinyhil-validation/1"
GATE_METRIC = "cosine_mean"


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
    report: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def default_output_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}_quantized.tflite")


def npz_path_for(tflite: Path) -> Path:
    return tflite.with_name(f"{tflite.stem}_validation_data.npz")


def find_config(checkpoint: Path) -> Path | None:
    cand = checkpoint.with_name(f"{checkpoint.stem}_model_config.json")
    return cand if cand.is_file() else None


def read_config(path: Path) -> dict:
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"model config {path} does not exist",
            "check --model_config, or leave it out to use <stem>_model_config.json",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read model config {path}: {exc}", "check the file") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"model config {path} is not valid JSON (line {exc.lineno}: {exc.msg})",
            "fix the JSON or pass the _model_config.json written with the model",
        ) from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"model config {path} is not a JSON object", "pass the model's _model_config.json")
    return cfg


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
    from harness.runtime import HostInterpreter, prepare_input

    with _tf_quiet():
        ip = HostInterpreter(flat, kernels)
    outs = []
    for sample in x:
        outs.append(ip.run([prepare_input(sample, info_in)])[0])
        task.advance(1)
    return np.stack(outs).reshape(len(x), *np.asarray(outs[0]).shape[1:])


def _dequant(y: np.ndarray, t: TensorInfo) -> np.ndarray:
    from harness.runtime import dequantize

    return dequantize(y, t) if t.np_dtype.kind in "iu" else np.asarray(y, np.float32)


def _signal_channels(cfg: dict, cfg_path: Path | None) -> int:
    v = cfg.get("signal_channels", 1)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(
            f"model config {cfg_path}: signal_channels must be a positive integer, not {v!r}",
            "give the number of interleaved channels of a flattened sample (e.g. 3 for x, y, z)",
        )
    return v


def _tensor_meta(t: TensorInfo) -> dict:
    d = t.to_dict()
    d["scales"] = list(t.scales)
    return d


# --------------------------------------------------------------------------- the stage


def convert(
    checkpoint_path: str | os.PathLike,
    model_config: str | os.PathLike | None = None,
    output_path: str | os.PathLike | None = None,
    data_path_train: str | os.PathLike | None = None,
    num_samples: int = 1024,
    validate_samples: int = 256,
    min_cosine_sim: float = 0.95,
    quantization: str = "ptq",
    per_tensor: bool = False,
    batch_validate: int = 0,
    export_onnx: bool = False,
    report_json: str | os.PathLike | None = None,
    seed: int = 0,
    io: str = "float32",
    signal_threshold: float = 0.05,
    min_class_samples: int = 2,
    progress=None,
) -> ConvertResult:
    """Convert, validate and write the outputs; see docs/convert.md.

    Raises a `HilError` subclass for anything the user must fix (nothing is
    written then). A failed quality gate is not an exception: the outputs
    are written and `passed` is False."""
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    # ---- settings
    if quantization not in QUANTIZATION:
        raise ConfigError(f"unknown quantization '{quantization}'", f"choose one of: {', '.join(QUANTIZATION)}")
    if io not in IO_TYPES:
        raise ConfigError(f"unknown I/O type '{io}'", f"choose one of: {', '.join(IO_TYPES)}")
    if io == "int8" and quantization != "ptq":
        raise ConfigError("--io int8 needs --quantization ptq", "dynamic-range models keep float activations and I/O")
    for name, v in (("--num_samples", num_samples), ("--validate_samples", validate_samples)):
        if int(v) < 1:
            raise ConfigError(
                f"{name} must be at least 1, not {v}", "use e.g. --num_samples 1024 --validate_samples 256"
            )
    if int(batch_validate) < 0:
        raise ConfigError(f"--batch_validate must be 0 or more, not {batch_validate}", "use e.g. --batch_validate 5")
    if not math.isfinite(float(min_cosine_sim)) or not -1.0 <= float(min_cosine_sim) <= 1.01:
        raise ConfigError(f"--min_cosine_sim {min_cosine_sim} is outside [-1, 1]", "use e.g. 0.95")
    if min_class_samples < 2:
        raise ConfigError("--min_class_samples must be at least 2", "one sample calibrates, one validates")
    rounds = max(int(batch_validate), 1)
    if export_onnx:
        try:
            import tf2onnx  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "--export_onnx needs tf2onnx, which is not installed", "pip install 'tinyhil[onnx]'"
            ) from exc

    # ---- paths and config
    ckpt = Path(checkpoint_path)
    check_checkpoint(ckpt)
    if model_config is not None:
        cfg_path: Path | None = Path(model_config)
        if not cfg_path.is_file():
            raise ConfigError(
                f"model config {cfg_path} does not exist",
                "check --model_config, or leave it out to use <stem>_model_config.json",
            )
    else:
        cfg_path = find_config(ckpt)
    cfg = read_config(cfg_path) if cfg_path else {}
    out = Path(output_path) if output_path else default_output_path(ckpt)
    if out.suffix != ".tflite":
        raise ConfigError(f"--output_path {out} does not end in .tflite", "name the output <model>.tflite")
    npz_out = npz_path_for(out)
    onnx_out = out.with_suffix(".onnx") if export_onnx else None
    report_out = Path(report_json) if report_json else None
    data_path: Path | None = Path(data_path_train) if data_path_train else None
    if (
        data_path is None
        and cfg_path
        and isinstance(cfg.get("training_data"), dict)
        and cfg["training_data"].get("path")
    ):
        cand = (cfg_path.parent / str(cfg["training_data"]["path"])).resolve()
        if cand.exists():
            data_path = cand
    if quantization == "ptq" and data_path is None:
        raise ConfigError(
            "--quantization ptq needs calibration data and no --data_path_train was given",
            "pass --data_path_train DATA, or use --quantization dynamic (no data needed)",
        )
    class_names = cfg.get("class_names") or None
    if class_names is not None and (
        not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names)
    ):
        raise ConfigError(f"model config {cfg_path}: class_names must be a list of strings", "fix the config")
    outs = OutputSet(
        outputs={"--output_path": out, "validation data": npz_out, "ONNX": onnx_out, "--report_json": report_out},
        inputs={"--checkpoint_path": ckpt, "--model_config": cfg_path, "--data_path_train": data_path},
    ).check()  # before minutes of conversion: no output may destroy an input

    # ---- model and data
    t0 = time.perf_counter()
    model = load_keras(ckpt)
    in_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    out_shape = tuple(int(d) if d is not None else 1 for d in model.outputs[0].shape[1:])
    if cfg.get("input_shape") is not None:
        try:
            want = tuple(int(d) for d in cfg["input_shape"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"model config {cfg_path}: input_shape is not a list of integers", "fix the config"
            ) from exc
        if math.prod(want) != math.prod(in_shape):
            raise ConfigError(
                f"model config {cfg_path} says input_shape {list(want)}, the model has {list(in_shape)}",
                "pass the config that belongs to this model",
            )
    out_size = math.prod(out_shape)
    if class_names and len(class_names) != out_size:
        raise ConfigError(
            f"model config {cfg_path} names {len(class_names)} classes, the model outputs {out_size} values",
            "pass the config that belongs to this model",
        )
    notes: list[str] = []
    ds = sp = norm = None
    if data_path is not None:
        ds = hdata.load_dataset(data_path, in_shape, class_names)
        if not class_names and ds.y is not None and len(ds.class_names) > out_size:
            raise DataError(
                f"{data_path} has {len(ds.class_names)} classes, the model outputs {out_size} values",
                "pass the training data of this model",
            )
        sp = hdata.split(
            ds,
            num_samples,
            validate_samples,
            seed=seed,
            rounds=rounds,
            signal_threshold=signal_threshold,
            min_class_samples=min_class_samples,
            signal_channels=_signal_channels(cfg, cfg_path),
        )
        notes.extend(sp.notes)
        norm = hdata.normalization_for(cfg, cfg_path, in_shape)
    elif cfg_path is None:
        notes.append("no model config found: no normalization, class names unknown")
    feed = (lambda a: norm.apply(a)) if norm is not None else (lambda a: np.asarray(a, np.float32))  # noqa: E731
    t_load = time.perf_counter() - t0

    # ---- conversions
    flat_float, _, t_float = _convert_tflite(model, None, False, "float32", None, progress)
    rep = feed(ds.x[sp.calibration]) if sp is not None and quantization == "ptq" else None
    flat, t_calib, t_conv = _convert_tflite(model, quantization, per_tensor, io, rep, progress)
    info = inspect_bytes(flat)
    t_in, t_out = info.inputs[0], info.outputs[0]
    if per_tensor and info.per_channel_tensors:
        raise ModelError(
            f"the converter left {info.per_channel_tensors} per-channel tensors despite --per_tensor",
            "this TensorFlow version ignores the per-tensor switch; try another TensorFlow release",
        )
    if quantization == "ptq" and io == "float32" and (t_in.dtype, t_out.dtype) != ("float32", "float32"):
        raise ModelError(
            f"converted model has {t_in.dtype}/{t_out.dtype} I/O, not float32",
            "report this TensorFlow version; the converter did not honour float I/O",
        )

    # ---- validation
    t0 = time.perf_counter()
    rounds_out: list[dict] = []
    worst = None
    float_max = None
    npz_arrays: dict[str, np.ndarray] | None = None
    oracle = "tflm"
    tflm_litert_diff = None
    if sp is not None:
        try:
            from harness.runtime import HostInterpreter

            with _tf_quiet():
                HostInterpreter(flat, "tflm")
        except ModelError:
            oracle = None
            notes.append(
                "TFLite Micro cannot run this model (dynamic-range models use hybrid kernels that TFLM "
                "lacks): y_tflm is left out and metrics use LiteRT"
            )
        kernel_sets = ["tflm", "litert"] if oracle else ["litert"]
        total = sum(len(d) for d in sp.validation) * len(kernel_sets) + len(sp.validation[0])
        task = progress.task("validation", total=total)
        for r, idx in enumerate(sp.validation):
            x = feed(ds.x[idx])
            y_keras = _keras_predict(model, x)
            ys = {k: _run_host(flat, x, k, t_in, task) for k in kernel_sets}
            ref_kernel = kernel_sets[0]
            y_q = _dequant(ys[ref_kernel], t_out).reshape(y_keras.shape)
            ag = agreement(y_keras, y_q, worst_k=5)
            entry = {
                "round": r,
                "seed": seed + r,
                "reference": "keras",
                "candidate": ref_kernel,
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
            if oracle:
                d = np.abs(_dequant(ys["tflm"], t_out) - _dequant(ys["litert"], t_out))
                tflm_litert_diff = max(tflm_litert_diff or 0.0, float(d.max()) if d.size else 0.0)
            rounds_out.append(entry)
            if worst is None or entry[GATE_METRIC] < worst[GATE_METRIC]:
                worst = entry
            if r == 0:
                y_float = _run_host(flat_float, x, "litert", inspect_bytes(flat_float).inputs[0], task)
                float_max = float(np.max(np.abs(y_float.reshape(y_keras.shape) - y_keras))) if y_keras.size else 0.0
                npz_arrays = {"x": x.astype(np.float32)}
                if oracle:
                    npz_arrays["y_tflm"] = ys["tflm"]
                npz_arrays["y_litert"] = ys["litert"]
                npz_arrays["y_keras"] = y_keras
                if ds.y is not None:
                    npz_arrays["y"] = ds.y[idx].astype(np.int64)
                if norm is not None:
                    npz_arrays["x_raw"] = ds.x[idx].astype(np.float32)
                if t_in.np_dtype.kind in "iu":
                    from harness.runtime import quantize

                    npz_arrays["x_q"] = quantize(x, t_in)
                npz_ids = [ds.sample_id(int(i)) for i in idx]
    else:
        notes.append("no training data: the quantized model was not validated and no validation .npz was written")
    t_val = time.perf_counter() - t0
    passed = worst is None or worst[GATE_METRIC] >= float(min_cosine_sim)

    # ---- report
    float_size, q_size = len(flat_float), len(flat)
    ckpt_sha = sha256_file(ckpt)
    norm_meta = {"applied": True, **norm.to_dict()} if norm is not None else {"applied": False}
    settings = {
        "checkpoint_path": str(ckpt),
        "model_config": str(cfg_path) if cfg_path else None,
        "output_path": str(out),
        "data_path_train": str(data_path) if data_path else None,
        "num_samples": int(num_samples),
        "validate_samples": int(validate_samples),
        "min_cosine_sim": float(min_cosine_sim),
        "quantization": quantization,
        "per_channel": not per_tensor,
        "batch_validate": int(batch_validate),
        "export_onnx": bool(export_onnx),
        "seed": int(seed),
        "io": io,
        "signal_threshold": float(signal_threshold),
        "min_class_samples": int(min_class_samples),
    }
    report = {
        "schema": REPORT_SCHEMA,
        "tool": {"name": "tinyhil", "version": __version__, "command": "convert"},
        "passed": passed,
        "settings": settings,
        "outputs": {
            "tflite": str(out),
            "npz": str(npz_out) if npz_arrays is not None else None,
            "onnx": str(onnx_out) if onnx_out else None,
            "report": str(report_out) if report_out else None,
        },
        "model": {
            "sha256": info.sha256,
            "checkpoint_sha256": ckpt_sha,
            "inputs": [_tensor_meta(t) for t in info.inputs],
            "outputs": [_tensor_meta(t) for t in info.outputs],
            "ops": list(info.builtin_ops),
            "tensor_types": {t: info.tensor_types.count(t) for t in sorted(set(info.tensor_types))},
            "per_channel_tensors": info.per_channel_tensors,
            "per_tensor_quantized": info.per_tensor_quantized,
            "keras_params": int(model.count_params()),
        },
        "sizes": {
            "keras_bytes": ckpt.stat().st_size,
            "float_tflite_bytes": float_size,
            "tflite_bytes": q_size,
            "compression_ratio": round(float_size / q_size, 3),
        },
        "data": None
        if ds is None
        else {
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
            "normalization": norm_meta,
        },
        "float_baseline": None if float_max is None else {"max_abs_diff": float_max, "kernels": "litert"},
        "metrics": None if worst is None else {k: v for k, v in worst.items() if k != "worst"},
        "host_kernels": {"oracle": oracle, "tflm_vs_litert_max_abs_diff": tflm_litert_diff},
        "gate": {
            "metric": GATE_METRIC,
            "threshold": float(min_cosine_sim),
            "value": None if worst is None else worst[GATE_METRIC],
            "passed": passed,
            "round": None if worst is None else worst["round"],
            "worst_samples": [] if worst is None else worst["worst"],
        },
        "rounds": rounds_out,
        "timing_s": {
            "load": round(t_load, 3),
            "float_conversion": round(t_float, 3),
            "calibration": round(t_calib, 4),
            "conversion": round(t_conv - t_calib, 3),
            "validation": round(t_val, 3),
        },
        "notes": notes,
    }

    # ---- outputs, all or nothing
    npz_written = None
    with outs.staged() as stack:
        tmp = stack.path(out)
        tmp.write_bytes(flat)
        if npz_arrays is not None:
            meta = {
                "format": NPZ_FORMAT,
                "model_file": out.name,
                "model_sha256": info.sha256,
                "model_size": q_size,
                "quantization": quantization,
                "per_channel": not per_tensor,
                "io": io,
                "inputs": [_tensor_meta(t) for t in info.inputs],
                "outputs": [_tensor_meta(t) for t in info.outputs],
                "x_is_normalized": norm is not None,
                "normalization": norm_meta,
                "class_names": list(ds.class_names),
                "task": cfg.get("task"),
                "samples": int(len(npz_arrays["x"])),
                "kernels": {"y_tflm": "tflm" if oracle else None, "y_litert": "litert"},
                "sample_ids": npz_ids,
                "source": {
                    "checkpoint": str(ckpt),
                    "checkpoint_sha256": ckpt_sha,
                    "model_config": str(cfg_path) if cfg_path else None,
                    "data": str(ds.source),
                    "layout": ds.layout,
                    "seed": int(seed),
                },
                "created_by": f"tinyhil {__version__} convert",
            }
            tmp_npz = stack.path(npz_out)
            with open(tmp_npz, "wb") as f:
                np.savez(f, **npz_arrays, meta=np.array(json.dumps(meta)))
            npz_written = npz_out
        if onnx_out is not None:
            tmp_onnx = stack.path(onnx_out)
            _export_onnx(model, tmp_onnx)
        report["timing_s"]["total"] = round(time.perf_counter() - t_start, 3)
        if report_out is not None:
            tmp_rep = stack.path(report_out)
            tmp_rep.write_text(json.dumps(report, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return ConvertResult(
        tflite=out,
        npz=npz_written,
        report_path=report_out,
        onnx=onnx_out,
        float_tflite_size=float_size,
        tflite_size=q_size,
        metrics=report["metrics"],
        float_max_abs_diff=float_max,
        passed=passed,
        report=report,
        notes=notes,
    )


def _json_default(obj):
    from harness.fileio import _json_default as d

    return d(obj)


def load_validation_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the parsed `meta` of a `_validation_data.npz`."""
    path = Path(path)
    from harness.arrays import load_npz  # headers checked before allocating; corrupt != missing

    arrays = load_npz(path, what="validation data")
    if "meta" not in arrays or "x" not in arrays:
        raise DataError(
            f"{path} is not a tinyhil validation file (no 'x'/'meta')", "pass the npz written by `hil convert`"
        )
    meta = json.loads(str(arrays.pop("meta")))
    return arrays, meta


__all__: Sequence[str] = (
    "convert",
    "ConvertResult",
    "default_output_path",
    "npz_path_for",
    "find_config",
    "read_config",
    "load_validation_npz",
    "QUANTIZATION",
    "IO_TYPES",
)
