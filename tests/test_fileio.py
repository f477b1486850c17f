"""Atomic output: a failure leaves the old file, results get normal modes."""

import os

import pytest

from harness.errors import ConfigError
from harness.fileio import atomic_path, write_bytes_atomic, write_if_changed


def test_failed_write_keeps_the_good_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("conversion failed")
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


def test_new_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "report.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644


def test_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "run.sh"
    target.write_bytes(b"old")
    target.chmod(0o750)
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o750


def test_unchanged_content_is_not_rewritten(tmp_path):
    target = tmp_path / "model_data.cc"
    assert write_if_changed(target, b"x") is True
    os.utime(target, (1, 1))
    assert write_if_changed(target, b"x") is False
    assert target.stat().st_mtime == 1
    assert write_if_changed(target, b"y") is True


def test_unwritable_folder_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write"):
        write_bytes_atomic(blocker / "sub" / "x.bin", b"1")
