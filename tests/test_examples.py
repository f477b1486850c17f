"""The bundled examples: data generators, trained models, configs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness import data as hdata
from harness import examples as hx
from harness.errors import ConfigError


def test_gesture_generator_is_deterministic_and_shaped():
    x1, y1 = hx.gesture_dataset(10, seed=3)
    x2, y2 = hx.gesture_dataset(10, seed=3)
    assert x1.shape == (50, 300) and x1.dtype == np.float32
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert sorted(np.bincount(y1).tolist()) == [10] * 5
    # gravity sits on z: the mean of the z channel is about 1 g
    z = x1.reshape(50, 100, 3)[:, :, 2]
    assert 0.8 < float(np.median(z)) < 1.2


def test_gesture_classes_differ_in_their_signals():
    rng = np.random.default_rng(0)
    energy = {}
    for k, name in enumerate(hx.GESTURE_CLASSES):
        w = np.stack([hx.gesture_window(k, rng) for _ in range(20)])
        spec = np.abs(np.fft.rfft(w - w.mean(axis=1, keepdims=True), axis=1)).mean(axis=0)  # (51, 3)
        energy[name] = spec
    # spectral peaks (1 s window: bin = Hz): shake 6-9 Hz, wave 2-3 Hz, flex about 1 Hz
    peak = {n: int(np.argmax(e.sum(1))) for n, e in energy.items()}
    assert 5 <= peak["shake"] <= 10 and 1 <= peak["wave"] <= 4 and peak["flex"] <= 2, peak
    # wave is mostly on x, flex mostly on z
    assert energy["wave"][:, 0].sum() > 2 * energy["wave"][:, 2].sum()
    assert energy["flex"][:, 2].sum() > 2 * energy["flex"][:, 1].sum()


def test_dead_sensor_windows_are_what_the_filter_skips():
    x, y = hx.gesture_dataset(100, seed=1, dead_fraction=0.05)
    level = hdata.signal_level(x, channels=3)
    dead = level < 0.01
    assert 10 < dead.sum() < 50
    mask = hdata.silent_mask(x, 0.05, channels=3)
    assert np.array_equal(mask, dead)


def test_log_mel_shape_floor_and_silence():
    rng = np.random.default_rng(0)
    s = hx.log_mel(hx.audio_clip(0, rng))
    assert s.shape == (64, 96) and s.dtype == np.float32
    assert s.min() >= hx.AUDIO_FLOOR_DB and s.max() <= 10
    silent = hx.log_mel(hx.audio_clip(0, rng, gain=1e-6))
    assert np.ptp(silent) < 1.0  # sits on the floor
    # a whistle is a narrow band: its loudest band dominates the frame it sits in
    frame = s[:, int(np.argmax(s.max(axis=0)))]
    assert frame.max() - np.median(frame) > 20


def test_unknown_example_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown example"):
        hx.build_example("nope", tmp_path)


def test_gesture_example_outputs(gesture_example):
    ex = gesture_example
    assert ex.keras.is_file() and ex.config.is_file()
    cfg = json.loads(ex.config.read_text())
    assert cfg["input_shape"] == [300] and cfg["class_names"] == list(hx.GESTURE_CLASSES)
    assert len(cfg["normalization"]["mean"]) == 300 and min(cfg["normalization"]["std"]) > 0
    assert cfg["features"]["sample_rate_hz"] == 100
    assert cfg["training"]["accuracy"] > 0.8, cfg["training"]
    ds = hdata.load_dataset(ex.data, (300,), cfg["class_names"])
    assert ds.layout == "xy_npy" and len(ds) == cfg["training"]["samples"]


def test_audio_example_outputs(audio_example):
    ex = audio_example
    cfg = json.loads(ex.config.read_text())
    assert cfg["input_shape"] == [64, 96, 1]
    assert cfg["features"]["kind"] == "log_mel_spectrogram" and cfg["features"]["sample_rate_hz"] == 8000
    assert sorted(p.name for p in ex.data.iterdir()) == sorted(hx.AUDIO_CLASSES)
    assert cfg["training"]["accuracy"] > 0.6, cfg["training"]
    ds = hdata.load_dataset(ex.data, (64, 96, 1), cfg["class_names"])
    assert ds.layout == "class_folders" and ds.x.shape[1:] == (64, 96, 1)
    import tensorflow as tf

    model = tf.keras.models.load_model(ex.keras, compile=False)
    convs = [
        layer
        for layer in model.layers
        if isinstance(layer, (tf.keras.layers.Conv2D,)) and not isinstance(layer, tf.keras.layers.DepthwiseConv2D)
    ]
    assert any(isinstance(layer, tf.keras.layers.DepthwiseConv2D) for layer in model.layers)
    assert convs and all(c.filters % 8 == 0 for c in convs)
