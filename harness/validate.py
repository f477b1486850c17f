"""On-device validation: stream validation inputs to a device, get its raw
outputs and timing back, and say whether and how they drift from the host.

    report = validate("/dev/ttyACM0", "m_quantized.tflite", "m_quantized_validation_data.npz")
    report.exit_code        # 0 within tolerance, 1 drift, 2 could not run
    report.to_dict()        # the JSON report (docs/validate.md has the schema)

The steps: load the model and the data (`load_data`), open the port and
check the handshake (`check_device_matches`), complete the host references
(TFLM, LiteRT reference and LiteRT default kernels, `complete_references`),
stream every sample (`DeviceSession.infer`), compare (`compare`) and apply
the gates (`evaluate_gates`).

A run that cannot finish still yields a report: a `HilError` (port, device,
model, data) or a Ctrl-C is recorded in it (status "error", `partial` when
some samples were done) instead of being raised, so a lab's CI always gets
its JUnit file. Results follow Zephyr twister: a gate is PASS or FAIL (the
outputs drifted), an ERROR means it could not be decided.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import __version__
from harness.errors import ConfigError, DataError, DeviceError, HilError
from harness.model import ModelInfo, TensorInfo, dequantize_sources, inspect_bytes, read_model_bytes
from harness.runtime import KERNELS, dequantize, prepare_input, quantize

SCHEMA = "tinyhil-validate-report/1"
DEFAULT_MIN_COSINE = 0.99
DEFAULT_MAX_LSB = 1
DEFAULT_WORST_K = 10
KERNEL_LABELS = {
    "tflm": "TFLM kernels (tflite-micro)",
    "litert_ref": "LiteRT reference kernels",
    "litert": "LiteRT default kernels",
}
HIST_CLIP = 16  # LSB differences beyond ±16 share one histogram bin


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Gates:
    """Tolerances. None switches a gate off."""

    min_cosine: float | None = DEFAULT_MIN_COSINE  # per output: worst sample's cosine similarity
    max_lsb: int | None = DEFAULT_MAX_LSB  # per output: largest |difference| in quantization steps
    min_top1: float | None = None  # classifiers: fraction of samples with the same argmax

    def check(self) -> None:
        if self.min_cosine is not None and not (math.isfinite(self.min_cosine) and -1.0 <= self.min_cosine <= 1.0):
            raise ConfigError(f"--min-cosine {self.min_cosine} is outside [-1, 1]", "use e.g. --min-cosine 0.99")
        if self.max_lsb is not None and self.max_lsb < 0:
            raise ConfigError(f"--max-lsb {self.max_lsb} is negative", "use 0 for bit-exact, 1 to allow ±1 LSB")
        if self.min_top1 is not None and not 0.0 <= self.min_top1 <= 1.0:
            raise ConfigError(f"--min-top1 {self.min_top1} is outside [0, 1]", "use e.g. --min-top1 0.99")

    def to_dict(self) -> dict:
        return {"min_cosine": self.min_cosine, "max_lsb": self.max_lsb, "min_top1": self.min_top1}


# --------------------------------------------------------------------------- data


@dataclass
class ValidationData:
    """Inputs and reference outputs, aligned with the model's tensors."""

    path: Path
    inputs: list[np.ndarray]  # one per model input: (N, *tensor.shape), dtype as stored
    refs: dict[str, list[np.ndarray]]  # kernel -> one per model output: (N, *tensor.shape), output dtype
    ref_source: dict[str, str]  # kernel -> "file" | "host"
    labels: np.ndarray | None
    meta: dict
    available: int  # samples in the file
    input_keys: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return int(len(self.inputs[0])) if self.inputs else 0


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    if not path.exists():
        raise DataError(
            f"validation data {path} does not exist",
            "pass the _validation_data.npz written by `hil convert`, or an .npz/.npy of inputs",
        )
    if path.is_dir():
        raise DataError(f"validation data {path} is a folder", "pass an .npz or .npy file")
    from harness.arrays import load_arrays  # headers checked before allocating; corrupt != missing

    arrays = load_arrays(path, what="validation data")
    meta = {}
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays.pop("meta")))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: its 'meta' entry is not JSON", "re-run `hil convert` to write it again") from exc
    return arrays, meta


