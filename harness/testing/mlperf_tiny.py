"""MLPerf Tiny's four reference architectures at their published sizes, with
seeded random weights, converted by `harness.convert` (INT8, float32 I/O) so
the tests can check the per-operator trace on models of real size.

Measured with TensorFlow 2.21, seed 0 (Keras parameters, BN statistics
included; `.tflite` bytes; the arena TFLM needs, as `hil codegen` measures it):

    ds_cnn             24,908 params    47,584 B   arena  24,384 B   14 operators
    resnet8            78,666           95,000            56,096     17
    mobilenet_v1_025  221,794          312,872           168,224     32
    fc_autoencoder    269,992          308,064            19,952     12
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from harness.convert import convert

# Calibration and validation samples drawn from the seeded random data: enough
# for stable activation ranges, few enough that the four convert in seconds.
CALIBRATION_SAMPLES = 32
VALIDATION_SAMPLES = 8


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


# --------------------------------------------------------------------------- the architectures
#
# As in github.com/mlcommons/tiny, benchmark/training/*/ (v1.x). The weight
# regularizers and dropout only act in training and are left out. The batch
# is fixed at 1, as on the device: with a free batch, Keras 3's Flatten
# converts to SHAPE/STRIDED_SLICE/PACK feeding the RESHAPE, which the
# reference models (converted from Keras 2) do not have.


def ds_cnn():
    """Keyword spotting: DS-CNN on 49x10 MFCCs, 12 classes."""
    tf = _tf()
    L = tf.keras.layers
    inp = tf.keras.Input((49, 10, 1), name="mfcc", batch_size=1)
    x = L.Conv2D(64, (10, 4), strides=(2, 2), padding="same")(inp)
    x = L.ReLU()(L.BatchNormalization()(x))
    for _ in range(4):
        x = L.DepthwiseConv2D((3, 3), padding="same")(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.Conv2D(64, (1, 1), padding="same")(x)
        x = L.ReLU()(L.BatchNormalization()(x))
    x = L.AveragePooling2D(pool_size=(24, 5))(x)  # (int(49/2), int(10/2)) on the 25x5 map
    x = L.Flatten()(x)
    out = L.Dense(12, activation="softmax")(x)
    return tf.keras.Model(inp, out, name="ds_cnn")


def resnet8():
    """Image classification: ResNet-8 (16/32/64 filters) on 32x32x3, 10 classes."""
    tf = _tf()
    L = tf.keras.layers

    def conv(n, k, s=1):
        return L.Conv2D(n, k, strides=s, padding="same", kernel_initializer="he_normal")

    inp = tf.keras.Input((32, 32, 3), name="image", batch_size=1)
    x = L.ReLU()(L.BatchNormalization()(conv(16, 3)(inp)))
    for n, s in ((16, 1), (32, 2), (64, 2)):
        y = L.ReLU()(L.BatchNormalization()(conv(n, 3, s)(x)))
        y = L.BatchNormalization()(conv(n, 3)(y))
        if s != 1:  # the identity path matches the stride and the filters
            x = conv(n, 1, s)(x)
        x = L.ReLU()(L.Add()([x, y]))
    x = L.AveragePooling2D(pool_size=8)(x)
    x = L.Flatten()(x)
    out = L.Dense(10, activation="softmax", kernel_initializer="he_normal")(x)
    return tf.keras.Model(inp, out, name="resnet8")


def mobilenet_v1_025():
    """Visual wake words: MobileNetV1 with alpha 0.25 on 96x96x3, 2 classes."""
    tf = _tf()
    L = tf.keras.layers
    init = "he_normal"
    inp = tf.keras.Input((96, 96, 3), name="image", batch_size=1)
    x = L.Conv2D(8, 3, strides=2, padding="same", kernel_initializer=init)(inp)
    x = L.ReLU()(L.BatchNormalization()(x))
    # (stride of the depthwise conv, filters of the pointwise conv), 13 blocks
    blocks = [(1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128)] + [(1, 128)] * 5 + [(2, 256), (1, 256)]
    for s, n in blocks:
        x = L.DepthwiseConv2D(3, strides=s, padding="same", depthwise_initializer=init)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.Conv2D(n, 1, padding="same", kernel_initializer=init)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
    x = L.AveragePooling2D(pool_size=3)(x)
    x = L.Flatten()(x)
    out = L.Dense(2, activation="softmax")(x)
    return tf.keras.Model(inp, out, name="mobilenet_v1_025")


def fc_autoencoder():
    """Anomaly detection: the fully connected autoencoder on 640 values
    (5 frames of 128 log-mel bands), 128 x4, bottleneck 8, 128 x4, 640."""
    tf = _tf()
    L = tf.keras.layers
    inp = tf.keras.Input((640,), name="frames", batch_size=1)
    x = inp
    for n in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = L.ReLU()(L.BatchNormalization()(L.Dense(n)(x)))
    out = L.Dense(640)(x)
    return tf.keras.Model(inp, out, name="fc_autoencoder")


ARCHITECTURES = {
    "ds_cnn": ds_cnn,
    "resnet8": resnet8,
    "mobilenet_v1_025": mobilenet_v1_025,
    "fc_autoencoder": fc_autoencoder,
}
# What each model's input holds (the random data follows it) and its classes.
_INPUTS = {"ds_cnn": "normal", "resnet8": "image", "mobilenet_v1_025": "image", "fc_autoencoder": "normal"}
_CLASSES = {
    "ds_cnn": ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "silence", "unknown"],
    "resnet8": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "mobilenet_v1_025": ["non_person", "person"],
}


def keras_model(name: str, seed: int = 0):
    """Architecture `name` with Keras's initializers under `seed`, and
    batch-normalization statistics drawn at random: a trained network's are
    far from the identity, so the folded per-channel scales differ as they
    would (an untouched BN layer folds into the same scale for every channel)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown MLPerf Tiny model '{name}' (choose one of: {', '.join(ARCHITECTURES)})")
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    model = ARCHITECTURES[name]()
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n).astype(np.float32),  # gamma
                    rng.normal(0.0, 0.2, n).astype(np.float32),  # beta
                    rng.normal(0.0, 0.2, n).astype(np.float32),  # moving mean
                    rng.uniform(0.5, 2.0, n).astype(np.float32),  # moving variance
                ]
            )
    return model


