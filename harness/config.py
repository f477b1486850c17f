"""The model config (`<stem>_model_config.json`): where it is found, how it is
read, and what the stages take from it — class names, input shape, signal
channels, training data, task and the normalization constants.

convert, codegen, data and the PlatformIO pre-build script
(firmware/scripts/hil_model.py) all use this module, so a config is found
and understood the same way everywhere. Keep it free of heavy imports: the
pre-build script imports it inside SCons.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import ConfigError

CONFIG_SUFFIX = "_model_config.json"
# The suffixes the pipeline adds to a model's stem (gesture -> gesture_quantized.tflite):
# a config is also looked for under the stem without them.
PIPELINE_SUFFIXES = ("_quantized", "_quant", "_int8", "_float32", "_float", "_dynamic")
_MISSING_HINT = "check --model_config, or leave it out to use <stem>_model_config.json"


# --------------------------------------------------------------------------- finding and reading


def find_model_config(model_path: str | os.PathLike) -> Path | None:
    """`<stem>_model_config.json` beside the model (a `.keras` or a
    `.tflite`), also with the pipeline's suffixes taken off the stem."""
    model_path = Path(model_path)
    stems = [model_path.stem]
    s = model_path.stem
    for suf in PIPELINE_SUFFIXES:
        if s.endswith(suf):
            s = s[: -len(suf)]
            stems.append(s)
    for stem in stems:
        cand = model_path.with_name(f"{stem}{CONFIG_SUFFIX}")
        if cand.is_file():
            return cand
    return None


def resolve_model_config(given: str | os.PathLike | None, model_path: str | os.PathLike) -> Path | None:
    """The config given (it must exist), else the one found beside the model, else None."""
    if given is None or str(given) == "":
        return find_model_config(model_path)
    path = Path(given)
    if not path.is_file():
        raise ConfigError(f"model config {path} does not exist", _MISSING_HINT)
    return path


def read_config(path: str | os.PathLike) -> dict:
    """The config's JSON object."""
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"model config {path} does not exist", _MISSING_HINT) from exc
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


# --------------------------------------------------------------------------- normalization


def _pick_mean_std(d) -> tuple | None:
    if not isinstance(d, dict):
        return None
    for mk, sk in (
        ("mean", "std"),
        ("mean", "stddev"),
        ("mean", "scale"),
        ("input_mean", "input_std"),
        ("norm_mean", "norm_std"),
    ):
        if d.get(mk) is not None and d.get(sk) is not None:
            return d[mk], d[sk]
    return None


def normalization_constants(cfg: dict, path: str | os.PathLike | None) -> tuple[list[float], list[float]] | None:
    """Mean and std of a config. Accepted, first match wins:
    `normalization: {mean, std}`, `preprocessing: {mean, std}` or
    `preprocessing: {normalization: {mean, std}}`, top-level `mean`/`std`,
    `input_mean`/`input_std` or `norm_mean`/`norm_std`. Each is a number or
    a (nested) list of numbers; `stddev`/`scale` are accepted for `std`."""
    pre = cfg.get("preprocessing")
    found = (
        _pick_mean_std(cfg.get("normalization"))
        or _pick_mean_std(pre)
        or _pick_mean_std(pre.get("normalization") if isinstance(pre, dict) else None)
        or _pick_mean_std(cfg)
    )
    if found is None:
        return None
    try:
        mean = [float(v) for v in np.ravel(np.asarray(found[0], dtype=np.float64))]
        std = [float(v) for v in np.ravel(np.asarray(found[1], dtype=np.float64))]
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model config {path}: mean/std are not numbers", "write them as a number or a list of numbers"
        ) from exc
    if not mean or not std:
        return None
    if len(mean) != len(std):
        if len(mean) == 1:
            mean = mean * len(std)
        elif len(std) == 1:
            std = std * len(mean)
        else:
            raise ConfigError(
                f"model config {path}: mean has {len(mean)} values, std {len(std)}",
                "they must have the same length (or one of them a single value)",
            )
    if any(not math.isfinite(v) for v in mean):
        raise ConfigError(
            f"model config {path}: mean has a non-finite value (NaN or infinity)", "fix the normalization constants"
        )
    if any(v == 0.0 or not math.isfinite(v) for v in std):
        raise ConfigError(f"model config {path}: std has a zero or non-finite value", "fix the normalization constants")
    return mean, std


def read_normalization(config_path: str | os.PathLike) -> tuple[list[float], list[float]] | None:
    """`normalization_constants` of the config file at `config_path`."""
    return normalization_constants(read_config(config_path), config_path)


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

    A config with mean/std (any spelling `normalization_constants` accepts)
    means: the model expects normalized input and the stored data is raw. Set
    `normalization.in_model: true` when the model normalizes itself, or
    `normalization.data_normalized: true` when the stored data already is."""
    if config_path is None:
        return None
    norm = config.get("normalization")
    if isinstance(norm, dict) and (norm.get("in_model") or norm.get("data_normalized")):
        return None
    found = normalization_constants(config, config_path)
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


# --------------------------------------------------------------------------- the config as convert reads it


@dataclass(frozen=True)
class ModelConfig:
    """A model config and its checked fields; `path` None means there was
    none (every field is then empty)."""

    path: Path | None
    raw: dict = field(default_factory=dict)

    @classmethod
    def load(cls, given: str | os.PathLike | None, model_path: str | os.PathLike) -> ModelConfig:
        path = resolve_model_config(given, model_path)
        return cls(path, read_config(path) if path else {})

    @property
    def task(self) -> str | None:
        return self.raw.get("task")

    def class_names(self) -> list[str] | None:
        names = self.raw.get("class_names") or None
        if names is not None and (not isinstance(names, list) or not all(isinstance(c, str) for c in names)):
            raise ConfigError(f"model config {self.path}: class_names must be a list of strings", "fix the config")
        return names

    def input_shape(self) -> tuple[int, ...] | None:
        if self.raw.get("input_shape") is None:
            return None
        try:
            return tuple(int(d) for d in self.raw["input_shape"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"model config {self.path}: input_shape is not a list of integers", "fix the config"
            ) from exc

    def signal_channels(self) -> int:
        v = self.raw.get("signal_channels", 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(
                f"model config {self.path}: signal_channels must be a positive integer, not {v!r}",
                "give the number of interleaved channels of a flattened sample (e.g. 3 for x, y, z)",
            )
        return v

    def training_data(self) -> Path | None:
        """`training_data.path`, relative to the config, when it exists."""
        td = self.raw.get("training_data")
        if self.path is None or not isinstance(td, dict) or not td.get("path"):
            return None
        cand = (self.path.parent / str(td["path"])).resolve()
        return cand if cand.exists() else None

    def normalization_for(self, input_shape: Sequence[int]) -> Normalization | None:
        return normalization_for(self.raw, self.path, input_shape)
