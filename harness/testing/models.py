"""Tiny models for the protocol/simulator tests (built once per session).

Kept tiny on purpose: the tests are about the link, not the model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def build_tiny_models(folder: Path) -> dict[str, Path]:
    """`float_io`: int8 model with float32 input (1, 300) and output (1, 5),
    the product's default; `int8_io`: the same with int8 input/output;
    `two_outputs`: float model with two outputs of different sizes."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input((300,), batch_size=1)
    x = tf.keras.layers.Dense(16, activation="relu")(inp)
    out = tf.keras.layers.Dense(5, activation="softmax")(x)
    m = tf.keras.Model(inp, out)
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(16):
            yield [rng.normal(size=(1, 300)).astype(np.float32)]

    paths = {}
    for name, int8_io in (("float_io", False), ("int8_io", True)):
        conv = tf.lite.TFLiteConverter.from_keras_model(m)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        p = folder / f"{name}.tflite"
        p.write_bytes(conv.convert())
        paths[name] = p
    inp = tf.keras.Input((40, 3), batch_size=1)
    a = tf.keras.layers.Flatten()(inp)
    o1 = tf.keras.layers.Dense(3000)(a)  # a 12000-byte output: several READs
    o2 = tf.keras.layers.Dense(2)(a)
    m2 = tf.keras.Model(inp, [o1, o2])
    p = folder / "two_outputs.tflite"
    p.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m2).convert())
    paths["two_outputs"] = p
    return paths


def random_inputs(info, rng: np.random.Generator) -> list[np.ndarray]:
    """One sample for a model's inputs (harness.model.TensorInfo list)."""
    out = []
    for t in info:
        if t.dtype == "float32":
            out.append(rng.normal(size=t.shape).astype(np.float32))
        else:
            ii = np.iinfo(t.np_dtype)
            out.append(rng.integers(ii.min, ii.max + 1, size=t.shape).astype(t.np_dtype))
    return out


_BUILT: dict[str, Path] = {}


def tiny_models() -> dict[str, Path]:
    """`build_tiny_models` once per test process (shared by the test files)."""
    if not _BUILT:
        import tempfile

        _BUILT.update(build_tiny_models(Path(tempfile.mkdtemp(prefix="hil-sim-models-"))))
    return dict(_BUILT)