def random_data(name: str, n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """`n` seeded samples: images in [0, 1), features standard normal."""
    rng = np.random.default_rng(seed)
    if _INPUTS[name] == "image":
        return rng.random((n, *shape), dtype=np.float32)
    return rng.standard_normal((n, *shape), dtype=np.float32)


def build_mlperf_tiny_models(
    folder: str | os.PathLike, names: Iterable[str] | None = None, seed: int = 0
) -> dict[str, Path]:
    """`<name>.tflite` for each model (all four by default) in `folder`, with
    what `hil convert` writes beside it from the same inputs: the validation
    data `<name>_validation_data.npz` and the report `<name>_report.json`
    (parameters and sizes). The Keras model, its config and the random data
    it was calibrated on stay there too. Returns the `.tflite` paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names or ARCHITECTURES:
        model = keras_model(name, seed)
        keras_path = folder / f"{name}.keras"
        model.save(keras_path)
        shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        data = folder / f"{name}_data.npz"
        np.savez(data, x=random_data(name, CALIBRATION_SAMPLES + VALIDATION_SAMPLES, shape, seed))
        config = {
            "name": name,
            "task": "classification" if name in _CLASSES else "anomaly_detection",
            "input_shape": list(shape),
            "source": "MLPerf Tiny reference architecture, seeded random weights (harness.testing.mlperf_tiny)",
        }
        if name in _CLASSES:
            config["class_names"] = _CLASSES[name]
        cfg = folder / f"{name}_model_config.json"
        cfg.write_text(json.dumps(config, indent=2) + "\n")
        res = convert(
            keras_path,
            model_config=cfg,
            output_path=folder / f"{name}.tflite",
            data_path_train=data,
            num_samples=CALIBRATION_SAMPLES,
            validate_samples=VALIDATION_SAMPLES,
            report_json=folder / f"{name}_report.json",
            seed=seed,
        )
        paths[name] = res.tflite
    return paths


_BUILT: dict[str, Path] = {}
_FOLDER: list[Path] = []


def mlperf_tiny_models(names: Iterable[str] | None = None) -> dict[str, Path]:
    """`build_mlperf_tiny_models` once per process and model, shared by the
    test files: the models named (all four by default), each built on first use."""
    names = list(names or ARCHITECTURES)
    missing = [n for n in names if n not in _BUILT]
    if missing:
        if not _FOLDER:
            import tempfile

            _FOLDER.append(Path(tempfile.mkdtemp(prefix="hil-mlperf-tiny-")))
        _BUILT.update(build_mlperf_tiny_models(_FOLDER[0], missing))
    return {n: _BUILT[n] for n in names}