def _input_arrays(arrays: dict, model: ModelInfo, path: Path) -> tuple[list[np.ndarray], list[str]]:
    n = len(model.inputs)
    if n == 1:
        for key in ("x", "inputs", "input"):
            if key in arrays:
                return [arrays[key]], [key]
        unknown = [k for k in arrays if not k.startswith("y")]
        if len(unknown) == 1:
            return [arrays[unknown[0]]], unknown
        raise DataError(
            f"{path} has no input array 'x' (it holds: {', '.join(sorted(arrays)) or 'nothing'})",
            "save the inputs as 'x' (samples first), e.g. np.savez(path, x=inputs)",
        )
    out, keys = [], []
    for i, t in enumerate(model.inputs):
        for key in (f"x{i}", f"x_{i}", t.name):
            if key in arrays:
                out.append(arrays[key])
                keys.append(key)
                break
        else:
            raise DataError(
                f"{path} has no array for input {i} '{t.name}' of this {n}-input model",
                f"save one array per input as x0 … x{n - 1} (samples first)",
            )
    return out, keys


def _fit_samples(a: np.ndarray, t: TensorInfo, what: str) -> np.ndarray:
    """(N, *t.shape) from samples-first data; one unbatched sample is N = 1."""
    a = np.asarray(a)
    if a.ndim == 0 or a.size == 0:
        raise DataError(f"{what} is empty or a scalar", "save the samples with the sample axis first")
    if a.size == t.size and (a.ndim <= len(t.shape) or a.shape == t.shape):
        a = a.reshape((1, *t.shape))
    elif a[0].size == t.size:
        a = a.reshape((len(a), *t.shape))
    else:
        raise DataError(
            f"{what} has shape {a.shape}, but the model's tensor '{t.name}' is {list(t.shape)}",
            "check that the data belongs to this model (samples first)",
        )
    return a


def _fit_dtype(a: np.ndarray, t: TensorInfo, what: str) -> np.ndarray:
    want = t.np_dtype
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise DataError(f"{what} holds NaN or infinite values", "clean the data")
        return a.astype(np.float32, copy=False) if want.kind == "f" else a  # float for int: quantized later
    if a.dtype.kind in "iub":
        if want.kind == "f":
            raise DataError(
                f"{what} is {a.dtype}, but the model's tensor '{t.name}' is {t.dtype}",
                "pass float data as the model expects (normalized as in training)",
            )
        info = np.iinfo(want)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise DataError(
                f"{what} holds values outside {t.dtype}'s range [{info.min}, {info.max}]",
                "pass data already in the tensor's type, or float data to be quantized",
            )
        return a.astype(want, copy=False)
    raise DataError(f"{what} has unsupported dtype {a.dtype}", "use float32 or the tensor's integer type")


def _fit_reference(a: np.ndarray, t: TensorInfo, n: int, what: str) -> np.ndarray:
    a = np.asarray(a)
    if len(a) < n or a[0].size != t.size:
        raise DataError(
            f"{what} has shape {a.shape}; expected {n} samples of {list(t.shape)}",
            "the reference outputs do not belong to these inputs/this model; re-run `hil convert`",
        )
    a = a[:n].reshape((n, *t.shape))
    if t.np_dtype.kind in "iu" and a.dtype.kind == "f":
        return quantize(a, t)  # float references of an integer output: exact if they were dequantized
    if t.np_dtype.kind == "f" and a.dtype.kind in "iu":
        raise DataError(
            f"{what} is {a.dtype} but the model's output '{t.name}' is {t.dtype}",
            "store float references for a float output",
        )
    return a.astype(t.np_dtype, copy=False)


def load_data(path: str | os.PathLike, model: ModelInfo, samples: int | None = None) -> ValidationData:
    """Read a `hil convert` validation .npz, or any .npz/.npy of inputs.

    Inputs: `x` (or `x0`, `x1`, … for several inputs), samples first; float
    data for an integer input is quantized later with the model's own
    parameters, integer data is sent as it is. References `y_tflm`,
    `y_litert_ref`, `y_litert` (`y_<kernel>_<i>` for output i of a
    multi-output model) are used when present; labels `y`."""
    path = Path(path)
    if samples is not None and samples < 1:
        raise ConfigError(f"--samples {samples} must be at least 1", "leave it out to use every sample")
    arrays, meta = _read_arrays(path)
    raw_inputs, keys = _input_arrays(arrays, model, path)
    notes: list[str] = []
    inputs = [
        _fit_dtype(_fit_samples(a, t, f"{path.name}['{k}']"), t, f"{path.name}['{k}']")
        for a, t, k in zip(raw_inputs, model.inputs, keys)
    ]
    counts = {len(a) for a in inputs}
    if len(counts) != 1:
        raise DataError(
            f"{path}: the inputs hold different numbers of samples ({sorted(counts)})",
            "save the same number of samples for every input",
        )
    available = counts.pop()
    n = available if samples is None else min(int(samples), available)
    if samples is not None and samples > available:
        notes.append(f"--samples {samples} asked for more than the {available} in {path.name}; all are used")
    inputs = [a[:n] for a in inputs]

    refs: dict[str, list[np.ndarray]] = {}
    src: dict[str, str] = {}
    file_sha = meta.get("model_sha256")
    if file_sha and file_sha != model.sha256:
        notes.append(
            f"{path.name} was written for model sha256 {file_sha[:16]}…, not this one "
            f"({model.sha256[:16]}…): its reference outputs are ignored and computed on the host"
        )
    else:
        for k in KERNELS:
            names = [f"y_{k}"] if len(model.outputs) == 1 else [f"y_{k}_{i}" for i in range(len(model.outputs))]
            if all(name in arrays for name in names):
                refs[k] = [
                    _fit_reference(arrays[name], t, n, f"{path.name}['{name}']")
                    for name, t in zip(names, model.outputs)
                ]
                src[k] = "file"
    labels = None
    if "y" in arrays:
        y = np.asarray(arrays["y"])
        if y.ndim == 1 and len(y) >= n and y.dtype.kind in "iu":
            labels = y[:n].astype(np.int64)
        else:
            notes.append(f"{path.name}['y'] is not one integer label per sample; labels are not used")
    return ValidationData(
        path=path,
        inputs=inputs,
        refs=refs,
        ref_source=src,
        labels=labels,
        meta=meta,
        available=available,
        input_keys=keys,
        notes=notes,
    )


