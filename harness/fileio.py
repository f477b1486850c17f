"""The output layer: every file tinyhil writes goes through here.

One rule, enforced in one place (`OutputSet`): no output may resolve (after
symlinks and `..`) to an input of the same command or to another output; an
existing device, FIFO or `/dev/stdout` is written in place, never renamed
over; a set of outputs is replaced all-or-nothing (staged next to their
targets, then renamed; a failed rename rolls the set back so the old set
stays whole). A failed run never leaves a half-written file.

    outs = OutputSet(inputs={"--model": model}, outputs={"--report-json": rj, "--html": html})
    outs.check()                      # cheap: before any expensive work
    with outs.staged() as st:
        st.path(rj).write_text(...)   # temporary files beside the targets
    # all renamed here, or none
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from harness.errors import ConfigError

PathLike = str | os.PathLike
Named = Mapping[str, PathLike | None] | Iterable[PathLike | None]

# Targets under these prefixes are special files (or /proc/self/fd links to a
# pipe or terminal) even when they look like regular ones: written in place.
_IN_PLACE_PREFIXES = ("/dev/", "/proc/")
# What a data folder given as an input is made of.
DATA_SUFFIXES = (".npy", ".npz")


def _named(items: Named | None) -> list[tuple[str, Path]]:
    if not items:
        return []
    pairs = items.items() if isinstance(items, Mapping) else ((None, p) for p in items)
    return [(str(label) if label else str(p), Path(p)) for label, p in pairs if p is not None and str(p) != ""]


def _real(p: Path) -> str:
    return os.path.realpath(os.path.abspath(p))


def _same_file(a: Path, b: Path) -> bool:
    """Hard links and bind mounts: the same inode is the same file."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _is_special(target: Path) -> bool:
    """An existing non-regular target (device, FIFO, socket, a terminal or
    pipe behind /dev/stdout): never renamed over."""
    real = _real(target)
    if real.startswith(_IN_PLACE_PREFIXES) or str(target).startswith(_IN_PLACE_PREFIXES):
        return os.path.exists(real) or os.path.exists(target)
    try:
        return not stat.S_ISREG(os.stat(target).st_mode) and not os.path.isdir(target)
    except OSError:
        return False


class OutputSet:
    """The outputs of one command, checked against its inputs and written as a set.

    `inputs`/`outputs`: a mapping label -> path (labels name them in errors,
    e.g. "--report-json") or a plain list of paths; None entries are ignored.
    An input that is a folder (training data) protects the data files
    (`DATA_SUFFIXES`) already inside it."""

    def __init__(self, outputs: Named, inputs: Named | None = None):
        self.outputs = _named(outputs)
        self.inputs = _named(inputs)

    def label(self, target: PathLike) -> str:
        real = _real(Path(target))
        for label, p in self.outputs:
            if _real(p) == real:
                return label
        return str(target)

    def check(self) -> OutputSet:
        """Raise a `ConfigError` now for any output that could not be written
        or would destroy an input or another output. Cheap: no writing."""
        seen: dict[str, str] = {}
        for label, out in self.outputs:
            real = _real(out)
            what = out if label == str(out) else f"{label} {out}"
            if real in seen:
                raise ConfigError(f"output {what} is also the output {seen[real]}", "give every output its own path")
            seen[real] = str(what)
            for ilabel, inp in self.inputs:
                iwhat = inp if ilabel == str(inp) else f"{ilabel} {inp}"
                ireal = _real(inp)
                inside = (
                    os.path.isdir(ireal)
                    and real.startswith(ireal.rstrip(os.sep) + os.sep)
                    and os.path.exists(real)
                    and real.endswith(DATA_SUFFIXES)
                )
                if real == ireal or _same_file(out, inp) or inside:
                    how = f"is the input {iwhat}" if not inside else f"is a file of the input folder {iwhat}"
                    raise ConfigError(
                        f"output {what} {how}; writing it would destroy the input",
                        "choose another output path",
                    )
            if os.path.isdir(out):
                raise ConfigError(f"output {what} is a folder", "pass a file path")
            if _is_special(out):
                try:
                    mode = os.stat(out).st_mode
                except OSError:
                    mode = 0
                if stat.S_ISSOCK(mode):
                    raise ConfigError(f"output {what} is a socket", "pass a file path")
                continue  # written in place
            _check_folder(out.parent if str(out.parent) else Path("."), what)
        return self

    @contextlib.contextmanager
    def staged(self) -> Iterator[Staging]:
        """Check, yield a `Staging` whose `.path(target)` is a temporary file
        for `target`; commit every staged file when the block ends without
        an exception, else remove them and leave every target as it was."""
        self.check()
        st = Staging(self)
        try:
            yield st
            st.commit()
        finally:
            st.discard()


