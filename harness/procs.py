"""Child processes die with tinyhil; SIGTERM and SIGHUP cancel like Ctrl-C.

Every process tinyhil starts and does not hand to the user (QEMU, the native
firmware, the arena probe, PlatformIO) is started with `popen()`: in its own
process group (so one signal reaches its children too), registered, and
stopped -- SIGTERM to the group, SIGKILL after a grace period -- by `stop()`,
by the `finally` of its owner, and at interpreter exit. On Linux the kernel
also sends it SIGTERM when tinyhil dies (PR_SET_PDEATHSIG), so even a
SIGKILL of `hil` leaves no orphan burning a core.

`cancel_on_signals()` (installed by the CLI) turns SIGTERM and SIGHUP into
`Cancelled`, a `KeyboardInterrupt`: every path that handles Ctrl-C (partial
reports, cleanup) handles a CI cancel or a closed terminal the same way.
`deferred_signals()` holds them back while a report set is committed, so a
cancel never leaves a mismatched set.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence

GRACE_S = 3.0
CANCEL_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))

_children: dict[int, subprocess.Popen] = {}
_lock = threading.Lock()


class Cancelled(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled wherever Ctrl-C is."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    # The parent may already be gone (it died between fork and prctl).
    if os.getppid() == 1:
        os._exit(1)


def popen(cmd: Sequence[str], *, detach: bool = False, **kwargs) -> subprocess.Popen:
    """`subprocess.Popen` for a child that must not outlive tinyhil.

    `detach=True`: a process the user asked to keep running (`--detach`): its
    own session, not registered, no death signal."""
    kwargs["start_new_session"] = True
    if not detach and sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        # The death signal fires when the *thread* that forked exits, so only
        # the main thread (alive as long as the process) may arm it.
        kwargs.setdefault("preexec_fn", _pdeathsig)
    proc = subprocess.Popen(list(cmd), **kwargs)
    if not detach:
        with _lock:
            for pid in [pid for pid, p in _children.items() if p.returncode is not None]:
                del _children[pid]  # reaped by their owners
            _children[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen | None, grace: float = GRACE_S) -> int | None:
    """End `proc` and its process group: SIGTERM, SIGKILL after `grace` s.
    Returns its exit code (None when there was no process)."""
    if proc is None:
        return None
    try:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        return proc.returncode
    finally:
        with _lock:
            _children.pop(proc.pid, None)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # its own group (start_new_session): pgid == pid
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, OSError):
            if proc.poll() is None:
                proc.send_signal(sig)


def running() -> list[subprocess.Popen]:
    with _lock:
        return [p for p in _children.values() if p.poll() is None]


def stop_all(grace: float = GRACE_S) -> None:
    with _lock:
        procs = list(_children.values())
    for p in procs:
        with contextlib.suppress(Exception):
            stop(p, grace)


atexit.register(stop_all)


def _raise_cancelled(signum, frame):
    raise Cancelled(signum)


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Cancelled` (a KeyboardInterrupt) in the main
    thread for the duration; the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise_cancelled) for s in CANCEL_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block ends (a report set
    being committed); then raise the first one that came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    sigs = (signal.SIGINT, *CANCEL_SIGNALS)
    old = {s: signal.signal(s, lambda n, f: pending.append(n)) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if pending:
        if pending[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise Cancelled(pending[0])


@contextlib.contextmanager
def first_cancel_only() -> Iterator[list[int]]:
    """The first Ctrl-C, SIGTERM or SIGHUP of the block cancels as usual
    (KeyboardInterrupt / `Cancelled`); the ones after it are recorded and
    ignored, so a second Ctrl-C cannot stop the partial report of a run the
    first one cancelled. Yields the list of the signals that were ignored."""
    ignored: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield ignored
        return
    fired = False

    def handler(signum, frame):
        nonlocal fired
        if fired:
            ignored.append(signum)
            return
        fired = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Cancelled(signum)

    sigs = (signal.SIGINT, *CANCEL_SIGNALS)
    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield ignored
    finally:
        for s, h in old.items():
            signal.signal(s, h)
