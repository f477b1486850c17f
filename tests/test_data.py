"""Training-data loading, checks, the signal-level filter and the split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness import data as hdata
from harness.errors import ConfigError, DataError


def _xy(n_per_class=10, classes=3, shape=(6,), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n_per_class * classes, *shape)).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per_class)
    return x, y


# --------------------------------------------------------------------------- layouts


def test_three_layouts_load_the_same_samples(tmp_path):
    x, y = _xy()
    names = ["a", "b", "c"]
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    root = tmp_path / "folders"
    for i, (xi, yi) in enumerate(zip(x, y)):
        (root / names[yi]).mkdir(parents=True, exist_ok=True)
        np.save(root / names[yi] / f"s{i:03d}.npy", xi)
    a = hdata.load_dataset(tmp_path / "X.npy", (6,), names)
    b = hdata.load_dataset(tmp_path / "d.npz", (6,), names)
    c = hdata.load_dataset(root, (6,), names)
    assert (a.layout, b.layout, c.layout) == ("xy_npy", "npz", "class_folders")
    for ds in (a, b, c):
        assert ds.x.shape == (30, 6) and ds.x.dtype == np.float32
        assert ds.class_names == tuple(names)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    # class folders come back grouped by class, same multiset of samples per class
    for k in range(3):
        assert np.allclose(np.sort(c.x[c.y == k], axis=0), np.sort(x[y == k], axis=0))
    assert c.sample_id(0) == "a/s000.npy"


def test_folder_with_x_npy_and_labels_as_strings_and_one_hot(tmp_path):
    x, y = _xy()
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "y.npy", np.array(["cat", "dog", "eel"])[y])
    ds = hdata.load_dataset(tmp_path, (6,))
    assert ds.class_names == ("cat", "dog", "eel") and np.array_equal(ds.y, y)
    np.save(tmp_path / "y.npy", np.eye(3)[y])
    assert np.array_equal(hdata.load_dataset(tmp_path, (6,)).y, y)
    # config class order wins over the sorted names
    np.save(tmp_path / "y.npy", np.array(["cat", "dog", "eel"])[y])
    ds = hdata.load_dataset(tmp_path, (6,), ["eel", "dog", "cat"])
    assert np.array_equal(ds.y, 2 - y)


def test_npz_without_labels_and_size1_axes(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 4, 5)).astype(np.float32)
    np.savez(tmp_path / "u.npz", x=x)
    ds = hdata.load_dataset(tmp_path / "u.npz", (4, 5, 1))
    assert ds.y is None and ds.x.shape == (8, 4, 5, 1)


def test_class_file_may_hold_a_stack(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "a" / "many.npy", np.ones((5, 3), np.float32))
    np.save(tmp_path / "b" / "one.npy", np.zeros(3, np.float32))
    ds = hdata.load_dataset(tmp_path, (3,))
    assert len(ds) == 6 and ds.y.tolist() == [0] * 5 + [1]
    assert ds.sample_id(1) == "a/many.npy[1]"


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing", "does not exist"),
        ("empty", "holds no .npy"),
        ("shape", "does not match the model input"),
        ("nan", "NaN or Inf"),
        ("inf", "NaN or Inf"),
        ("corrupt", "cannot read"),
        ("unknown_class", "not classes of the model"),
        ("label_count", "labels for"),
        ("npz_no_x", "no 'x' array"),
        ("text", "neither a folder"),
    ],
)
def test_bad_data_is_a_data_error(tmp_path, case, match):
    x, y = _xy()
    p = tmp_path / "d"
    p.mkdir()
    if case == "missing":
        p = tmp_path / "nope"
    elif case == "shape":
        np.save(p / "X.npy", x[:, :5])
    elif case in ("nan", "inf"):
        x[7, 2] = np.nan if case == "nan" else np.inf
        np.save(p / "X.npy", x)
    elif case == "corrupt":
        (p / "X.npy").write_bytes(b"\x93NUMPY garbage")
    elif case == "unknown_class":
        (p / "zebra").mkdir()
        np.save(p / "zebra" / "0.npy", x[0])
    elif case == "label_count":
        np.save(p / "X.npy", x)
        np.save(p / "y.npy", y[:-1])
    elif case == "npz_no_x":
        np.savez(p / "d.npz", data=x)
        p = p / "d.npz"
    elif case == "text":
        p = p / "d.csv"
        p.write_text("1,2,3")
    with pytest.raises(DataError, match=match) as exc:
        hdata.load_dataset(p, (6,), ["a", "b", "c"])
    assert "\n" not in str(exc.value)


def test_nan_error_names_the_sample(tmp_path):
    (tmp_path / "a").mkdir()
    np.save(tmp_path / "a" / "ok.npy", np.zeros(3, np.float32))
    np.save(tmp_path / "a" / "bad.npy", np.array([1, np.nan, 2], np.float32))
    with pytest.raises(DataError, match="a/bad.npy"):
        hdata.load_dataset(tmp_path, (3,))


# --------------------------------------------------------------------------- filter and split


def test_signal_level_per_channel_ignores_offsets():
    t = np.linspace(0, 1, 100)
    moving = np.stack([np.sin(8 * t), np.cos(8 * t), 1 + 0 * t], axis=1).reshape(1, -1)
    still = np.tile([0.0, 0.0, 1.0], 100).reshape(1, -1)
    both = np.concatenate([moving, still])
    lv = hdata.signal_level(both, channels=3)
    assert lv[1] == pytest.approx(0.0) and lv[0] > 0.3
    assert hdata.signal_level(both)[1] > 0.4  # flattened without channels: the offsets look like signal
    with pytest.raises(ConfigError):
        hdata.signal_level(both, channels=7)


def test_silent_mask_threshold():
    x = np.concatenate([np.random.default_rng(0).normal(0, 1, (20, 50)), np.full((3, 50), 5.0)])
    assert hdata.silent_mask(x, 0.05).tolist() == [False] * 20 + [True] * 3
    assert not hdata.silent_mask(x, 0.0).any()
    with pytest.raises(ConfigError):
        hdata.silent_mask(x, -1)


def test_stratified_sample_balances_and_is_deterministic():
    labels = np.array([0] * 100 + [1] * 10 + [2] * 40)
    cand = np.arange(len(labels))
    a = hdata.stratified_sample(labels, cand, 30, np.random.default_rng(5))
    b = hdata.stratified_sample(labels, cand, 30, np.random.default_rng(5))
    assert np.array_equal(a, b) and len(set(a.tolist())) == 30
    assert np.bincount(labels[a]).tolist() == [10, 10, 10]
    c = hdata.stratified_sample(labels, cand, 60, np.random.default_rng(5))
    assert np.bincount(labels[c]).tolist() == [25, 10, 25]  # the small class gives all it has
    assert not np.array_equal(a, hdata.stratified_sample(labels, cand, 30, np.random.default_rng(6)))


def _ds(x, y, names=("a", "b", "c")):
    return hdata.Dataset(
        x=x.astype(np.float32), y=y, class_names=names, layout="npz", source=__import__("pathlib").Path("d.npz")
    )


def test_split_disjoint_stratified_and_skips_silent():
    x, y = _xy(n_per_class=40)
    x[[0, 50, 90]] = 0.0  # three flat samples
    sp = hdata.split(_ds(x, y), num_samples=30, validate_samples=15, seed=1, rounds=3)
    assert sorted(sp.skipped.tolist()) == [0, 50, 90]
    cal, val = set(sp.calibration.tolist()), set(sp.validation[0].tolist())
    assert len(cal) == 30 and len(val) == 15 and not cal & val
    assert not (cal | val) & set(sp.skipped.tolist())
    assert np.bincount(y[sp.calibration]).tolist() == [10, 10, 10]
    assert np.bincount(y[sp.validation[0]]).tolist() == [5, 5, 5]
    assert len(sp.validation) == 3
    for draw in sp.validation:
        assert not set(draw.tolist()) & cal and set(draw.tolist()) <= set(sp.holdout.tolist())
    assert not np.array_equal(sp.validation[1], sp.validation[2])
    again = hdata.split(_ds(x, y), num_samples=30, validate_samples=15, seed=1, rounds=3)
    assert np.array_equal(again.calibration, sp.calibration)


def test_split_shares_small_data_in_proportion():
    x, y = _xy(n_per_class=10)
    sp = hdata.split(_ds(x, y), num_samples=1024, validate_samples=256, seed=0)
    assert len(sp.calibration) + len(sp.validation[0]) == 30
    assert len(sp.validation[0]) == 6 and sp.notes


def test_class_with_too_few_samples():
    x, y = _xy(n_per_class=5)
    x[y == 2] = 0.0
    x[10] = 1.0 + np.arange(6)  # one usable sample left in class 2
    with pytest.raises(DataError, match=r"class 'c' has 1 usable sample.*4 more skipped"):
        hdata.split(_ds(x, y), 10, 5)


# --------------------------------------------------------------------------- normalization


def test_normalization_broadcasts_and_flags(tmp_path):
    cfg_path = tmp_path / "c.json"

    def norm(cfg, shape):
        cfg_path.write_text(json.dumps(cfg))
        return hdata.normalization_for(cfg, cfg_path, shape)

    n = norm({"normalization": {"mean": 2.0, "std": 4.0}}, (3, 2))
    assert np.allclose(n.apply(np.full((1, 3, 2), 6.0)), 1.0)
    n = norm({"normalization": {"mean": [0, 10], "std": [1, 2]}}, (3, 2))
    assert np.allclose(n.apply(np.full((1, 3, 2), 10.0))[0, :, 1], 0.0)
    n = norm({"mean": list(range(6)), "std": [1] * 6}, (6,))
    assert np.allclose(n.apply(np.arange(6.0)[None]), 0.0)
    assert norm({"normalization": {"mean": 1, "std": 2, "in_model": True}}, (6,)) is None
    assert norm({"normalization": {"mean": 1, "std": 2, "data_normalized": True}}, (6,)) is None
    assert norm({}, (6,)) is None
    with pytest.raises(ConfigError, match="normalization has 4 values"):
        norm({"normalization": {"mean": [0] * 4, "std": [1] * 4}}, (3, 2))
