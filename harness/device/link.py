"""The simulated board's serial line: transports the host opens with pyserial
(a real pseudo-terminal, or a TCP socket for `socket://`), and the emulation
of what sits between host and board — 8N1 line rate, one-way latency, a
bounded device receive buffer, and seeded fault injection.

Each direction is a `LinePipe`: bytes put in at time t leave the wire at
`max(t, wire free) + 10·n/baud` and arrive `latency` later, corrupted by the
direction's faults on the way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError, DeviceError

FAULTS_HELP = (
    "comma-separated faults: ber=RATE (bit-error rate), drop=RATE (lost bytes), "
    "garbage=P (random bytes after a frame, per frame), reset_after=N (device resets once "
    "after N frames), reset_every=N, stall=P:DURATION (device stalls, per frame; e.g. "
    "stall=0.001:200ms), op=K:lsb=D (the board adds D LSB to operator K's output and computes on from it); "
    "all on both directions where it applies, seeded by --seed"
)


@dataclass(frozen=True)
class Faults:
    ber: float = 0.0
    drop: float = 0.0
    garbage: float = 0.0
    reset_after: int = 0
    reset_every: int = 0
    stall_p: float = 0.0
    stall_s: float = 0.0
    perturb_op: int = -1  # the operator whose output the board changes (-1: none)
    perturb_lsb: int = 0

    @property
    def line_faults(self) -> bool:
        return bool(self.ber or self.drop or self.garbage)

    def describe(self) -> str:
        parts = [f"{k}={v:g}" for k, v in (("ber", self.ber), ("drop", self.drop), ("garbage", self.garbage)) if v]
        if self.reset_after:
            parts.append(f"reset_after={self.reset_after}")
        if self.reset_every:
            parts.append(f"reset_every={self.reset_every}")
        if self.stall_p:
            parts.append(f"stall={self.stall_p:g}:{self.stall_s * 1000:g}ms")
        if self.perturb_op >= 0:
            parts.append(f"op={self.perturb_op}:lsb={self.perturb_lsb:+d}")
        return ",".join(parts) or "none"


def _duration(text: str) -> float:
    t = text.strip().lower()
    for suffix, mul in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if t.endswith(suffix):
            return float(t[: -len(suffix)]) * mul
    return float(t)  # plain number: seconds


def parse_faults(spec: str | None | Faults) -> Faults:
    """`ber=1e-4,drop=1e-4,garbage=0.01,reset_after=50,stall=0.001:200ms` -> Faults."""
    if spec is None or isinstance(spec, Faults):
        return spec or Faults()
    kw: dict = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item or item == "none":
            continue
        key, sep, val = item.partition("=")
        key = key.strip().replace("-", "_")
        try:
            if not sep:
                raise ValueError
            if key in ("ber", "drop", "garbage"):
                kw[key] = float(val)
                if not 0.0 <= kw[key] <= 1.0:
                    raise ValueError
            elif key in ("reset_after", "reset_every"):
                kw[key] = int(val)
                if kw[key] < 0:
                    raise ValueError
            elif key == "stall":
                p, _, d = val.partition(":")
                kw["stall_p"], kw["stall_s"] = float(p), _duration(d or "100ms")
                if not (0.0 <= kw["stall_p"] <= 1.0 and kw["stall_s"] >= 0):
                    raise ValueError
            elif key == "op":
                k, _, rest = val.partition(":")
                name, _, d = rest.partition("=")
                if name.strip() != "lsb":
                    raise ValueError
                kw["perturb_op"], kw["perturb_lsb"] = int(k), int(d)
                if kw["perturb_op"] < 0 or kw["perturb_lsb"] == 0:
                    raise ValueError
            else:
                raise ConfigError(f"unknown fault '{key}' in --faults '{spec}'", FAULTS_HELP)
        except ValueError:
            raise ConfigError(f"bad fault '{item}' in --faults '{spec}'", FAULTS_HELP) from None
    return Faults(**kw)


class LineFaults:
    """Corruption on one direction of the line (seeded)."""

    def __init__(self, faults: Faults, seed: int):
        self.f = faults
        self.rng = np.random.default_rng(seed)
        self.flipped = self.dropped = self.garbage_bytes = 0

    def apply(self, data: bytes) -> bytes:
        f = self.f
        if not f.line_faults or not data:
            return data
        if f.garbage:
            out = bytearray()
            start = 0
            for z in [i for i, b in enumerate(data) if b == 0]:
                out += data[start : z + 1]
                start = z + 1
                if self.rng.random() < f.garbage:
                    g = self.rng.integers(1, 256, int(self.rng.integers(1, 24)), dtype=np.uint8).tobytes()
                    self.garbage_bytes += len(g)
                    out += g
            out += data[start:]
            data = bytes(out)
        arr = np.frombuffer(data, np.uint8).copy()
        if f.ber:
            n = int(self.rng.binomial(arr.size * 8, f.ber))
            if n:
                pos = self.rng.integers(0, arr.size * 8, n)
                np.bitwise_xor.at(arr, pos >> 3, (1 << (pos & 7)).astype(np.uint8))
                self.flipped += n
        if f.drop:
            keep = self.rng.random(arr.size) >= f.drop
            self.dropped += int(arr.size - keep.sum())
            arr = arr[keep]
        return arr.tobytes()


class LinePipe:
    """One direction of the emulated line: rate, latency, faults, then `sink`.

    By default a thread delivers each piece when it is due by `clock`. With
    `threaded=False` nothing runs by itself: the caller delivers what is due
    with `pump()`, so a test drives the line with its own clock."""

    def __init__(
        self,
        sink: Callable[[bytes], None],
        baud: int,
        latency_s: float,
        faults: LineFaults | None = None,
        name: str = "line",
        *,
        clock: Callable[[], float] = time.monotonic,
        threaded: bool = True,
    ):
        self.sink = sink
        self.baud = int(baud)
        self.latency = float(latency_s)
        self.faults = faults
        self.clock = clock
        self._q: deque = deque()
        self._cv = threading.Condition()
        self._wire_free = 0.0
        self._stop = False
        # deliver in pieces of ~1 ms of line time so the far side sees a stream
        self._piece = max(32, self.baud // 10 // 1000) if self.baud else 1 << 16
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name=f"sim-{name}", daemon=True)
            self._thread.start()

    def put(self, data: bytes) -> None:
        if not data:
            return
        if self.faults is not None:
            data = self.faults.apply(data)
        now = self.clock()
        with self._cv:
            for i in range(0, len(data), self._piece):
                piece = data[i : i + self._piece]
                start = max(now, self._wire_free)
                done = start + (10.0 * len(piece) / self.baud if self.baud else 0.0)
                self._wire_free = done
                self._q.append((done + self.latency, piece))
            self._cv.notify()

    def _take_due(self, now: float) -> bytes:
        out = bytearray()
        while self._q and self._q[0][0] <= now:
            out += self._q.popleft()[1]
        return bytes(out)

    def pump(self) -> bytes:
        """Hands the sink what is due by `clock()` (and returns it)."""
        with self._cv:
            out = self._take_due(self.clock())
        if out:
            self.sink(out)
        return out

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._q and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                now = self.clock()
                due = self._q[0][0]
                if due > now:
                    self._cv.wait(due - now)
                    continue
                out = self._take_due(now)
            try:
                self.sink(out)
            except Exception:  # a vanished peer must not kill the line
                pass

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=2)


class RxBuffer:
    """The device's bounded receive buffer (a UART ring): bytes that do not
    fit are lost, as on an overrun."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.overrun_bytes = 0
        self.high_water = 0
        self._buf = bytearray()
        self._cv = threading.Condition()

    def push(self, data: bytes) -> None:
        with self._cv:
            room = self.capacity - len(self._buf)
            if len(data) > room:
                self.overrun_bytes += len(data) - room
                data = data[:room]
            self._buf += data
            self.high_water = max(self.high_water, len(self._buf))
            self._cv.notify()

    def pop_frame(self, timeout: float) -> bytes | None:
        """Bytes up to and including the next 0x00 (or everything, when the
        buffer is full without one); None when nothing came in `timeout`."""
        with self._cv:
            end = time.monotonic() + timeout
            while True:
                z = self._buf.find(0)
                if z >= 0:
                    out = bytes(self._buf[: z + 1])
                    del self._buf[: z + 1]
                    return out
                if len(self._buf) >= self.capacity:
                    out = bytes(self._buf)
                    self._buf.clear()
                    return out
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)

    def clear(self) -> None:
        with self._cv:
            self._buf.clear()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()


