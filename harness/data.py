"""Training data for `convert`: loading the supported layouts, checking the
samples, the signal-level filter, and the stratified, seeded split into
calibration (representative dataset) and held-out validation samples.

Layouts read by `load_dataset`:

- a folder of class sub-folders, each holding `.npy` files (one sample a
  file, or a stack of samples with a leading axis); a folder of `.npy` files
  without sub-folders is unlabeled data;
- an `.npz` with `x` (or `X`) and optionally `y` (and `class_names`);
- an `X.npy` + `y.npy` pair (pass the folder or the `X.npy`; `y.npy` is optional).

Labels may be integers, one-hot rows or strings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import ConfigError, DataError

LAYOUTS = ("class_folders", "npy_folder", "npz", "xy_npy")


@dataclass
class Dataset:
    """Raw samples as stored (never normalized here)."""

    x: np.ndarray  # (N, *sample_shape) float32
    y: np.ndarray | None  # (N,) int64 indices into class_names, or None
    class_names: tuple[str, ...]
    layout: str
    source: Path
    sample_ids: list[str] = field(default_factory=list)  # file name or "X.npy[i]" per sample

    def __len__(self) -> int:
        return int(len(self.x))

    def sample_id(self, i: int) -> str:
        return self.sample_ids[i] if self.sample_ids else f"{self.source.name}[{i}]"

    def label_name(self, i: int) -> str | None:
        if self.y is None:
            return None
        k = int(self.y[i])
        return self.class_names[k] if 0 <= k < len(self.class_names) else str(k)


# --------------------------------------------------------------------------- loading


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    from harness.arrays import load_npy  # headers checked before allocating; corrupt != missing

    return load_npy(path, what="training data")


def _fit_shape(x: np.ndarray, input_shape: tuple[int, ...] | None, what: str, stacked: bool) -> np.ndarray:
    """Bring (N, ...) samples to (N, *input_shape); size-1 axes may differ."""
    if input_shape is None:
        return x
    want = tuple(int(d) for d in input_shape)
    got = tuple(x.shape[1:]) if stacked else tuple(x.shape)
    if got == want:
        return x if stacked else x[None]
    size = math.prod(want)
    squeeze = lambda s: tuple(d for d in s if d != 1)  # noqa: E731
    if squeeze(got) == squeeze(want) and math.prod(got) == size:
        return x.reshape((-1, *want))
    if not stacked and x.ndim == len(want) + 1 and squeeze(x.shape[1:]) == squeeze(want):
        return x.reshape((-1, *want))
    raise DataError(
        f"{what}: sample shape {got} does not match the model input {want}",
        "check that the data belongs to this model (or its feature settings)",
    )


def _as_float(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype.kind not in "fiub":
        raise DataError(f"{what} holds {x.dtype} values, not numbers", "store samples as float arrays")
    return np.asarray(x, np.float32)


def _labels(y: np.ndarray, n: int, class_names: Sequence[str] | None, what: str):
    y = np.asarray(y)
    if len(y) != n:
        raise DataError(f"{what}: {len(y)} labels for {n} samples", "x and y must have the same length")
    if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "fiub":  # one-hot
        y = np.argmax(y, axis=1)
    y = y.reshape(n)
    if y.dtype.kind in "US":
        names = [str(v) for v in y]
        known = list(class_names) if class_names else sorted(set(names))
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise DataError(
                f"{what}: labels {unknown[:3]} are not classes of the model",
                f"the model config lists: {', '.join(known)}",
            )
        lookup = {c: i for i, c in enumerate(known)}
        return np.array([lookup[v] for v in names], np.int64), tuple(known)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{what}: labels are not whole numbers", "store class indices, one-hot rows or names")
    if y.dtype.kind not in "fiub":
        raise DataError(
            f"{what}: labels of type {y.dtype} are not understood", "store class indices, one-hot rows or names"
        )
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{what}: negative class index {int(y.min())}", "class indices start at 0")
    k = int(y.max()) + 1 if len(y) else 0
    if class_names:
        if k > len(class_names):
            raise DataError(
                f"{what}: class index {k - 1} but the model config names {len(class_names)} classes",
                "fix the labels or the config's class_names",
            )
        return y, tuple(class_names)
    return y, tuple(str(i) for i in range(k))


def _from_xy(xp: Path, yp: Path | None, input_shape, class_names, layout: str) -> Dataset:
    x = _load_npy(xp, mmap=True)
    if x.ndim < 1 or len(x) == 0:
        raise DataError(f"{xp} holds no samples", "check the training data")
    x = _fit_shape(_as_float(x, str(xp)), input_shape, str(xp), stacked=True)
    y, names = (None, tuple(class_names or ()))
    if yp is not None:
        y, names = _labels(_load_npy(yp), len(x), class_names, str(yp))
    return Dataset(
        x=np.ascontiguousarray(x),
        y=y,
        class_names=names,
        layout=layout,
        source=xp,
        sample_ids=[f"{xp.name}[{i}]" for i in range(len(x))],
    )


def _from_npz(path: Path, input_shape, class_names) -> Dataset:
    from harness.arrays import load_npz  # headers checked before allocating; corrupt != missing

    z = load_npz(path, what="training data")
    keys = set(z)
    xk = "x" if "x" in keys else ("X" if "X" in keys else None)
    if xk is None:
        raise DataError(
            f"{path} has no 'x' array (keys: {', '.join(sorted(keys)) or 'none'})",
            "store the samples under 'x' and labels under 'y'",
        )
    x = z[xk]
    if x.ndim < 1 or len(x) == 0:
        raise DataError(f"{path} holds no samples", "check the training data")
    x = _fit_shape(_as_float(x, str(path)), input_shape, str(path), stacked=True)
    names = tuple(class_names or ())
    if not names and "class_names" in keys:
        names = tuple(str(c) for c in z["class_names"])
    y = None
    yk = "y" if "y" in keys else ("Y" if "Y" in keys else None)
    if yk is not None:
        y, names = _labels(z[yk], len(x), names or None, f"{path}:{yk}")
    return Dataset(
        x=x, y=y, class_names=names, layout="npz", source=path, sample_ids=[f"{path.name}[{i}]" for i in range(len(x))]
    )


def _from_folders(root: Path, input_shape, class_names) -> Dataset:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p for p in root.glob("*.npy"))
    groups: list[tuple[str | None, list[Path]]]
    if subdirs:
        groups = [(d.name, sorted(d.rglob("*.npy"))) for d in subdirs]
        groups = [(n, f) for n, f in groups if f]
        layout = "class_folders"
    else:
        groups = [(None, loose)] if loose else []
        layout = "npy_folder"
    if not groups:
        raise DataError(
            f"training data folder {root} holds no .npy samples",
            "expected class sub-folders of .npy files, an .npz, or X.npy + y.npy",
        )
    names: list[str]
    if layout == "class_folders":
        found = [n for n, _ in groups]
        if class_names:
            unknown = [n for n in found if n not in class_names]
            if unknown:
                raise DataError(
                    f"class folder(s) {', '.join(unknown[:3])} in {root} are not classes of the model",
                    f"the model config lists: {', '.join(class_names)}",
                )
            names = list(class_names)
        else:
            names = found
    else:
        names = list(class_names or ())
    xs, ys, ids = [], [], []
    for cname, files in groups:
        for f in files:
            a = _load_npy(f)
            a = _as_float(a, str(f))
            if input_shape is None:
                a = a[None]
            else:
                stacked = a.ndim == len(input_shape) + 1 and tuple(a.shape[1:]) == tuple(input_shape)
                a = _fit_shape(a, input_shape, str(f), stacked=stacked)
            if xs and a.shape[1:] != xs[0].shape[1:]:
                raise DataError(
                    f"{f}: sample shape {a.shape[1:]} differs from {xs[0].shape[1:]}",
                    "all samples must have the same shape",
                )
            xs.append(a)
            rel = f.relative_to(root)
            ids.extend([str(rel)] if len(a) == 1 else [f"{rel}[{i}]" for i in range(len(a))])
            if cname is not None:
                ys.extend([names.index(cname)] * len(a))
    x = np.concatenate(xs).astype(np.float32, copy=False)
    y = np.asarray(ys, np.int64) if layout == "class_folders" else None
    return Dataset(x=x, y=y, class_names=tuple(names), layout=layout, source=root, sample_ids=ids)


def load_dataset(
    path: str | Path, input_shape: Sequence[int] | None = None, class_names: Sequence[str] | None = None
) -> Dataset:
    """Read training data in any supported layout; check shapes and values.

    `input_shape` is the model's input without the batch axis; samples whose
    shape differs only by size-1 axes are reshaped to it. `class_names` (from
    the model config) fixes the label order."""
    path = Path(path)
    shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
    names = list(class_names) if class_names else None
    if not path.exists():
        raise DataError(f"training data {path} does not exist", "check --data_path_train")
    if path.is_file():
        if path.suffix == ".npz":
            ds = _from_npz(path, shape, names)
        elif path.suffix == ".npy":
            yp = next((p for p in (path.with_name("y.npy"), path.with_name("Y.npy")) if p.is_file()), None)
            ds = _from_xy(path, yp, shape, names, "xy_npy")
        else:
            raise DataError(
                f"training data {path} is neither a folder, an .npz nor an .npy",
                "expected class sub-folders of .npy files, an .npz, or X.npy + y.npy",
            )
    else:
        xp = next((p for p in (path / "X.npy", path / "x.npy") if p.is_file()), None)
        npzs = sorted(path.glob("*.npz"))
        if xp is not None:
            yp = next((p for p in (path / "y.npy", path / "Y.npy") if p.is_file()), None)
            ds = _from_xy(xp, yp, shape, names, "xy_npy")
        elif len(npzs) == 1 and not any(p.is_dir() for p in path.iterdir()):
            ds = _from_npz(npzs[0], shape, names)
        else:
            ds = _from_folders(path, shape, names)
    check_finite(ds)
    return ds


def check_finite(ds: Dataset) -> None:
    flat = ds.x.reshape(len(ds.x), -1)
    bad = ~np.all(np.isfinite(flat), axis=1)
    if np.any(bad):
        idx = np.flatnonzero(bad)
        raise DataError(
            f"{len(idx)} sample(s) hold NaN or Inf, first: {ds.sample_id(int(idx[0]))}",
            "clean the data (or drop those samples) before converting",
        )


# --------------------------------------------------------------------------- normalization


@dataclass(frozen=True)
class Normalization:
    """`(x - mean) / std`, broadcast to the sample shape."""

    mean: np.ndarray
    std: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        m, s = self.mean.ravel(), self.std.ravel()
        return {"mean": m.tolist() if m.size > 1 else float(m[0]), "std": s.tolist() if s.size > 1 else float(s[0])}


def normalization_for(config: dict, config_path: Path | None, input_shape: Sequence[int]) -> Normalization | None:
    """The normalization `convert` applies to raw training data before the
    model sees it, or None.

    A config with mean/std (any spelling `hil codegen` accepts) means: the
    model expects normalized input and the stored data is raw. Set
    `normalization.in_model: true` when the model normalizes itself, or
    `normalization.data_normalized: true` when the stored data already is."""
    from harness.codegen import read_normalization

    if config_path is None:
        return None
    norm = config.get("normalization")
    if isinstance(norm, dict) and (norm.get("in_model") or norm.get("data_normalized")):
        return None
    found = read_normalization(config_path)
    if found is None:
        return None
    mean, std = (np.asarray(v, np.float32) for v in found)
    shape = tuple(int(d) for d in input_shape)
    size = math.prod(shape)

    def fit(v: np.ndarray) -> np.ndarray:
        if v.size == 1:
            return v.reshape(())
        if v.size == size:
            return v.reshape(shape)
        if shape and v.size == shape[-1]:
            return v.reshape(shape[-1])
        raise ConfigError(
            f"model config {config_path}: normalization has {v.size} values; the input has {size} "
            f"(last axis {shape[-1] if shape else 1})",
            "give one value, one per element of the last axis, or one per input element",
        )

    return Normalization(mean=fit(mean), std=fit(std))


# --------------------------------------------------------------------------- sampling


def signal_level(x: np.ndarray, channels: int = 1) -> np.ndarray:
    """Per-sample signal level: the standard deviation of the raw values over
    time, averaged over `channels` interleaved channels (a flattened
    [x0, y0, z0, x1, ...] accelerometer window has 3). A flat sample (a dead
    sensor, audio at the dB floor) has a level near 0, whatever its offset."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    channels = int(channels or 1)
    if channels < 1 or flat.shape[1] % channels:
        raise ConfigError(
            f"signal_channels {channels} does not divide the sample size {flat.shape[1]}",
            "set signal_channels in the model config to the number of interleaved channels",
        )
    return flat.reshape(len(x), -1, channels).std(axis=1).mean(axis=1)


