"""The two bundled examples: synthetic data generators and small trainers.

`build_example("gesture" | "audio", out_dir)` writes a trained `<name>.keras`,
its `<name>_model_config.json` and its training data in one of the layouts
`hil convert --data_path_train` reads. Data is synthetic but shaped like the
real thing (accelerometer windows; log-mel spectrograms computed from
synthesised audio); each model trains in seconds on a CPU.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.convert import _tf
from harness.errors import ConfigError
from harness.fileio import atomic_path, write_json_atomic

EXAMPLES = ("gesture", "audio")


@dataclass(frozen=True)
class ExamplePaths:
    name: str
    out_dir: Path
    keras: Path
    config: Path
    data: Path  # what to pass as --data_path_train
    class_names: tuple[str, ...]


# --------------------------------------------------------------------------- gesture

GESTURE_CLASSES = ("wave", "punch", "circle", "flex", "shake")
GESTURE_RATE_HZ = 100
GESTURE_STEPS = 100  # 1 s window
GESTURE_AXES = 3


def gesture_window(label: int, rng: np.random.Generator) -> np.ndarray:
    """One 1-second accelerometer window in g, shape (100, 3), for a gesture.

    Gravity sits on a slightly tilted z axis; the gesture's motion is added
    with random timing, amplitude and speed; sensor noise on top."""
    t = np.arange(GESTURE_STEPS) / GESTURE_RATE_HZ
    tilt = rng.normal(0.0, 0.15, size=2)
    g = np.array([np.sin(tilt[0]), np.sin(tilt[1]), np.cos(tilt[0]) * np.cos(tilt[1])])
    sig = np.tile(g, (GESTURE_STEPS, 1))
    amp = rng.uniform(0.6, 1.4)
    phase = rng.uniform(0, 2 * np.pi)
    onset = rng.uniform(0.05, 0.45)
    env = np.clip((t - onset) / 0.1, 0, 1) * np.clip((onset + rng.uniform(0.4, 0.55) - t) / 0.1, 0, 1)
    name = GESTURE_CLASSES[label]
    if name == "wave":  # side to side, 2-3 Hz, mostly x
        f = rng.uniform(2.0, 3.0)
        sig[:, 0] += amp * 1.2 * env * np.sin(2 * np.pi * f * t + phase)
        sig[:, 1] += amp * 0.2 * env * np.sin(2 * np.pi * f * t + phase + 0.5)
    elif name == "punch":  # sharp forward spike on y, then the braking swing
        c = onset + 0.15
        sig[:, 1] += amp * 2.5 * np.exp(-(((t - c) / 0.03) ** 2)) - amp * 1.5 * np.exp(-(((t - c - 0.09) / 0.05) ** 2))
        sig[:, 2] += amp * 0.3 * np.exp(-(((t - c) / 0.05) ** 2))
    elif name == "circle":  # x and y in quadrature, ~1.5 Hz
        f = rng.uniform(1.2, 1.8)
        sig[:, 0] += amp * 0.8 * env * np.sin(2 * np.pi * f * t + phase)
        sig[:, 1] += amp * 0.8 * env * np.cos(2 * np.pi * f * t + phase)
    elif name == "flex":  # slow lift on z, ~1 Hz
        f = rng.uniform(0.8, 1.2)
        sig[:, 2] += amp * 0.9 * env * np.sin(2 * np.pi * f * t + phase)
        sig[:, 0] += amp * 0.15 * env * np.sin(2 * np.pi * f * t + phase + 1.0)
    elif name == "shake":  # fast jitter on all axes, 6-9 Hz
        f = rng.uniform(6.0, 9.0)
        for a in range(3):
            sig[:, a] += amp * 0.6 * env * np.sin(2 * np.pi * f * t + phase + a * 2.1)
    sig += rng.normal(0.0, 0.03, size=sig.shape)
    return sig.astype(np.float32)


def gesture_dataset(n_per_class: int, seed: int = 0, dead_fraction: float = 0.02):
    """Flattened (time-major x,y,z) windows and labels. A few windows are
    'dead sensor' recordings (gravity plus noise only), as real logs have;
    they keep their labels and the signal-level filter should skip them."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label in range(len(GESTURE_CLASSES)):
        for _ in range(n_per_class):
            w = gesture_window(label, rng)
            if rng.random() < dead_fraction:
                w = np.tile(w[0] * 0 + np.array([0.0, 0.0, 1.0], np.float32), (GESTURE_STEPS, 1))
                w += rng.normal(0.0, 0.002, size=w.shape).astype(np.float32)
            xs.append(w.reshape(-1))
            ys.append(label)
    order = rng.permutation(len(xs))
    return np.stack(xs)[order].astype(np.float32), np.asarray(ys, np.int64)[order]