def device_inputs(data: ValidationData, model: ModelInfo, i: int) -> list[np.ndarray]:
    """Sample i as the device takes it: batch shape, quantized when the
    input tensor is integer and the data float; integer data unchanged."""
    return [prepare_input(a[i], t) for a, t in zip(data.inputs, model.inputs)]


def complete_references(
    model_bytes: bytes, model: ModelInfo, data: ValidationData, kernels: Sequence[str] = KERNELS, task=None
) -> None:
    """Compute on the host every reference the data lacks (in place). A
    kernel set that cannot run the model is noted and left out."""
    from harness.runtime import HostInterpreter

    for k in kernels:
        if k in data.refs:
            continue
        try:
            ip = HostInterpreter(model_bytes, k)
        except HilError as exc:
            data.notes.append(f"{KERNEL_LABELS[k]} cannot run this model ({exc.message}); left out")
            continue
        outs: list[list[np.ndarray]] = [[] for _ in model.outputs]
        for i in range(data.samples):
            for j, y in enumerate(ip.run(device_inputs(data, model, i))):
                outs[j].append(np.asarray(y).reshape(model.outputs[j].shape).astype(model.outputs[j].np_dtype))
            if task is not None:
                task.advance(1)
        data.refs[k] = [np.stack(o) if o else np.zeros((0, *t.shape), t.np_dtype) for o, t in zip(outs, model.outputs)]
        data.ref_source[k] = "host"


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class LsbScale:
    """One quantization step of an output, and where it was found."""

    scale: float
    zero_point: int
    source: str  # "output tensor" | "dequantize input '<name>'" | "estimated from the reference outputs"


def estimate_step(values: np.ndarray) -> float | None:
    """The grid step of values that lie on one (offset + k·step), if they do."""
    v = np.unique(np.asarray(values, np.float64).ravel())
    if v.size < 2:
        return None
    d = np.diff(v)
    step = float(d[d > 0].min())
    if step <= 0 or not math.isfinite(step):
        return None
    k = (v - v[0]) / step
    if np.max(np.abs(k - np.rint(k))) > 1e-3:
        return None
    return step


def lsb_scales(model_bytes: bytes, model: ModelInfo, refs: list[np.ndarray] | None) -> list[LsbScale | None]:
    srcs = dequantize_sources(model_bytes)
    out: list[LsbScale | None] = []
    for j, t in enumerate(model.outputs):
        if t.quantized and t.np_dtype.kind in "iu":
            out.append(LsbScale(t.scale, t.zero_point, "output tensor"))
        elif srcs[j] is not None:
            out.append(LsbScale(srcs[j].scale, srcs[j].zero_point, f"dequantize input '{srcs[j].name}'"))
        else:
            step = estimate_step(refs[j]) if refs is not None and len(refs[j]) else None
            out.append(LsbScale(step, 0, "estimated from the reference outputs") if step else None)
    return out


def lsb_diff(ref: np.ndarray, dev: np.ndarray, t: TensorInfo, q: LsbScale) -> np.ndarray:
    """Device minus reference in quantization steps, per element (int64)."""
    if ref.dtype.kind in "iu" and dev.dtype.kind in "iu":
        return dev.astype(np.int64) - ref.astype(np.int64)
    rf = dequantize(ref, t).astype(np.float64)
    df = dequantize(dev, t).astype(np.float64)
    return np.rint((df - rf) / q.scale).astype(np.int64)


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).reshape(len(a), -1)