def silent_mask(x: np.ndarray, threshold: float, channels: int = 1) -> np.ndarray:
    """True for near-silent samples: level below `threshold` × the median
    level of the data set. 0 disables the filter."""
    if threshold < 0 or not math.isfinite(threshold):
        raise ConfigError(
            f"signal threshold {threshold} must be a finite number >= 0",
            "use e.g. 0.05 (5 % of the median level), 0 to keep every sample",
        )
    level = signal_level(x, channels)
    if threshold == 0 or len(level) == 0:
        return np.zeros(len(level), bool)
    return level < threshold * float(np.median(level))


def stratified_sample(
    labels: np.ndarray | None, candidates: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """`n` indices from `candidates`, classes taking turns (balanced while a
    class has samples left), shuffled within each class. Deterministic for
    a given generator state."""
    candidates = np.asarray(candidates, np.int64)
    n = min(int(n), len(candidates))
    if n <= 0:
        return np.zeros(0, np.int64)
    if labels is None:
        return np.sort(rng.permutation(candidates)[:n])
    classes = np.unique(labels[candidates])
    pools = [list(rng.permutation(candidates[labels[candidates] == c])) for c in rng.permutation(classes)]
    picked: list[int] = []
    while len(picked) < n:
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(int(pool.pop()))
    return np.sort(np.asarray(picked, np.int64))


@dataclass
class Split:
    calibration: np.ndarray  # indices used as the representative dataset
    holdout: np.ndarray  # every usable index not used for calibration
    validation: list[np.ndarray]  # one draw per validation round, each a subset of holdout
    skipped: np.ndarray  # near-silent indices
    notes: list[str] = field(default_factory=list)


def split(
    ds: Dataset,
    num_samples: int,
    validate_samples: int,
    seed: int = 0,
    rounds: int = 1,
    signal_threshold: float = 0.05,
    min_class_samples: int = 2,
    signal_channels: int = 1,
) -> Split:
    """Drop near-silent samples, then draw the validation set and the
    calibration set from the rest, disjoint, stratified by class. When the
    data is smaller than both requests, it is shared in their proportion.
    `rounds` > 1 adds further validation draws (seeds seed+1, ...) from the
    held-out samples."""
    if num_samples < 1 or validate_samples < 1:
        raise ConfigError("--num_samples and --validate_samples must be at least 1", "use e.g. 1024 and 256")
    skipped_mask = silent_mask(ds.x, signal_threshold, signal_channels)
    usable = np.flatnonzero(~skipped_mask)
    skipped = np.flatnonzero(skipped_mask)
    notes: list[str] = []
    if ds.y is not None:
        for c in np.unique(ds.y):
            have = int(np.sum(ds.y[usable] == c))
            if have < min_class_samples:
                silent = int(np.sum(ds.y[skipped] == c))
                extra = f" ({silent} more skipped as near-silent)" if silent else ""
                raise DataError(
                    f"class '{ds.class_names[c] if c < len(ds.class_names) else c}' has {have} usable "
                    f"sample(s){extra}; at least {min_class_samples} are needed",
                    "add samples for that class (one goes to calibration, one to validation), "
                    "or lower --signal_threshold",
                )
        missing = [n for i, n in enumerate(ds.class_names) if i not in set(ds.y.tolist())]
        if missing:
            notes.append(f"no training samples for class(es): {', '.join(missing)}")
    if len(usable) < 2:
        raise DataError(
            f"only {len(usable)} usable sample(s) in {ds.source} ({len(skipped)} near-silent skipped)",
            "at least 2 are needed: one to calibrate, one to validate",
        )
    total = len(usable)
    n_val, n_cal = int(validate_samples), int(num_samples)
    if n_val + n_cal > total:
        k = len(np.unique(ds.y[usable])) if ds.y is not None else 1
        share = round(total * n_val / (n_val + n_cal))
        n_val = min(n_val, max(share, min(k, total - 1), 1))
        n_cal = min(n_cal, total - n_val)
        notes.append(f"only {total} usable samples: {n_cal} for calibration, {n_val} for validation")
    rng = np.random.default_rng(seed)
    val0 = stratified_sample(ds.y, usable, n_val, rng)
    rest = np.setdiff1d(usable, val0)
    cal = stratified_sample(ds.y, rest, n_cal, rng)
    holdout = np.setdiff1d(usable, cal)
    draws = [val0]
    for r in range(1, max(int(rounds), 1)):
        draws.append(stratified_sample(ds.y, holdout, n_val, np.random.default_rng(seed + r)))
    if rounds > 1 and len(holdout) <= n_val:
        notes.append(
            f"the {len(holdout)} held-out samples all fit one draw; the {rounds} validation rounds use the same samples"
        )
    return Split(calibration=cal, holdout=holdout, validation=draws, skipped=skipped, notes=notes)