def _check_folder(folder: Path, what) -> None:
    """The folder exists (or can be made) and is writable; a file in its
    place is named as such (not "File exists")."""
    probe = folder
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: mkdir would fail
            raise ConfigError(f"cannot write {what}: {probe} is a broken symbolic link", "choose another output path")
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"cannot write {what}: {probe} is a file, not a folder", "choose another output folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what}: {probe} is not writable", "choose a writable output folder")


def _os_error(target: Path, exc: OSError) -> ConfigError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EEXIST or exc.errno == errno.ENOTDIR:
        reason = "a file stands where a folder is needed"
    return ConfigError(f"cannot write {target}: {reason}", "choose a writable output folder")


class Staging:
    """Temporary files of an `OutputSet` being written; see `OutputSet.staged`."""

    def __init__(self, outs: OutputSet):
        self.outs = outs
        self._allowed = {_real(p) for _, p in outs.outputs}
        self._tmp: dict[Path, Path] = {}  # target -> temporary file

    def path(self, target: PathLike) -> Path:
        """The temporary file to write `target`'s content to."""
        target = Path(target)
        if _real(target) not in self._allowed:
            raise ValueError(f"{target} is not an output of this set")  # a programming error
        if target in self._tmp:
            return self._tmp[target]
        folder = target.parent if str(target.parent) else Path(".")
        special = _is_special(target)
        try:
            if special:
                # Staged in the system's temp folder: /dev is no place for it.
                fd, tmp = tempfile.mkstemp(prefix=".tinyhil.", suffix=".part")
            else:
                folder.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
        except OSError as exc:
            raise _os_error(target, exc) from exc
        os.close(fd)
        self._tmp[target] = Path(tmp)
        return self._tmp[target]

    def commit(self) -> None:
        """Rename every staged file over its target, or none: a failure
        puts back every target already replaced."""
        regular = [(t, tmp) for t, tmp in self._tmp.items() if not _is_special(t)]
        special = [(t, tmp) for t, tmp in self._tmp.items() if _is_special(t)]
        done: list[tuple[Path, Path | None]] = []  # target, backup of its old content (None: it was new)
        target = None
        try:
            for target, tmp in regular:
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(tmp, _mode_for(target))
                backup = _backup(target)
                try:
                    os.replace(tmp, target)
                except OSError:
                    if backup is not None:
                        backup.unlink(missing_ok=True)
                    raise
                done.append((target, backup))
            for target, tmp in special:
                _write_in_place(target, tmp)
        except OSError as exc:
            for t, backup in reversed(done):
                with contextlib.suppress(OSError):
                    if backup is None:
                        t.unlink()
                    else:
                        os.replace(backup, t)
            raise _os_error(target, exc) from exc
        for _, backup in done:
            if backup is not None:
                with contextlib.suppress(OSError):
                    backup.unlink()

    def discard(self) -> None:
        for tmp in self._tmp.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._tmp.clear()


def _backup(target: Path) -> Path | None:
    """A second name for the target's current content (a hard link, else a
    copy), so a rolled-back set gets it back; None when there is none."""
    if not os.path.lexists(target):
        return None
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
    os.close(fd)
    backup = Path(name)
    backup.unlink()
    try:
        os.link(target, backup)
    except OSError:
        shutil.copy2(target, backup)
    return backup


def _write_in_place(target: Path, tmp: Path) -> None:
    mode = os.stat(target).st_mode
    flags = os.O_WRONLY | (os.O_NONBLOCK if stat.S_ISFIFO(mode) else 0)
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise OSError(exc.errno, "a FIFO with no reader") from exc
        raise
    try:
        if stat.S_ISFIFO(mode):
            os.set_blocking(fd, True)
        with open(tmp, "rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(target: PathLike, inputs: Named | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `target`; it replaces `target` only if
    the block finishes without an exception (a one-file `OutputSet`)."""
    with OutputSet([target], inputs).staged() as st:
        yield st.path(target)


def write_bytes_atomic(target: PathLike, data: bytes, inputs: Named | None = None) -> None:
    with atomic_path(target, inputs) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: PathLike, text: str, inputs: Named | None = None) -> None:
    write_bytes_atomic(target, text.encode("utf-8"), inputs)


def write_json_atomic(target: PathLike, obj, inputs: Named | None = None) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", inputs)


def write_if_changed(target: PathLike, data: bytes) -> bool:
    """Write only when the content differs, so mtimes (and builds) stay put.
    Returns True when the file was written."""
    target = Path(target)
    try:
        if target.read_bytes() == data:
            return False
    except (FileNotFoundError, NotADirectoryError):
        pass
    write_bytes_atomic(target, data)
    return True


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
