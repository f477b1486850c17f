"""The validation data: the `<stem>_validation_data.npz` that `convert` writes
(inputs, host reference outputs, labels and a JSON `meta`; the format in
docs/convert.md) and `validate` reads, or any `.npz`/`.npy` of inputs.

This module is the only one that reads or writes those files; the arrays
themselves are loaded by `harness.arrays` (no pickles, corrupt files are a
`DataError`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import __version__
from harness.arrays import load_npy, load_npz
from harness.errors import ConfigError, DataError
from harness.model import ModelInfo, TensorInfo
from harness.runtime import KERNELS, quantize

NPZ_FORMAT = "tinyhil-validation/1"
NPY_MAGIC = b"\x93NUMPY"


def npz_path_for(tflite: str | os.PathLike) -> Path:
    """Where `convert` puts the validation data of a `.tflite`."""
    tflite = Path(tflite)
    return tflite.with_name(f"{tflite.stem}_validation_data.npz")


# --------------------------------------------------------------------------- writing


def write_npz(target: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write arrays and `meta` (stored as a 0-d JSON string) to `target`,
    which the caller has made a temporary path (writes are atomic there)."""
    full = {"format": NPZ_FORMAT, **meta, "created_by": f"tinyhil {__version__} convert"}
    with open(target, "wb") as f:
        np.savez(f, **arrays, meta=np.array(json.dumps(full)))


# --------------------------------------------------------------------------- reading


def _parse_meta(arrays: dict[str, np.ndarray], path: Path) -> dict:
    if "meta" not in arrays:
        return {}
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: its 'meta' entry is not JSON", "re-run `hil convert` to write it again") from exc
    return meta if isinstance(meta, dict) else {}


def read_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the parsed `meta` of validation data: a `hil convert`
    npz, any `.npz`, or an `.npy` of inputs (returned as `x`, no meta).
    An `.npy` is known by its content, whatever its name."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"validation data {path} does not exist",
            "pass the _validation_data.npz written by `hil convert`, or an .npz/.npy of inputs",
        )
    if path.is_dir():
        raise DataError(f"validation data {path} is a folder", "pass an .npz or .npy file")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"cannot read validation data {path}: {exc.strerror}", "check the file") from exc
    if magic == NPY_MAGIC:
        return {"x": load_npy(path, what="validation data")}, {}
    arrays = load_npz(path, what="validation data")
    return arrays, _parse_meta(arrays, path)


def load_validation_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the parsed `meta` of a `_validation_data.npz` written
    by `hil convert` (anything else is a `DataError`)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"validation data {path} does not exist", "run `hil convert` first")
    arrays = load_npz(path, what="validation data")
    if "meta" not in arrays or "x" not in arrays:
        raise DataError(
            f"{path} is not a tinyhil validation file (no 'x'/'meta')", "pass the npz written by `hil convert`"
        )
    return arrays, _parse_meta(arrays, path)


# --------------------------------------------------------------------------- aligning with a model


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


def _inputs(arrays: dict, model: ModelInfo, path: Path) -> tuple[list[np.ndarray], list[str]]:
    raw_inputs, keys = _input_arrays(arrays, model, path)
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
    return inputs, keys


def _references(
    arrays: dict, meta: dict, model: ModelInfo, n: int, path: Path, notes: list[str]
) -> dict[str, list[np.ndarray]]:
    """The host references stored in the file, unless it was written for another model."""
    file_sha = meta.get("model_sha256")
    if file_sha and file_sha != model.sha256:
        notes.append(
            f"{path.name} was written for model sha256 {file_sha[:16]}…, not this one "
            f"({model.sha256[:16]}…): its reference outputs are ignored and computed on the host"
        )
        return {}
    refs = {}
    for k in KERNELS:
        names = [f"y_{k}"] if len(model.outputs) == 1 else [f"y_{k}_{i}" for i in range(len(model.outputs))]
        if all(name in arrays for name in names):
            refs[k] = [
                _fit_reference(arrays[name], t, n, f"{path.name}['{name}']") for name, t in zip(names, model.outputs)
            ]
    return refs


def _labels(arrays: dict, n: int, path: Path, notes: list[str]) -> np.ndarray | None:
    if "y" not in arrays:
        return None
    y = np.asarray(arrays["y"])
    if y.ndim == 1 and len(y) >= n and y.dtype.kind in "iu":
        return y[:n].astype(np.int64)
    notes.append(f"{path.name}['y'] is not one integer label per sample; labels are not used")
    return None


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
    arrays, meta = read_arrays(path)
    inputs, keys = _inputs(arrays, model, path)
    notes: list[str] = []
    available = len(inputs[0])
    n = available if samples is None else min(int(samples), available)
    if samples is not None and samples > available:
        notes.append(f"--samples {samples} asked for more than the {available} in {path.name}; all are used")
    refs = _references(arrays, meta, model, n, path, notes)
    return ValidationData(
        path=path,
        inputs=[a[:n] for a in inputs],
        refs=refs,
        ref_source={k: "file" for k in refs},
        labels=_labels(arrays, n, path, notes),
        meta=meta,
        available=available,
        input_keys=keys,
        notes=notes,
    )
