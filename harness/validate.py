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
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import __version__
from harness.boards import load_board
from harness.console import NullProgress
from harness.errors import ConfigError, DataError, DeviceError, HilError
from harness.localize import localize_on_device, model_ops
from harness.metrics import cosine_per_sample, pearson
from harness.model import ModelInfo, TensorInfo, dequantize_sources, inspect_bytes, read_model_bytes
from harness.profile import clock_of, summarize
from harness.protocol.session import DeviceSession, check_device_matches
from harness.results import ErrorInfo, GateResult, Status, ValidationReport
from harness.runtime import KERNELS, HostInterpreter, dequantize, prepare_input
from harness.valdata import ValidationData, load_data

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


def device_inputs(data: ValidationData, model: ModelInfo, i: int) -> list[np.ndarray]:
    """Sample i as the device takes it: batch shape, quantized when the
    input tensor is integer and the data float; integer data unchanged."""
    return [prepare_input(a[i], t) for a, t in zip(data.inputs, model.inputs)]


def complete_references(
    model_bytes: bytes, model: ModelInfo, data: ValidationData, kernels: Sequence[str] = KERNELS, task=None
) -> None:
    """Compute on the host every reference the data lacks (in place). A
    kernel set that cannot run the model is noted and left out."""

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


def _lsb_section(ref: np.ndarray, dev: np.ndarray, t: TensorInfo, q: LsbScale) -> tuple[dict, np.ndarray]:
    """The LSB statistics of one output, and each sample's largest |difference|."""
    n = len(ref)
    d = lsb_diff(ref, dev, t, q).reshape(n, -1)
    a = np.abs(d)
    lsb = {
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
    return lsb, (a.max(axis=1) if n else np.zeros(0, np.int64))


def _classifier_section(
    rf: np.ndarray, df: np.ndarray, labels: np.ndarray | None, class_names: Sequence[str]
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Top-1 agreement, the argmax flips and label accuracy of a class-score output."""
    n = len(rf)
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
    return cl, ar, ad


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
        res["lsb"], res["_max_lsb"] = _lsb_section(ref, dev, t, q)
    if classifier and t.size > 1:
        res["classifier"], res["_argmax_ref"], res["_argmax_dev"] = _classifier_section(rf, df, labels, class_names)
    return res


def public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def _kernel_match(
    r: list[np.ndarray],
    dev: list[np.ndarray],
    model: ModelInfo,
    scales: list[LsbScale | None],
    oracle_ref: list[np.ndarray] | None,
) -> tuple[np.ndarray, int, float, int | None]:
    """How one host kernel set's outputs `r` compare with the device's:
    bit-exact samples, largest LSB difference, worst cosine, and the
    samples where it equals the oracle's (None when it is the oracle)."""

    n = len(dev[0]) if dev else 0
    exact = np.ones(n, bool)
    max_lsb, cos_min = 0, 1.0
    for j, t in enumerate(model.outputs):
        exact &= np.all(_flat(r[j]) == _flat(dev[j]), axis=1) if n else exact
        if scales[j] is not None and n:
            max_lsb = max(max_lsb, int(np.abs(lsb_diff(r[j], dev[j], t, scales[j])).max()))
        if n:
            c = cosine_per_sample(_flat(dequantize(r[j], t)), _flat(dequantize(dev[j], t)))
            cos_min = min(cos_min, float(c.min()))
    same_as_oracle = None
    if oracle_ref is not None and n:
        same = np.ones(n, bool)
        for j in range(len(model.outputs)):
            same &= np.all(_flat(oracle_ref[j][:n]) == _flat(r[j]), axis=1)
        same_as_oracle = int(same.sum())
    return exact, max_lsb, cos_min, same_as_oracle


def _verdict(n: int, oracle: str, matches: list[str], kernels: dict) -> str:
    if not n:
        return "no samples were compared"
    if oracle in matches:
        others = [k for k in KERNELS if kernels[k].get("available") and k not in matches]
        verdict = f"the device matches the {KERNEL_LABELS[oracle]} bit-exactly: no drift of its own"
        if others:
            verdict += (
                "; "
                + ", ".join(KERNEL_LABELS[k] for k in others)
                + " differ — a difference between host kernels, not the device's"
            )
        return verdict
    if matches:
        return (
            f"the device matches the {', '.join(KERNEL_LABELS[k] for k in matches)} bit-exactly but not "
            f"the oracle ({KERNEL_LABELS[oracle]}): the difference lies between kernel implementations, "
            "not in the device's hardware"
        )
    return (
        "the device matches no host kernel set bit-exactly: the drift is the device's own "
        "(its kernels, e.g. optimised ones, its compiler or its hardware)"
    )


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
        oracle_ref = refs[oracle] if k != oracle and oracle in refs else None
        exact, max_lsb, cos_min, same_as_oracle = _kernel_match(r, dev, model, scales, oracle_ref)
        kernels[k] = {
            "label": KERNEL_LABELS[k],
            "available": True,
            "source": ref_source.get(k),
            "bit_exact_samples": int(exact.sum()),
            "bit_exact": bool(n and exact.all()),
            "max_lsb": max_lsb if any(s is not None for s in scales) else None,
            "cosine_min": cos_min if n else None,
            "same_as_oracle_samples": same_as_oracle,
        }
        if n and exact.all():
            matches.append(k)
    verdict = _verdict(n, oracle, matches, kernels)
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


def _gate(
    name: str,
    metric: str,
    j: int | None,
    op: str,
    threshold,
    value,
    *,
    partial: bool,
    samples_done: int,
    samples_planned: int,
    error: str | None,
    skip_reason: str | None = None,
) -> GateResult:
    g = GateResult(name=name, metric=metric, output=j, op=op, threshold=threshold, value=value)
    if skip_reason:
        g.status, g.message = Status.SKIPPED, skip_reason
    elif value is None:
        g.status, g.message = Status.ERROR, error or "no samples were compared"
    elif not (value >= threshold if op == ">=" else value <= threshold):
        g.status = Status.FAIL
        g.message = f"{metric} {_fmt(value)} {'<' if op == '>=' else '>'} {_fmt(threshold)}" + (
            f" (on {samples_done} of {samples_planned} samples)" if partial else ""
        )
    elif partial or error:
        g.status = Status.ERROR
        g.message = f"incomplete: {samples_done} of {samples_planned} samples" + (f" ({error})" if error else "")
    else:
        g.status, g.message = Status.PASS, f"{metric} {_fmt(value)} {op} {_fmt(threshold)}"
    return g


def _output_gates(o: dict, j: int, tag: str, gates: Gates) -> list[tuple]:
    """(name, metric, output, op, threshold, value, skip reason) of one output's gates."""
    out = []
    if gates.min_cosine is not None:
        out.append((f"{tag}cosine_min", "cosine_min", j, ">=", gates.min_cosine, o["float"]["cosine_min"], None))
    if gates.max_lsb is not None:
        lsb = o.get("lsb")
        value = lsb["max_lsb"] if lsb and o["samples"] else None
        skip = None if lsb or not o["samples"] else "no quantization step known for this output"
        out.append((f"{tag}max_lsb", "max_lsb", j, "<=", gates.max_lsb, value, skip))
    if gates.min_top1 is not None:
        cl = o.get("classifier")
        value = cl["top1_agreement"] if cl else None
        skip = None if cl or not o["samples"] else "not a class-score output"
        out.append((f"{tag}top1_agreement", "top1_agreement", j, ">=", gates.min_top1, value, skip))
    return out


def evaluate_gates(
    outputs: list[dict], gates: Gates, *, samples_done: int, samples_planned: int, error: str | None
) -> list[GateResult]:
    """One result per gate: PASS / FAIL / ERROR / SKIPPED. A gate that
    fails on the samples done is a FAIL even in a partial run (the drift is
    proven); one that passes on part of the samples is an ERROR."""
    specs = []
    for j, o in enumerate(outputs):
        specs += _output_gates(o, j, f"output{j}." if len(outputs) > 1 else "", gates)
    if not outputs:  # nothing compared at all (the run failed before the first sample)
        for metric, op, thr in (
            ("cosine_min", ">=", gates.min_cosine),
            ("max_lsb", "<=", gates.max_lsb),
            ("top1_agreement", ">=", gates.min_top1),
        ):
            if thr is not None:
                specs.append((metric, metric, None, op, thr, None, None))
    ctx = {
        "partial": samples_done < samples_planned,
        "samples_done": samples_done,
        "samples_planned": samples_planned,
        "error": error,
    }
    return [_gate(*s[:6], skip_reason=s[6], **ctx) for s in specs]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# --------------------------------------------------------------------------- the run


def _check_settings(
    gates: Gates, reference: str, worst_k: int, port: str, board: str | None, timeout: float, retries: int, baud: int
) -> None:
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
        load_board(board)  # an unknown id is a ConfigError now, not after the handshake


@dataclass
class _Run:
    """What one run holds while it goes: the model, the data, the session
    and the device's outputs so far."""

    port: str
    model_path: str | os.PathLike
    reference: str
    baud: int
    mbytes: bytes = b""
    info: ModelInfo | None = None
    vd: ValidationData | None = None
    session: object = None
    dev_out: list[list[np.ndarray]] = field(default_factory=list)
    per_sample: list[dict] = field(default_factory=list)
    profile: bool = False  # every sample traced (asked, and the device traces)
    traces: list = field(default_factory=list)  # TraceResult per sample, when profile


def _settings(port, model, data, samples, reference, baud, timeout, retries, gates: Gates, worst_k, board, **asked):
    return {
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
        **asked,
    }


def _new_report(settings: dict) -> ValidationReport:
    return ValidationReport(
        schema=SCHEMA,
        tool={"name": "tinyhil", "version": __version__, "command": "validate"},
        settings=settings,
        started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _load_model_and_data(rep: ValidationReport, run: _Run, data, samples: int | None) -> None:
    run.mbytes = read_model_bytes(run.model_path)
    info = run.info = inspect_bytes(run.mbytes, Path(run.model_path))
    rep.model = {
        "path": str(run.model_path),
        "sha256": info.sha256,
        "size": info.size,
        "inputs": [t.to_dict() for t in info.inputs],
        "outputs": [t.to_dict() for t in info.outputs],
        "ops": list(info.builtin_ops),
    }
    vd = run.vd = load_data(data, info, samples)
    rep.samples_planned = vd.samples
    rep.data = {
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


def _check_device(rep: ValidationReport, run: _Run, board: str | None) -> None:
    """The handshake: the device must be the board asked for and hold this model."""

    dinfo = run.session.handshake()
    rep.device = dinfo.to_dict() if hasattr(dinfo, "to_dict") else None
    if board is not None and getattr(dinfo, "board", board) != board:
        raise DeviceError(
            f"the device at {run.port} is a {dinfo.board} board, not {board}",
            "check which board is on this port (`hil ports`), or pass its --board",
        )
    diffs = check_device_matches(dinfo, run.info)
    if diffs:
        raise DeviceError(
            f"the device at {run.port} holds another model or tensor layout: " + "; ".join(diffs),
            f"flash {Path(run.model_path).name} to it (hil flash), or pass the --model it holds",
        )


def _host_references(rep: ValidationReport, run: _Run, progress) -> None:
    """Every reference the data lacks, computed on the host; the reference
    kernels fall back to another set when they cannot run the model."""
    vd = run.vd
    missing = [k for k in KERNELS if k not in vd.refs]
    task = progress.task("host references", total=vd.samples * len(missing)) if missing else None
    complete_references(run.mbytes, run.info, vd, task=task)
    if task is not None:
        task.close()
    if run.reference not in vd.refs:
        fallback = next((k for k in KERNELS if k in vd.refs), None)
        if fallback is None:
            raise DataError(
                "no host kernel set can run this model, so there is no reference",
                "check the model's operators (hil codegen lists them)",
            )
        vd.notes.append(f"{KERNEL_LABELS[run.reference]} unavailable: {KERNEL_LABELS[fallback]} are the reference")
        run.reference = fallback
    rep.settings["reference_used"] = run.reference
    rep.data["references"] = dict(vd.ref_source)


def _stream_samples(rep: ValidationReport, run: _Run, progress) -> None:
    """Every sample through the device, with its timing and link counters."""
    vd, info, session = run.vd, run.info, run.session
    line_rate = (getattr(info, "line_baud", 0) or run.baud) / 10.0  # 8N1: ten bits a byte, per direction
    task = progress.task("device", total=vd.samples)
    st = session.stats
    b0s, b0r, t0 = st.bytes_sent, st.bytes_received, time.monotonic()
    # a version-2 device overlaps the samples on the link (harness/protocol/session.py)
    stream = getattr(session, "infer_stream", None)
    inputs = (device_inputs(vd, info, i) for i in range(vd.samples))
    if run.profile:
        results = _traced(session, inputs, run.traces)
    else:
        results = stream(inputs) if stream is not None else map(session.infer, inputs)
    for i, res in enumerate(results):
        run.dev_out.append([np.asarray(y).reshape(t.shape) for y, t in zip(res.outputs, info.outputs)])
        run.per_sample.append(
            {
                "invoke_us": int(res.invoke_us),
                "cycles": int(res.cycles),
                "retransmits": int(getattr(res, "retransmits", 0)),
                "resyncs": int(getattr(res, "resyncs", 0)),
            }
        )
        rep.samples_done = i + 1
        dt = max(time.monotonic() - t0, 1e-9)
        sent, recv = st.bytes_sent - b0s, st.bytes_received - b0r
        task.advance(
            1,
            samples_per_s=(i + 1) / dt,
            bytes_per_s=(sent + recv) / dt,
            line_fraction=max(sent, recv) / dt / line_rate if line_rate else 0.0,
        )
    task.close()


def _traced(session, inputs, traces: list):
    """Each sample with the per-operator trace on (one invoke each, no
    overlap on the link): its result, the trace kept in `traces`."""
    for xs in inputs:
        tr = session.trace(xs)
        traces.append(tr)
        yield tr.result


def _snapshot_link(rep: ValidationReport, run: _Run) -> None:
    """The link counters and device logs of the validation proper (before
    any localization traces)."""
    session = run.session
    if session is None:
        return
    rep.link = _link(session, getattr(getattr(session, "info", None), "line_baud", 0) or run.baud)
    rep.device_logs = [{"level": lv, "text": tx} for lv, tx in list(getattr(session, "logs", []))[-50:]]


def _close_session(run: _Run) -> None:
    session = run.session
    if session is None:
        return
    try:
        session.close()
    except Exception:  # noqa: BLE001 - a port that died must not hide the result
        pass


def _record_outcome(rep: ValidationReport, run: _Run) -> None:
    """How far the run got, and why it stopped if it did."""
    n = len(run.dev_out)
    rep.samples_done = n
    rep.partial = n < rep.samples_planned or (n == 0 and rep.error is not None)
    if rep.error is not None:
        rep.error_info = ErrorInfo.of(rep.error)
    elif rep.interrupted:
        rep.error_info = ErrorInfo("Interrupted", f"interrupted after {n} of {rep.samples_planned} samples")


def _compare_and_gate(rep: ValidationReport, run: _Run, gates: Gates, worst_k: int) -> None:
    n, vd = len(run.dev_out), run.vd
    if n and vd is not None and run.reference in vd.refs:
        dev = rep.device or {}
        _compare_into(
            rep,
            run,
            worst_k,
            host_time=bool(dev.get("invoke_us_is_host_time")),
            cpu_hz=dev.get("cpu_hz", 0),
            cycles_real=bool(dev.get("flags", 0) & 1),
        )
    if vd is not None:
        rep.notes = list(vd.notes)
    rep.gates = evaluate_gates(
        rep.outputs,
        gates,
        samples_done=n,
        samples_planned=rep.samples_planned,
        error=rep.error_info.message if rep.error_info else None,
    )


def _localization_samples(rep: ValidationReport, n: int) -> list[int]:
    """The `n` worst samples, drifting ones first (the worst-sample order)."""
    rows = sorted(rep.samples, key=lambda r: (-(r["max_lsb"] or 0), r["cosine"], r["index"]))
    return [r["index"] for r in rows[:n]]


def _localize_phase(rep: ValidationReport, run: _Run, n: int | None) -> None:
    """Per-operator localization (harness.localize) of the worst samples:
    when asked (`n`), or for the worst one when a gate failed and the device
    traces. A failure here is noted in the section, never the run's status."""
    failed = any(g.status is Status.FAIL for g in rep.gates)
    info = getattr(run.session, "info", None)
    if run.session is None or not rep.samples or not (n or failed):
        return
    trigger = "asked" if n else "gate failed"
    sec: dict = {"trigger": trigger, "reference": "tflm", "samples": [], "summary": None, "error": None}
    rep.localization = sec
    if info is None or not getattr(info, "traces", False):
        sec["error"] = "the device has no per-operator trace (INFO features lack TRACE)"
        return
    try:
        for i in _localization_samples(rep, n or 1):
            done = run.traces[i] if i < len(run.traces) else None
            loc = localize_on_device(run.session, run.mbytes, device_inputs(run.vd, run.info, i), sample=i, trace=done)
            sec["samples"].append({**loc.to_dict(), "line": loc.line()})
    except HilError as exc:
        sec["error"] = exc.message if hasattr(exc, "message") else str(exc)
    sec["tick_hz"] = int(getattr(info, "tick_hz", 0) or 0)
    sec["ticks_are_host_time"] = bool((rep.device or {}).get("invoke_us_is_host_time"))
    sec["clock"] = clock_of(info)
    if sec["samples"]:
        first = sec["samples"][0]
        sec["summary"] = first["line"]


def _profile_phase(rep: ValidationReport, run: _Run, asked: bool) -> None:
    """Per-operator time (harness.profile.summarize) of what was traced:
    every sample with `profile`, else the localization's traces."""
    info = getattr(run.session, "info", None)
    loc = [s for s in (rep.localization or {}).get("samples", []) if s["ops"]]
    if run.traces:
        source = "every sample"
        ticks = [[int(t) for t in tr.ticks] for tr in run.traces]
        invoke_us = [int(tr.result.invoke_us) for tr in run.traces]
    elif loc:
        source = f"the localization trace{'s' if len(loc) > 1 else ''} ({len(loc)} sample{'s' if len(loc) > 1 else ''})"
        ticks = [[o["ticks"] for o in s["ops"]] for s in loc]
        invoke_us = [rep.samples[s["sample"]]["invoke_us"] for s in loc if s["sample"] < len(rep.samples)]
    else:
        if asked:
            why = "the device has no per-operator trace (INFO features lack TRACE)" if info else "no sample was traced"
            rep.profile = {"source": None, "error": why}
        return
    rep.profile = {
        "source": source,
        "error": None,
        **summarize(model_ops(run.mbytes), ticks, invoke_us, clock_of(info)),
    }


def _finish_status(rep: ValidationReport) -> None:
    statuses = {g.status for g in rep.gates}
    if Status.FAIL in statuses:
        rep.status = Status.FAIL
    elif rep.error_info is not None or rep.partial or Status.ERROR in statuses:
        rep.status = Status.ERROR
    else:
        rep.status = Status.PASS


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
    localize: int | None = None,
    profile: bool = False,
) -> ValidationReport:
    """Validate the device at `port` (any pyserial URL) against the host.

    `board`: the board id the device must report in its handshake (a lab rig
    with many boards checks it talks to the one it means).

    Never raises a `HilError` or `KeyboardInterrupt` once started: they end
    the run with a report whose status is "error" (and `partial` when some
    samples were done). Bad settings (`ConfigError`) raise at once.

    `localize`: trace the N worst samples operator by operator and name the
    first that diverges from the host; without it the worst sample is traced
    when a gate fails and the device has the trace.

    `profile`: run every sample with the device's per-operator trace on, so
    the report's `profile` section has each operator's time over all samples
    (one invoke per sample, not overlapped on the link); without it the
    section comes from the localization traces, when there are any."""
    if localize is not None and localize < 0:
        raise ConfigError(f"localize {localize} is negative", "use a number of samples, e.g. 1")
    _check_settings(gates, reference, worst_k, port, board, timeout, retries, baud)
    if session_factory is None:
        session_factory = DeviceSession

    progress = progress or NullProgress()
    t_start = time.monotonic()
    rep = _new_report(
        _settings(
            port,
            model,
            data,
            samples,
            reference,
            baud,
            timeout,
            retries,
            gates,
            worst_k,
            board,
            localize=localize,
            profile=bool(profile),
        )
    )
    run = _Run(port=port, model_path=model, reference=reference, baud=baud)
    try:
        try:
            _load_model_and_data(rep, run, data, samples)
            run.session = session_factory(port, baudrate=baud, timeout=timeout, retries=retries, on_log=on_log)
            _check_device(rep, run, board)
            run.profile = bool(profile) and bool(getattr(getattr(run.session, "info", None), "traces", False))
            _host_references(rep, run, progress)
            _stream_samples(rep, run, progress)
        except KeyboardInterrupt:
            rep.interrupted = True
        except HilError as exc:
            rep.error = exc
        finally:
            _snapshot_link(rep, run)
        _record_outcome(rep, run)
        _compare_and_gate(rep, run, gates, worst_k)
        if rep.error is None and not rep.interrupted:
            _localize_phase(rep, run, localize)
            _profile_phase(rep, run, bool(profile))
    except KeyboardInterrupt:  # a second Ctrl-C while comparing: report what is known
        rep.interrupted = rep.partial = True
        rep.error_info = rep.error_info or ErrorInfo("Interrupted", "interrupted")
    finally:
        _close_session(run)
    _finish_status(rep)
    rep.duration_s = round(time.monotonic() - t_start, 3)
    return rep


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


def _sample_rows(outs: list[dict], labels: np.ndarray | None, per_dev: list[dict]) -> list[dict]:
    """One row a sample: worst cosine and LSB over the outputs, argmax, label, timing."""
    rows = []
    lsb_known = any(o["_max_lsb"] is not None for o in outs)
    o0 = outs[0]
    for i in range(len(per_dev)):
        row = {
            "index": i,
            "cosine": float(min(o["_cosine"][i] for o in outs)),
            "max_lsb": int(max(o["_max_lsb"][i] for o in outs if o["_max_lsb"] is not None)) if lsb_known else None,
            "bit_exact": bool(all(o["_exact"][i] for o in outs)),
        }
        if "_argmax_ref" in o0:
            row["top1_reference"], row["top1_device"] = int(o0["_argmax_ref"][i]), int(o0["_argmax_dev"][i])
            row["flip"] = row["top1_reference"] != row["top1_device"]
        if labels is not None:
            row["label"] = int(labels[i])
        row.update(per_dev[i])
        rows.append(row)
    return rows


def _timing(per_dev: list[dict], *, host_time: bool, cpu_hz: int, cycles_real: bool) -> dict:
    us = [r["invoke_us"] for r in per_dev]
    cyc = [r["cycles"] for r in per_dev]
    return {
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


def _compare_into(
    rep: ValidationReport, run: _Run, worst_k: int, *, host_time: bool, cpu_hz: int, cycles_real: bool
) -> None:
    """Device against reference: per output, per sample, triangulation, timing."""
    info, vd, n = run.info, run.vd, len(run.dev_out)
    dev = [np.stack([s[j] for s in run.dev_out]).astype(t.np_dtype, copy=False) for j, t in enumerate(info.outputs)]
    ref = [r[:n] for r in vd.refs[run.reference]]
    scales = lsb_scales(run.mbytes, info, ref)
    task = (vd.meta.get("task") or "").lower()
    class_names = vd.meta.get("class_names") or ()
    classifier = task == "classification" or (not task and len(info.outputs) == 1 and info.outputs[0].size > 1)
    outs = []
    for j, t in enumerate(info.outputs):
        o = compare_output(
            ref[j], dev[j], t, scales[j], classifier=classifier, labels=vd.labels, class_names=class_names
        )
        outs.append(
            {"index": j, "name": t.name, "dtype": t.dtype, "shape": list(t.shape), "reference": run.reference, **o}
        )
    rows = _sample_rows(outs, vd.labels, run.per_sample)
    order = sorted(range(n), key=lambda i: (-(rows[i]["max_lsb"] or 0), rows[i]["cosine"], i))
    rep.worst_samples = [rows[i] for i in order[:worst_k] if not rows[i]["bit_exact"]]
    rep.samples = rows
    rep.outputs = [public(o) for o in outs]
    rep.triangulation = triangulate(vd.refs, dev, info, scales, run.reference, vd.ref_source)
    rep.timing = _timing(run.per_sample, host_time=host_time, cpu_hz=cpu_hz, cycles_real=cycles_real)