def _histogram(d: np.ndarray) -> dict[str, int]:
    c = np.clip(d.ravel(), -HIST_CLIP, HIST_CLIP)
    vals, counts = np.unique(c, return_counts=True)
    out = {}
    for v, n in zip(vals.tolist(), counts.tolist()):
        key = f"<={-HIST_CLIP}" if v == -HIST_CLIP else f">={HIST_CLIP}" if v == HIST_CLIP else str(v)
        out[key] = int(n)
    return out


def compare_output(
    ref: np.ndarray,
    dev: np.ndarray,
    t: TensorInfo,
    q: LsbScale | None,
    *,
    classifier: bool,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] = (),
) -> dict:
    """Metrics of one output tensor over n samples (first axis), plus the
    per-sample arrays under the private keys `_cosine`, `_max_lsb`, `_exact`,
    `_argmax_ref`, `_argmax_dev`."""
    from harness.metrics import cosine_per_sample, pearson

    n = len(ref)
    rf, df = _flat(dequantize(ref, t)).astype(np.float64), _flat(dequantize(dev, t)).astype(np.float64)
    err = df - rf
    cos = cosine_per_sample(rf, df) if n else np.zeros(0)
    exact = np.all(_flat(ref) == _flat(dev), axis=1) if n else np.zeros(0, bool)
    res = {
        "samples": n,
        "float": {
            "cosine_mean": float(cos.mean()) if n else None,
            "cosine_min": float(cos.min()) if n else None,
            "mse": float(np.mean(err**2)) if n else None,
            "mae": float(np.mean(np.abs(err))) if n else None,
            "pearson_r": pearson(rf, df) if n else None,
            "max_abs_error": float(np.max(np.abs(err))) if n else None,
        },
        "bit_exact_samples": int(exact.sum()),
        "lsb": None,
        "classifier": None,
        "_cosine": cos,
        "_exact": exact,
        "_max_lsb": None,
    }
    if q is not None:
        d = lsb_diff(ref, dev, t, q).reshape(n, -1)
        a = np.abs(d)
        res["lsb"] = {
            "scale": q.scale,
            "zero_point": q.zero_point,
            "source": q.source,
            "elements": int(d.size),
            "exact": int(np.sum(a == 0)),
            "off_by_one": int(np.sum(a == 1)),
            "over_one": int(np.sum(a > 1)),
            "max_lsb": int(a.max()) if d.size else 0,
            "mean_signed": float(d.mean()) if d.size else 0.0,
            "histogram": _histogram(d),
        }
        res["_max_lsb"] = a.max(axis=1) if n else np.zeros(0, np.int64)
    if classifier and t.size > 1:
        ar, ad = np.argmax(rf, axis=1), np.argmax(df, axis=1)

        def name(k):
            return class_names[k] if 0 <= k < len(class_names) else str(k)

        flips = [
            {
                "sample": int(i),
                "reference": int(ar[i]),
                "device": int(ad[i]),
                "reference_class": name(int(ar[i])),
                "device_class": name(int(ad[i])),
            }
            for i in np.flatnonzero(ar != ad)
        ]
        cl = {"top1_agreement": float(np.mean(ar == ad)) if n else None, "flips": flips, "label_accuracy": None}
        if labels is not None and n:
            cl["label_accuracy"] = {
                "reference": float(np.mean(ar == labels[:n])),
                "device": float(np.mean(ad == labels[:n])),
            }
        res["classifier"] = cl
        res["_argmax_ref"], res["_argmax_dev"] = ar, ad
    return res