def _gesture_model(n_in: int, n_classes: int):
    import tensorflow as tf

    return tf.keras.Sequential(
        [
            tf.keras.Input((n_in,), name="accel"),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dropout(0.1),
            tf.keras.layers.Dense(32, activation="relu"),
            tf.keras.layers.Dense(n_classes, activation="softmax"),
        ],
        name="gesture",
    )


# --------------------------------------------------------------------------- audio

AUDIO_CLASSES = ("whistle", "chirp", "knock", "hum", "hiss")
AUDIO_RATE_HZ = 8000
AUDIO_SECONDS = 1.0
AUDIO_FFT = 256
AUDIO_MELS = 64
AUDIO_FRAMES = 96
AUDIO_FLOOR_DB = -80.0


def _mel_filterbank(n_mels: int, n_fft: int, rate: int, fmin: float = 50.0) -> np.ndarray:
    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel2hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    mels = np.linspace(hz2mel(fmin), hz2mel(rate / 2), n_mels + 2)
    hz = mel2hz(mels)
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    fb = np.zeros((n_mels, len(bins)))
    for i in range(n_mels):
        lo, c, hi = hz[i], hz[i + 1], hz[i + 2]
        fb[i] = np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
    return fb


def log_mel(wave: np.ndarray, rate: int = AUDIO_RATE_HZ) -> np.ndarray:
    """Log-mel spectrogram in dB re full scale, floored at -80 dB, shape
    (64 mel bands, 96 frames)."""
    hop = (len(wave) - AUDIO_FFT) // (AUDIO_FRAMES - 1)
    win = np.hanning(AUDIO_FFT)
    frames = np.stack([wave[i * hop : i * hop + AUDIO_FFT] * win for i in range(AUDIO_FRAMES)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 / (np.sum(win) ** 2 / 4)
    mel = _mel_filterbank(AUDIO_MELS, AUDIO_FFT, rate) @ power.T
    return np.maximum(10 * np.log10(np.maximum(mel, 1e-12)), AUDIO_FLOOR_DB).astype(np.float32)


def audio_clip(label: int, rng: np.random.Generator, gain: float | None = None) -> np.ndarray:
    """One second of synthetic audio for a class, in [-1, 1]."""
    n = int(AUDIO_RATE_HZ * AUDIO_SECONDS)
    t = np.arange(n) / AUDIO_RATE_HZ
    start = rng.uniform(0.0, 0.4)
    length = rng.uniform(0.35, 0.6)
    env = np.clip((t - start) / 0.02, 0, 1) * np.clip((start + length - t) / 0.05, 0, 1)
    name = AUDIO_CLASSES[label]
    if name == "whistle":  # steady tone with vibrato, 1-2.5 kHz
        f0 = rng.uniform(1000, 2500)
        ph = 2 * np.pi * np.cumsum(f0 + 30 * np.sin(2 * np.pi * 5 * t)) / AUDIO_RATE_HZ
        s = np.sin(ph)
    elif name == "chirp":  # rising sweep
        f0, f1 = rng.uniform(300, 800), rng.uniform(2000, 3500)
        f = f0 + (f1 - f0) * np.clip((t - start) / length, 0, 1)
        s = np.sin(2 * np.pi * np.cumsum(f) / AUDIO_RATE_HZ)
    elif name == "knock":  # a few decaying broadband transients
        s = np.zeros(n)
        for k in range(rng.integers(2, 5)):
            i0 = int((start + k * rng.uniform(0.08, 0.15)) * AUDIO_RATE_HZ)
            m = min(n - i0, 800)
            if m > 0:
                s[i0 : i0 + m] += rng.normal(0, 1, m) * np.exp(-np.arange(m) / 120.0)
        env = np.ones(n)
    elif name == "hum":  # low fundamental with harmonics
        f0 = rng.uniform(90, 180)
        s = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 6))
    else:  # hiss: noise band-limited to 2.5-4 kHz by spectral shaping
        spec = np.fft.rfft(rng.normal(0, 1, n))
        freqs = np.fft.rfftfreq(n, 1.0 / AUDIO_RATE_HZ)
        spec[freqs < rng.uniform(2000, 2800)] *= 0.02
        s = np.fft.irfft(spec, n)
    s = s / (np.max(np.abs(s)) + 1e-9) * env
    if gain is None:
        gain = 10 ** (rng.uniform(-30, -6) / 20)
    noise = rng.normal(0, 1, n) * 10 ** (rng.uniform(-60, -45) / 20)
    return (gain * s + noise * (gain > 1e-3)).astype(np.float32)


