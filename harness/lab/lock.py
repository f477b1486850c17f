"""One process at a time on a board: an exclusive `flock` on a file in the
lock folder. The kernel drops the lock when its holder's file is closed —
also when the holder is killed with SIGKILL — so a lock never goes stale;
the file only keeps a note of the last holder (pid, host, since) for the
message a second process gets.

    with BoardLock("port:/dev/ttyACM0", wait=30):
        ...  # flash and validate

A lock on one host does not reach others: boards on other hosts are shared
through labgrid places (harness.lab.labgrid), whose coordinator holds that lock.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import DeviceError

ENV_LOCK_DIR = "HIL_LOCK_DIR"
POLL_S = 0.1


class BoardBusyError(DeviceError):
    """Another process holds the board."""

    def __init__(self, message: str, hint: str | None = None, holder: dict | None = None):
        super().__init__(message, hint)
        self.holder = holder or {}


def default_lock_dir() -> Path:
    """$HIL_LOCK_DIR, else one folder in the temp dir shared by every job on this host."""
    env = os.environ.get(ENV_LOCK_DIR)
    return Path(env) if env else Path(tempfile.gettempdir()) / "tinyhil-locks"


def lock_path(key: str, lock_dir: Path | None = None) -> Path:
    import hashlib

    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:80]
    return (lock_dir or default_lock_dir()) / f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.lock"


def describe_holder(h: dict | None) -> str:
    if not h:
        return "another process (it has not written its name yet)"
    parts = [f"pid {h.get('pid')} on {h.get('host')}"]
    if h.get("since"):
        parts.append(f"since {h['since']}")
    if h.get("command"):
        parts.append(f"({h['command']})")
    return " ".join(parts)


def read_holder(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        h = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return None
    return h if isinstance(h, dict) else None


class BoardLock:
    """An exclusive lock on one board (by its `Instance.lock_key`)."""

    def __init__(
        self,
        key: str,
        *,
        lock_dir: str | os.PathLike | None = None,
        wait: float = 0.0,
        label: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.key = key
        self.path = lock_path(key, Path(lock_dir) if lock_dir else None)
        self.wait = max(0.0, float(wait or 0.0))
        self.label = label or key
        self._clock, self._sleep = clock, sleep
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if folder.stat().st_uid == os.getuid():
                os.chmod(folder, 0o1777)  # every CI user of this host locks in the same folder
        except OSError as exc:
            raise DeviceError(
                f"cannot create the lock folder {folder}: {exc.strerror}",
                f"set {ENV_LOCK_DIR} (or lock_dir in the lab file) to a folder you can write",
            ) from exc
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise DeviceError(
                f"cannot open the lock file {self.path}: {exc.strerror}",
                f"check its permissions, or set {ENV_LOCK_DIR} to another folder",
            ) from exc
        return fd

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if someone holds it."""
        if self._fd is not None:
            return True
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise DeviceError(f"cannot lock {self.path}: {exc.strerror}", "check the lock folder") from exc
        self._fd = fd
        note = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["hil", *sys.argv[1:]])[:200] if sys.argv else None,
            "board": self.label,
        }
        data = json.dumps(note).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return True

    def acquire(self) -> BoardLock:
        """Take the lock, waiting up to `wait` seconds; `BoardBusyError` names the holder."""
        deadline = self._clock() + self.wait
        while not self.try_acquire():
            if self._clock() >= deadline:
                holder = read_holder(self.path)
                waited = f" after waiting {self.wait:g} s" if self.wait else ""
                raise BoardBusyError(
                    f"{self.label} is busy{waited}: held by {describe_holder(holder)}",
                    "wait for that run to end, or pass --wait SECONDS",
                    holder,
                )
            self._sleep(min(POLL_S, max(0.0, deadline - self._clock())))
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # The note stays (who held it last); the lock goes with the descriptor.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def holder(self) -> dict | None:
        """Who holds the board now (None when it is free). Does not take it."""
        if self._fd is not None:
            return read_holder(self.path)
        if self.try_acquire():
            self.release()
            return None
        return read_holder(self.path) or {}

    def __enter__(self) -> BoardLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