def public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def triangulate(
    refs: dict[str, list[np.ndarray]],
    dev: list[np.ndarray],
    model: ModelInfo,
    scales: list[LsbScale | None],
    oracle: str,
    ref_source: dict[str, str],
) -> dict:
    """Which host kernel sets the device matches bit-exactly, and how the
    host kernel sets differ among themselves: attributes a drift to kernels
    or to the device."""
    n = len(dev[0]) if dev else 0
    kernels = {}
    matches = []
    for k in KERNELS:
        if k not in refs:
            kernels[k] = {"label": KERNEL_LABELS[k], "available": False}
            continue
        r = [x[:n] for x in refs[k]]
        exact = np.ones(n, bool)
        max_lsb = 0
        cos_min = 1.0
        for j, t in enumerate(model.outputs):
            exact &= np.all(_flat(r[j]) == _flat(dev[j]), axis=1) if n else exact
            if scales[j] is not None and n:
                max_lsb = max(max_lsb, int(np.abs(lsb_diff(r[j], dev[j], t, scales[j])).max()))
            if n:
                from harness.metrics import cosine_per_sample

                c = cosine_per_sample(_flat(dequantize(r[j], t)), _flat(dequantize(dev[j], t)))
                cos_min = min(cos_min, float(c.min()))
        host_vs_oracle = None
        if k != oracle and oracle in refs and n:
            same = np.ones(n, bool)
            for j in range(len(model.outputs)):
                same &= np.all(_flat(refs[oracle][j][:n]) == _flat(r[j]), axis=1)
            host_vs_oracle = int(same.sum())
        kernels[k] = {
            "label": KERNEL_LABELS[k],
            "available": True,
            "source": ref_source.get(k),
            "bit_exact_samples": int(exact.sum()),
            "bit_exact": bool(n and exact.all()),
            "max_lsb": max_lsb if any(s is not None for s in scales) else None,
            "cosine_min": cos_min if n else None,
            "same_as_oracle_samples": host_vs_oracle,
        }
        if n and exact.all():
            matches.append(k)
    if not n:
        verdict = "no samples were compared"
    elif oracle in matches:
        others = [k for k in KERNELS if kernels[k].get("available") and k not in matches]
        verdict = f"the device matches the {KERNEL_LABELS[oracle]} bit-exactly: no drift of its own"
        if others:
            verdict += (
                "; "
                + ", ".join(KERNEL_LABELS[k] for k in others)
                + " differ — a difference between host kernels, not the device's"
            )
    elif matches:
        verdict = (
            f"the device matches the {', '.join(KERNEL_LABELS[k] for k in matches)} bit-exactly but not "
            f"the oracle ({KERNEL_LABELS[oracle]}): the difference lies between kernel implementations, "
            "not in the device's hardware"
        )
    else:
        verdict = (
            "the device matches no host kernel set bit-exactly: the drift is the device's own "
            "(its kernels, e.g. optimised ones, its compiler or its hardware)"
        )
    return {"oracle": oracle, "samples": n, "kernels": kernels, "matches": matches, "verdict": verdict}


def _stats(values: Sequence[float]) -> dict | None:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return None
    return {
        "min": float(v.min()),
        "median": float(np.median(v)),
        "p99": float(np.percentile(v, 99)),
        "mean": float(v.mean()),
        "max": float(v.max()),
    }


# --------------------------------------------------------------------------- gates


def evaluate_gates(
    outputs: list[dict], gates: Gates, *, samples_done: int, samples_planned: int, error: str | None
) -> list[dict]:
    """One entry per gate: status pass / fail / error / skipped. A gate that
    fails on the samples done is a FAIL even in a partial run (the drift is
    proven); one that passes on part of the samples is an ERROR."""
    partial = samples_done < samples_planned
    res = []
    multi = len(outputs) > 1

    def add(name, metric, j, op, threshold, value, skip_reason=None):
        g = {"name": name, "metric": metric, "output": j, "op": op, "threshold": threshold, "value": value}
        if skip_reason:
            g.update(status="skipped", message=skip_reason)
        elif value is None:
            g.update(status="error", message=error or "no samples were compared")
        else:
            ok = value >= threshold if op == ">=" else value <= threshold
            if not ok:
                g.update(
                    status="fail",
                    message=f"{metric} {_fmt(value)} {'<' if op == '>=' else '>'} {_fmt(threshold)}"
                    + (f" (on {samples_done} of {samples_planned} samples)" if partial else ""),
                )
            elif partial or error:
                g.update(
                    status="error",
                    message=f"incomplete: {samples_done} of {samples_planned} samples"
                    + (f" ({error})" if error else ""),
                )
            else:
                g.update(status="pass", message=f"{metric} {_fmt(value)} {op} {_fmt(threshold)}")
        res.append(g)

    for j, o in enumerate(outputs):
        tag = f"output{j}." if multi else ""
        if gates.min_cosine is not None:
            add(f"{tag}cosine_min", "cosine_min", j, ">=", gates.min_cosine, o["float"]["cosine_min"])
        if gates.max_lsb is not None:
            lsb = o.get("lsb")
            add(
                f"{tag}max_lsb",
                "max_lsb",
                j,
                "<=",
                gates.max_lsb,
                lsb["max_lsb"] if lsb and o["samples"] else None,
                None if lsb or not o["samples"] else "no quantization step known for this output",
            )
        if gates.min_top1 is not None:
            cl = o.get("classifier")
            add(
                f"{tag}top1_agreement",
                "top1_agreement",
                j,
                ">=",
                gates.min_top1,
                cl["top1_agreement"] if cl else None,
                None if cl or not o["samples"] else "not a class-score output",
            )
    if not outputs:  # nothing compared at all (the run failed before the first sample)
        for metric, op, thr in (
            ("cosine_min", ">=", gates.min_cosine),
            ("max_lsb", "<=", gates.max_lsb),
            ("top1_agreement", ">=", gates.min_top1),
        ):
            if thr is not None:
                add(metric, metric, None, op, thr, None)
    return res


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# --------------------------------------------------------------------------- the run