def audio_dataset(n_per_class: int, seed: int = 0, silent_fraction: float = 0.03):
    """Log-mel spectrograms (N, 64, 96, 1) and labels. A few clips are
    near-silent (the recorder missed the event) and sit at the -80 dB floor."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label in range(len(AUDIO_CLASSES)):
        for _ in range(n_per_class):
            gain = 1e-6 if rng.random() < silent_fraction else None
            xs.append(log_mel(audio_clip(label, rng, gain))[..., None])
            ys.append(label)
    order = rng.permutation(len(xs))
    return np.stack(xs)[order].astype(np.float32), np.asarray(ys, np.int64)[order]


def _audio_model(shape, n_classes: int):
    import tensorflow as tf

    L = tf.keras.layers

    def ds_block(x, channels, stride):
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU(6.0)(x)
        x = L.Conv2D(channels, 1, use_bias=False)(x)
        x = L.BatchNormalization()(x)
        return L.ReLU(6.0)(x)

    inp = tf.keras.Input(shape, name="log_mel")
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = ds_block(x, 16, 2)
    x = ds_block(x, 32, 2)
    x = ds_block(x, 32, 1)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(n_classes, activation="softmax")(x)
    return tf.keras.Model(inp, out, name="audio")


# --------------------------------------------------------------------------- build


def _train(model, x, y, epochs: int, seed: int):
    import tensorflow as tf

    model.compile(
        optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    hist = model.fit(x, y, epochs=epochs, batch_size=32, validation_split=0.15, verbose=0, shuffle=True)
    return {k: float(v[-1]) for k, v in hist.history.items()}


def _save_model(model, path: Path) -> None:
    # Keras insists on the .keras suffix, so the temp file carries it too.
    with atomic_path(path) as tmp:
        tmp_k = tmp.with_name(tmp.name + ".keras")
        try:
            model.save(tmp_k)
            os.replace(tmp_k, tmp)
        finally:
            tmp_k.unlink(missing_ok=True)


def _save_npy(path: Path, a: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, a)


def _gesture(out: Path, seed: int, n_per_class: int | None, epochs: int | None):
    """The gesture example's data (X.npy + y.npy), trained model and config."""
    x, y = gesture_dataset(n_per_class or 200, seed)
    data = out / "gesture_data"
    data.mkdir(exist_ok=True)
    _save_npy(data / "X.npy", x)
    _save_npy(data / "y.npy", y)
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), 1e-3)
    model = _gesture_model(x.shape[1], len(GESTURE_CLASSES))
    history = _train(model, (x - mean) / std, y, epochs or 12, seed)
    classes = GESTURE_CLASSES
    config = {
        "name": "gesture",
        "task": "classification",
        "input_shape": [GESTURE_STEPS * GESTURE_AXES],
        "signal_channels": GESTURE_AXES,
        "class_names": list(classes),
        "num_classes": len(classes),
        "normalization": {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]},
        "features": {
            "kind": "accelerometer",
            "units": "g",
            "sample_rate_hz": GESTURE_RATE_HZ,
            "timesteps": GESTURE_STEPS,
            "axes": ["x", "y", "z"],
            "layout": "time-major, flattened: [x0, y0, z0, x1, y1, z1, ...]",
        },
        "training_data": {"path": data.name, "layout": "X.npy + y.npy"},
    }
    return model, history, data, classes, config, int(len(x))


