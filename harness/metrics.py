"""Agreement metrics between two sets of outputs (reference vs candidate).

Used by `convert` (Keras vs TFLite) and `validate` (host vs device). Plain
NumPy; every metric is computed per sample on the flattened output and then
summarised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def _flat(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a.reshape(a.shape[0], -1)


def cosine_per_sample(ref, cand) -> np.ndarray:
    r, c = _flat(ref), _flat(cand)
    num = np.sum(r * c, axis=1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
    out = np.ones(len(r))
    nz = den > 0
    out[nz] = num[nz] / den[nz]
    # Two all-zero vectors agree; one zero vector against a non-zero does not.
    out[~nz] = np.where(np.all(r[~nz] == c[~nz], axis=1), 1.0, 0.0)
    return np.clip(out, -1.0, 1.0)


def pearson(ref, cand) -> float:
    r, c = np.asarray(ref, np.float64).ravel(), np.asarray(cand, np.float64).ravel()
    if r.size < 2 or np.std(r) == 0 or np.std(c) == 0:
        return 1.0 if np.array_equal(r, c) else 0.0
    return float(np.corrcoef(r, c)[0, 1])


@dataclass
class Agreement:
    samples: int
    cosine_mean: float
    cosine_min: float
    mse: float
    mae: float
    max_abs_error: float
    pearson_r: float
    top1_agreement: float | None  # None when the output is not a class vector
    worst_samples: list[int]  # lowest cosine first
    per_sample_cosine: list[float]

    def to_dict(self, per_sample: bool = False) -> dict:
        d = asdict(self)
        if not per_sample:
            d.pop("per_sample_cosine")
        return d


def agreement(ref, cand, worst_k: int = 5, classifier: bool | None = None) -> Agreement:
    """Compare `cand` with `ref` (first axis = samples)."""
    r, c = _flat(ref), _flat(cand)
    if r.shape != c.shape:
        raise ValueError(f"shape mismatch: {r.shape} vs {c.shape}")
    cos = cosine_per_sample(r, c)
    diff = c - r
    if classifier is None:
        classifier = r.shape[1] > 1
    top1 = float(np.mean(np.argmax(r, 1) == np.argmax(c, 1))) if classifier and len(r) else None
    order = np.argsort(cos, kind="stable")[:worst_k]
    return Agreement(
        samples=int(len(r)),
        cosine_mean=float(np.mean(cos)) if len(r) else 1.0,
        cosine_min=float(np.min(cos)) if len(r) else 1.0,
        mse=float(np.mean(diff**2)) if diff.size else 0.0,
        mae=float(np.mean(np.abs(diff))) if diff.size else 0.0,
        max_abs_error=float(np.max(np.abs(diff))) if diff.size else 0.0,
        pearson_r=pearson(r, c),
        top1_agreement=top1,
        worst_samples=[int(i) for i in order],
        per_sample_cosine=[float(x) for x in cos],
    )