@dataclass
class ValidationReport:
    """The outcome of a run; `to_dict()` is the JSON report."""

    data: dict
    error: HilError | None = None
    interrupted: bool = False

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def exit_code(self) -> int:
        return int(self.data["exit_code"])

    @property
    def partial(self) -> bool:
        return bool(self.data["partial"])

    def to_dict(self) -> dict:
        return self.data


def _finish_status(rep: dict) -> None:
    gates = rep["gates"]
    if any(g["status"] == "fail" for g in gates):
        rep["status"], rep["exit_code"] = "fail", 1
    elif rep["error"] is not None or rep["partial"] or any(g["status"] == "error" for g in gates):
        rep["status"], rep["exit_code"] = "error", 2
    else:
        rep["status"], rep["exit_code"] = "pass", 0


def validate(
    port: str,
    model: str | os.PathLike,
    data: str | os.PathLike,
    *,
    samples: int | None = None,
    gates: Gates = Gates(),
    reference: str = "tflm",
    baud: int = 921600,
    timeout: float = 2.0,
    retries: int = 5,
    worst_k: int = DEFAULT_WORST_K,
    progress=None,
    session_factory: Callable | None = None,
    on_log: Callable[[int, str], None] | None = None,
    board: str | None = None,
) -> ValidationReport:
    """Validate the device at `port` (any pyserial URL) against the host.

    `board`: the board id the device must report in its handshake (a lab rig
    with many boards checks it talks to the one it means).

    Never raises a `HilError` or `KeyboardInterrupt` once started: they end
    the run with a report whose status is "error" (and `partial` when some
    samples were done). Bad settings (`ConfigError`) raise at once."""
    gates.check()
    if not (math.isfinite(float(timeout)) and float(timeout) > 0):
        raise ConfigError(f"timeout {timeout} s must be a finite number above 0", "use e.g. --timeout 2")
    if int(retries) < 0 or int(baud) < 1:
        raise ConfigError(f"retries {retries} / baud {baud} out of range", "use retries >= 0 and a positive baud rate")
    if reference not in KERNELS:
        raise ConfigError(f"unknown reference '{reference}'", f"choose one of: {', '.join(KERNELS)}")
    if worst_k < 0:
        raise ConfigError(f"worst-k {worst_k} is negative", "use e.g. 10")
    if not port:
        raise ConfigError("no port given", "pass --port URL (or set HIL_PORT); `hil ports` lists serial ports")
    if board is not None:
        from harness.boards import load_board

        load_board(board)  # an unknown id is a ConfigError now, not after the handshake
    if session_factory is None:
        from harness.protocol.session import DeviceSession as session_factory  # noqa: N813
    from harness.console import NullProgress

    progress = progress or NullProgress()
    t_start = time.monotonic()
    rep: dict = {
        "schema": SCHEMA,
        "tool": {"name": "tinyhil", "version": __version__, "command": "validate"},
        "status": "error",
        "exit_code": 2,
        "partial": False,
        "interrupted": False,
        "error": None,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": None,
        "settings": {
            "port": port,
            "model": str(model),
            "data": str(data),
            "samples": samples,
            "reference": reference,
            "baud": int(baud),
            "timeout_s": float(timeout),
            "retries": int(retries),
            "gates": gates.to_dict(),
            "worst_k": int(worst_k),
            "board": board,
        },
        "model": None,
        "data": None,
        "device": None,
        "samples_planned": 0,
        "samples_done": 0,
        "gates": [],
        "outputs": [],
        "triangulation": None,
        "timing": None,
        "link": None,
        "worst_samples": [],
        "samples": [],
        "device_logs": [],
        "notes": [],
    }
    err: HilError | None = None
    interrupted = False
    info = vd = session = None
    dev_out: list[list[np.ndarray]] = []
    per_sample_dev: list[dict] = []
    try:
        try:
            mbytes = read_model_bytes(model)
            info = inspect_bytes(mbytes, Path(model))
            rep["model"] = {
                "path": str(model),
                "sha256": info.sha256,
                "size": info.size,
                "inputs": [t.to_dict() for t in info.inputs],
                "outputs": [t.to_dict() for t in info.outputs],
                "ops": list(info.builtin_ops),
            }
            vd = load_data(data, info, samples)
            rep["samples_planned"] = vd.samples
            rep["data"] = {
                "path": str(data),
                "format": vd.meta.get("format"),
                "samples_available": vd.available,
                "samples_used": vd.samples,
                "input_keys": vd.input_keys,
                "input_dtypes": [str(a.dtype) for a in vd.inputs],
                "quantized_on_host": [
                    bool(a.dtype.kind == "f" and t.np_dtype.kind in "iu") for a, t in zip(vd.inputs, info.inputs)
                ],
                "labels": vd.labels is not None,
                "class_names": vd.meta.get("class_names"),
                "references": {},
            }
            session = session_factory(port, baudrate=baud, timeout=timeout, retries=retries, on_log=on_log)
            dinfo = session.handshake()
            rep["device"] = dinfo.to_dict() if hasattr(dinfo, "to_dict") else None
            from harness.protocol.session import check_device_matches

            if board is not None and getattr(dinfo, "board", board) != board:
                raise DeviceError(
                    f"the device at {port} is a {dinfo.board} board, not {board}",
                    "check which board is on this port (`hil ports`), or pass its --board",
                )
            diffs = check_device_matches(dinfo, info)
            if diffs:
                raise DeviceError(
                    f"the device at {port} holds another model or tensor layout: " + "; ".join(diffs),
                    f"flash {Path(model).name} to it (hil flash), or pass the --model it holds",
                )
            missing = [k for k in KERNELS if k not in vd.refs]
            task = progress.task("host references", total=vd.samples * len(missing)) if missing else None
            complete_references(mbytes, info, vd, task=task)
            if task is not None:
                task.close()
            if reference not in vd.refs:
                fallback = next((k for k in KERNELS if k in vd.refs), None)
                if fallback is None:
                    raise DataError(
                        "no host kernel set can run this model, so there is no reference",
                        "check the model's operators (hil codegen lists them)",
                    )
                vd.notes.append(f"{KERNEL_LABELS[reference]} unavailable: {KERNEL_LABELS[fallback]} are the reference")
                reference = fallback
            rep["settings"]["reference_used"] = reference
            rep["data"]["references"] = dict(vd.ref_source)
            line_rate = baud / 10.0  # 8N1: ten bits a byte, per direction
            task = progress.task("device", total=vd.samples)
            st = session.stats
            b0s, b0r, t0 = st.bytes_sent, st.bytes_received, time.monotonic()
            for i in range(vd.samples):
                res = session.infer(device_inputs(vd, info, i))
                dev_out.append([np.asarray(y).reshape(t.shape) for y, t in zip(res.outputs, info.outputs)])
                per_sample_dev.append(
                    {
                        "invoke_us": int(res.invoke_us),
                        "cycles": int(res.cycles),
                        "retransmits": int(getattr(res, "retransmits", 0)),
                        "resyncs": int(getattr(res, "resyncs", 0)),
                    }
                )
                rep["samples_done"] = i + 1
                dt = max(time.monotonic() - t0, 1e-9)
                sent, recv = st.bytes_sent - b0s, st.bytes_received - b0r
                task.advance(
                    1,
                    samples_per_s=(i + 1) / dt,
                    bytes_per_s=(sent + recv) / dt,
                    line_fraction=max(sent, recv) / dt / line_rate if line_rate else 0.0,
                )
            task.close()
        except KeyboardInterrupt:
            interrupted = True
        except HilError as exc:
            err = exc
        finally:
            if session is not None:
                rep["link"] = _link(session, baud)
                rep["device_logs"] = [{"level": lv, "text": tx} for lv, tx in list(getattr(session, "logs", []))[-50:]]
                try:
                    session.close()
                except Exception:  # noqa: BLE001 - a port that died must not hide the result
                    pass
        n = len(dev_out)
        rep["samples_done"] = n
        rep["partial"] = n < rep["samples_planned"] or (n == 0 and err is not None)
        rep["interrupted"] = interrupted
        if err is not None:
            rep["error"] = {"type": type(err).__name__, "message": err.message, "hint": err.hint}
        elif interrupted:
            rep["error"] = {
                "type": "Interrupted",
                "message": f"interrupted after {n} of {rep['samples_planned']} samples",
                "hint": None,
            }
        if n and vd is not None and reference in vd.refs:
            _compare_into(
                rep,
                mbytes,
                info,
                vd,
                dev_out,
                per_sample_dev,
                reference,
                worst_k,
                host_time=bool(rep["device"] and rep["device"].get("invoke_us_is_host_time")),
                cpu_hz=(rep["device"] or {}).get("cpu_hz", 0),
                cycles_real=bool(rep["device"] and rep["device"].get("flags", 0) & 1),
            )
        if vd is not None:
            rep["notes"] = list(vd.notes)
        errtext = rep["error"]["message"] if rep["error"] else None
        rep["gates"] = evaluate_gates(
            rep["outputs"], gates, samples_done=n, samples_planned=rep["samples_planned"], error=errtext
        )
    except KeyboardInterrupt:  # a second Ctrl-C while comparing: report what is known
        interrupted = True
        rep["interrupted"] = rep["partial"] = True
        rep["error"] = rep["error"] or {"type": "Interrupted", "message": "interrupted", "hint": None}
    _finish_status(rep)
    rep["duration_s"] = round(time.monotonic() - t_start, 3)
    return ValidationReport(rep, error=err, interrupted=interrupted)