# ----------------------------------------------------------------- transports


class PtyTransport:
    """A real pseudo-terminal: the host opens `url` (/dev/pts/N) like a
    USB serial port. The simulator keeps the slave open itself so the master
    survives hosts that come and go."""

    def __init__(self, on_receive: Callable[[bytes], None]):
        self.on_receive = on_receive
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.url = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-pty", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.master], [], [], 0.05)
                if not r:
                    continue
                data = os.read(self.master, 65536)
            except BlockingIOError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.01)
                continue
            if data:
                self.on_receive(data)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 1.0
        while view and not self._stop.is_set():
            try:
                n = os.write(self.master, view)
                view = view[n:]
            except BlockingIOError:
                # nobody reads the port: keep trying a while, then lose the
                # bytes like a UART with no listener
                if time.monotonic() > deadline:
                    return
                select.select([], [self.master], [], 0.02)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class TcpTransport:
    """A TCP server on 127.0.0.1 (pyserial: `socket://127.0.0.1:PORT`), one
    host at a time, like a serial port: while a host is connected, another
    is sent `refuse(peer, since)` (the board's "busy" message) and closed."""

    def __init__(
        self,
        on_receive: Callable[[bytes], None],
        port: int = 0,
        host: str = "127.0.0.1",
        refuse: Callable[[str, str], bytes] | None = None,
    ):
        self.on_receive = on_receive
        self.refuse = refuse
        self._peer = ("", "")
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._srv.bind((host, int(port)))
        except OSError as exc:
            self._srv.close()
            hint = "choose another port, or tcp:0 for a free one"
            if exc.errno == errno.EADDRINUSE:
                raise DeviceError(f"TCP port {port} is already in use", hint) from exc
            raise DeviceError(f"cannot listen on {host}:{port}: {exc.strerror}", hint) from exc
        self._srv.listen(1)
        self._srv.settimeout(0.1)
        self.port = self._srv.getsockname()[1]
        self.url = f"socket://{host}:{self.port}"
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-tcp", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                serving = self._conn is not None and _alive(self._conn)
            if serving:
                with contextlib.suppress(OSError):
                    conn.sendall(self.refuse(*self._peer) if self.refuse else b"")
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
                continue
            conn.settimeout(0.1)
            peer = conn.getpeername()
            self._peer = (f"{peer[0]}:{peer[1]}", time.strftime("%H:%M:%S"))
            with self._lock:
                old, self._conn = self._conn, conn
            if old is not None:
                with contextlib.suppress(OSError):
                    old.close()
            threading.Thread(target=self._reader, args=(conn,), name="sim-tcp-rx", daemon=True).start()

    def _reader(self, conn: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            self.on_receive(data)
        with self._lock:
            if self._conn is conn:
                self._conn = None
        with contextlib.suppress(OSError):
            conn.close()

    def send(self, data: bytes) -> None:
        with self._lock:
            conn = self._conn
        if conn is None:
            return  # no host connected: lost, like a UART with no listener
        try:
            conn.sendall(data)
        except OSError:
            pass  # the host went away mid-frame

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._srv.close()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self._thread.join(timeout=2)


def _alive(conn: socket.socket) -> bool:
    """False when the peer has closed (its host went away without our
    reader noticing yet): a reconnecting host is not refused as "busy"."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except (BlockingIOError, TimeoutError):
        return True
    except OSError:
        return False


def make_transport(listen: str, on_receive: Callable[[bytes], None], refuse: Callable[[str, str], bytes] | None = None):
    """`pty` or `tcp:PORT` (`tcp:0`: a free port)."""
    listen = (listen or "pty").strip()
    if listen == "pty":
        if not hasattr(os, "openpty"):  # pragma: no cover - Windows
            raise ConfigError("pseudo-terminals are not available on this system", "use --listen tcp:0")
        return PtyTransport(on_receive)
    if listen.startswith("tcp:"):
        try:
            port = int(listen[4:])
            if not 0 <= port <= 65535:
                raise ValueError
        except ValueError:
            raise ConfigError(f"bad --listen '{listen}'", "use pty or tcp:PORT (tcp:0 picks a free port)") from None
        return TcpTransport(on_receive, port, refuse=refuse)
    raise ConfigError(f"bad --listen '{listen}'", "use pty or tcp:PORT (tcp:0 picks a free port)")
