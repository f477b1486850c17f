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


# --------------------------------------------------------------------------- output sets

import stat  # noqa: E402

from harness.fileio import OutputSet, write_text_atomic  # noqa: E402


def _old_set(folder, names=("r.json", "r.xml", "r.html")):
    for n in names:
        (folder / n).write_text(f"old {n}")
    return [folder / n for n in names]


def test_a_failed_rename_rolls_the_whole_set_back(tmp_path, monkeypatch):
    paths = _old_set(tmp_path)
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the second target's rename fails
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(ConfigError, match="cannot write .*No space left"):
        with OutputSet(paths).staged() as st:
            for p in paths:
                st.path(p).write_text(f"new {p.name}")
    monkeypatch.setattr(os, "replace", real_replace)
    assert [p.read_text() for p in paths] == [f"old {p.name}" for p in paths]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_an_exception_while_staging_leaves_the_old_set_whole(tmp_path):
    paths = _old_set(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with OutputSet(paths).staged() as st:
            st.path(paths[0]).write_text("new")
            raise KeyboardInterrupt
    assert [p.read_text() for p in paths] == [f"old {p.name}" for p in paths]
    assert len(list(tmp_path.iterdir())) == 3


def test_a_committed_set_is_all_new_and_new_files_appear(tmp_path):
    paths = _old_set(tmp_path, ("a", "b"))
    with OutputSet([*paths, tmp_path / "sub" / "c"]).staged() as st:
        for p in [*paths, tmp_path / "sub" / "c"]:
            st.path(p).write_text("new")
    assert [p.read_text() for p in [*paths, tmp_path / "sub" / "c"]] == ["new"] * 3


def test_codegen_is_all_or_nothing_when_one_rename_fails(tmp_path, monkeypatch):
    from harness.codegen import _write_all

    out = tmp_path / "gen"
    out.mkdir()
    old = {n: f"old {n}".encode() for n in ("model_data.h", "model_data.cc", "model_ops.h")}
    for n, b in old.items():
        (out / n).write_bytes(b)
    real_replace = os.replace

    def fail_on_h(src, dst):
        if str(dst).endswith("model_data.h"):
            raise OSError(13, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_h)
    with pytest.raises(ConfigError, match="cannot write"):
        _write_all(out, {n: b"new" for n in ("model_data.cc", "model_ops.h", "model_data.h")})
    monkeypatch.setattr(os, "replace", real_replace)
    assert {n: (out / n).read_bytes() for n in old} == old
    assert sorted(p.name for p in out.iterdir()) == sorted(old)


def test_dev_null_is_written_in_place_never_replaced(tmp_path):
    before = os.stat("/dev/null")
    write_text_atomic("/dev/null", "report\n")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_a_fifo_is_written_through_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader is there before the write
    try:
        write_text_atomic(fifo, "through the pipe\n")  # small: it fits the pipe's buffer
        # Read after the writer has closed: a read before it opened would see EOF.
        assert os.read(rfd, 4096) == b"through the pipe\n"
    finally:
        os.close(rfd)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_fifo_nobody_reads_is_refused_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="FIFO with no reader"):
        write_text_atomic(fifo, "x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_no_output_may_be_an_input_or_another_output(tmp_path):
    m = tmp_path / "m.tflite"
    m.write_bytes(b"model")
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match="is the input --model"):
        OutputSet({"--html": tmp_path / "d" / ".." / "m.tflite"}, {"--model": m}).check()
    (tmp_path / "ln").symlink_to(m)
    with pytest.raises(ConfigError, match="is the input --model"):
        OutputSet({"--html": tmp_path / "ln"}, {"--model": m}).check()
    with pytest.raises(ConfigError, match="is also the output"):
        OutputSet({"--a": tmp_path / "x", "--b": tmp_path / "d" / ".." / "x"}).check()
    assert m.read_bytes() == b"model"


def test_a_file_in_place_of_a_folder_is_named_not_file_exists(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=r"f is a file, not a folder"):
        write_text_atomic(tmp_path / "f" / "deeper" / "r.json", "{}")