def _audio(out: Path, seed: int, n_per_class: int | None, epochs: int | None):
    """The audio example's data (class folders of .npy), trained model and config."""
    x, y = audio_dataset(n_per_class or 60, seed)
    data = out / "audio_data"
    for i, cls in enumerate(AUDIO_CLASSES):
        (data / cls).mkdir(parents=True, exist_ok=True)
        for j, idx in enumerate(np.flatnonzero(y == i)):
            _save_npy(data / cls / f"{cls}_{j:04d}.npy", x[idx])
    mean, std = float(x.mean()), float(x.std())
    model = _audio_model(x.shape[1:], len(AUDIO_CLASSES))
    history = _train(model, (x - mean) / std, y, epochs or 8, seed)
    classes = AUDIO_CLASSES
    config = {
        "name": "audio",
        "task": "classification",
        "input_shape": list(x.shape[1:]),
        "class_names": list(classes),
        "num_classes": len(classes),
        "normalization": {"mean": round(mean, 6), "std": round(std, 6)},
        "features": {
            "kind": "log_mel_spectrogram",
            "units": "dB re full scale",
            "sample_rate_hz": AUDIO_RATE_HZ,
            "clip_seconds": AUDIO_SECONDS,
            "n_fft": AUDIO_FFT,
            "n_mels": AUDIO_MELS,
            "frames": AUDIO_FRAMES,
            "floor_db": AUDIO_FLOOR_DB,
            "layout": "(mel band, frame, channel)",
        },
        "training_data": {"path": data.name, "layout": "class folders of .npy"},
    }
    return model, history, data, classes, config, int(len(x))


def build_example(
    name: str, out_dir: str | os.PathLike, seed: int = 0, n_per_class: int | None = None, epochs: int | None = None
) -> ExamplePaths:
    """Generate the example's data, train its model and write everything to
    `out_dir`. Deterministic data for a seed; training takes seconds."""
    if name not in EXAMPLES:
        raise ConfigError(f"unknown example '{name}'", f"choose one of: {', '.join(EXAMPLES)}")

    tf = _tf()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(seed)
    keras_path = out / f"{name}.keras"
    config_path = out / f"{name}_model_config.json"
    make = _gesture if name == "gesture" else _audio
    model, history, data, classes, config, n = make(out, seed, n_per_class, epochs)
    config["training"] = {"seed": seed, "samples": n, **{k: round(v, 4) for k, v in history.items()}}
    _save_model(model, keras_path)
    write_json_atomic(config_path, config)
    return ExamplePaths(
        name=name, out_dir=out, keras=keras_path, config=config_path, data=data, class_names=tuple(classes)
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.examples gesture --out DIR`."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m harness.examples", description="Generate, train and save a bundled example model."
    )
    p.add_argument("name", choices=EXAMPLES)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    res = build_example(a.name, a.out, seed=a.seed)
    cfg = json.loads(res.config.read_text())
    print(f"{res.keras}\n{res.config}\n{res.data}\ntraining: {cfg['training']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