def _link(session, baud: int) -> dict:
    st = session.stats
    el = float(getattr(st, "elapsed", 0.0) or 0.0)
    d = {
        k: getattr(st, k)
        for k in (
            "bytes_sent",
            "bytes_received",
            "payload_bytes_sent",
            "payload_bytes_received",
            "frames_sent",
            "frames_received",
            "retransmits",
            "dropped_frames",
            "device_resets",
        )
        if hasattr(st, k)
    }
    wire = st.bytes_sent + st.bytes_received
    d["elapsed_s"] = round(el, 4)
    d["efficiency"] = (st.payload_bytes_sent + st.payload_bytes_received) / wire if wire else None
    d["baud"] = int(baud)
    d["line_rate_bytes_per_s"] = baud / 10.0
    d["throughput_bytes_per_s"] = wire / el if el > 0 else None
    d["fraction_of_line_rate"] = max(st.bytes_sent, st.bytes_received) / el / (baud / 10.0) if el > 0 and baud else None
    return d


def _compare_into(
    rep: dict,
    mbytes: bytes,
    info: ModelInfo,
    vd: ValidationData,
    dev_out: list[list[np.ndarray]],
    per_dev: list[dict],
    reference: str,
    worst_k: int,
    *,
    host_time: bool,
    cpu_hz: int,
    cycles_real: bool,
) -> None:
    n = len(dev_out)
    dev = [np.stack([s[j] for s in dev_out]).astype(t.np_dtype, copy=False) for j, t in enumerate(info.outputs)]
    ref = [r[:n] for r in vd.refs[reference]]
    scales = lsb_scales(mbytes, info, ref)
    task = (vd.meta.get("task") or "").lower()
    class_names = vd.meta.get("class_names") or ()
    classifier = task == "classification" or (not task and len(info.outputs) == 1 and info.outputs[0].size > 1)
    outs = []
    for j, t in enumerate(info.outputs):
        o = compare_output(
            ref[j], dev[j], t, scales[j], classifier=classifier, labels=vd.labels, class_names=class_names
        )
        o = {"index": j, "name": t.name, "dtype": t.dtype, "shape": list(t.shape), "reference": reference, **o}
        outs.append(o)
    rows = []
    for i in range(n):
        row = {
            "index": i,
            "cosine": float(min(o["_cosine"][i] for o in outs)),
            "max_lsb": (
                int(max(o["_max_lsb"][i] for o in outs if o["_max_lsb"] is not None))
                if any(o["_max_lsb"] is not None for o in outs)
                else None
            ),
            "bit_exact": bool(all(o["_exact"][i] for o in outs)),
        }
        o0 = outs[0]
        if "_argmax_ref" in o0:
            row["top1_reference"], row["top1_device"] = int(o0["_argmax_ref"][i]), int(o0["_argmax_dev"][i])
            row["flip"] = row["top1_reference"] != row["top1_device"]
        if vd.labels is not None:
            row["label"] = int(vd.labels[i])
        row.update(per_dev[i])
        rows.append(row)
    order = sorted(range(n), key=lambda i: (-(rows[i]["max_lsb"] or 0), rows[i]["cosine"], i))
    rep["worst_samples"] = [rows[i] for i in order[:worst_k] if not rows[i]["bit_exact"]]
    rep["samples"] = rows
    rep["outputs"] = [public(o) for o in outs]
    rep["triangulation"] = triangulate(vd.refs, dev, info, scales, reference, vd.ref_source)
    us = [r["invoke_us"] for r in per_dev]
    cyc = [r["cycles"] for r in per_dev]
    rep["timing"] = {
        "clock": "host" if host_time else "device",
        "note": (
            "invoke_us is the host's time of the simulated board's Invoke(), not a device's"
            if host_time
            else "invoke_us as the device measured it"
        ),
        "invoke_us": _stats(us),
        "cycles": _stats(cyc) if (cycles_real or any(cyc)) else None,
        "cpu_hz": int(cpu_hz or 0),
    }
