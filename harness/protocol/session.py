"""The host's client session over any pyserial URL (`/dev/ttyACM0`,
`socket://host:port`, `rfc2217://host:port`, `loop://`, a pty path).

    with DeviceSession(url) as s:
        info = s.handshake()
        problems = check_device_matches(info, inspect_model("m.tflite"))
        result = s.infer([x])          # arrays in the device's dtypes/shapes

What it does on the link (docs/protocol.md): keeps up to `rx_window`
requests in flight (WRITEs chunked to `codec.max_chunk(max_frame)` bytes, the INVOKE and
the READs queued behind them), retransmits a request whose response is late
(the deadline counts the line time of everything queued before it), matches
responses by `seq`, repeats a sample after a device reset (`BOOT`) or an
`INCOMPLETE_INPUT`, and hands `LOG` frames to `on_log`. Every wait is bounded:
a silent or broken device ends in a one-line `DeviceError`, never a hang.

A `READ` is only believed when its `DATA` arrives after the sample's
`RESULT`: responses come back in the order the device processed the
requests, so an earlier `DATA` may hold the previous sample's outputs (its
INVOKE was lost and retransmitted) and the read is issued again.

With a version-2 device (`infer_stream`) samples overlap: sample k+1's
WRITEs follow sample k's INVOKE and READs without waiting for any answer,
each INVOKE names its input by CRC-32 and each READ its sample, so the
device itself refuses a mix (INPUT_MISMATCH, STALE) and the host repeats
just that sample. The retransmission timeout follows the measured round trip
(RFC 6298, `RtoEstimator`), a NAK from the device resends at once, and the
frame size follows the observed loss (`FrameSizer`). `max_version=1,
adaptive=False` is the version-1 flow with its fixed timeout, as before.
"""

from __future__ import annotations

import enum
import errno
import math
import os
import select
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import serial

from harness.errors import ConfigError, DataError, DeviceError
from harness.protocol import codec as c
from harness.protocol.codec import TensorDescriptor

__all__ = [
    "DeviceSession",
    "DeviceInfo",
    "FrameSizer",
    "InferenceResult",
    "LinkStats",
    "RtoEstimator",
    "TensorDescriptor",
    "check_device_matches",
    "optimal_chunk",
]

PORT_HINT = "check the port with `hil ports`, the cable, and that no other program holds it"


# What the device said in its handshake: the INFO message itself.
DeviceInfo = c.Info


@dataclass
class InferenceResult:
    outputs: list[np.ndarray]
    invoke_us: int
    cycles: int
    status: int
    retransmits: int = 0  # requests sent again during this sample
    resyncs: int = 0  # corrupt frames the host dropped (and resynchronised after) during this sample
    repeats: int = 0  # times the sample was started again (device reset, incomplete input)
    device_resets: int = 0


@dataclass
class TraceResult:
    """A traced invoke: the result, every operator's output CRC-32 and
    ticks (`tick_hz` per second, 0 unknown), and the capture
    `(first_op, n_ops, bytes)` when one was asked for."""

    result: InferenceResult
    crcs: list[int]
    ticks: list[int]
    capture: tuple[int, int, bytes] | None = None
    tick_hz: int = 0


@dataclass
class LinkStats:
    """Counters since the port was opened. `payload_bytes_*` count tensor
    bytes delivered (acknowledged WRITE data, accepted DATA), so
    payload / wire is the link's efficiency with every overhead counted."""

    bytes_sent: int = 0
    bytes_received: int = 0
    payload_bytes_sent: int = 0
    payload_bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    retransmits: int = 0
    dropped_frames: int = 0
    echoed_frames: int = 0  # our own requests read back: TX looped to RX, no device
    device_resets: int = 0
    repeats: int = 0
    naks: int = 0  # NAK frames from the device (version 2)
    nak_resends: int = 0  # requests resent because of one
    timeouts: int = 0  # retransmissions after a timeout
    elapsed: float = 0.0  # seconds spent inside handshake/infer/ping

    @property
    def efficiency(self) -> float:
        wire = self.bytes_sent + self.bytes_received
        return (self.payload_bytes_sent + self.payload_bytes_received) / wire if wire else 0.0


class RtoEstimator:
    """The retransmission timeout of RFC 6298: SRTT + 4 x RTTVAR from round
    trips measured on requests sent once (Karn), doubled after a timeout,
    within [`min_rto`, `max_rto`]. `initial` holds until the first sample."""

    def __init__(self, initial: float, min_rto: float = 0.010, max_rto: float | None = None, granularity=0.001):
        self.min_rto = float(min_rto)
        self.max_rto = float(max_rto if max_rto is not None else initial)
        self.granularity = float(granularity)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = min(float(initial), self.max_rto)
        self.samples = 0

    def sample(self, rtt: float) -> None:
        rtt = max(0.0, float(rtt))
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.samples += 1
        self.rto = min(self.max_rto, max(self.min_rto, self.srtt + max(self.granularity, 4 * self.rttvar)))

    def backoff(self) -> None:
        self.rto = min(self.max_rto, 2 * self.rto)


def optimal_chunk(ber: float, overhead: int, lo: int, hi: int) -> int:
    """The chunk n maximizing n / (n + overhead) x (1 - ber)^(8 (n + overhead)):
    the goodput of frames of n tensor bytes on a line with bit-error rate `ber`."""
    if ber <= 0:
        return hi
    if ber >= 0.5:
        return lo
    k = -8.0 * math.log1p(-ber)  # d/dn of -ln (1 - ber)^(8 n)
    n = (-overhead + math.sqrt(overhead * overhead + 4.0 * overhead / k)) / 2.0
    return int(max(lo, min(hi, round(n))))


class FrameSizer:
    """The chunk size from the loss seen: every exchange (a request and its
    answer, `wire_bytes` on the line) succeeded or failed. From the share q
    of exchanges that failed and their mean size of b bits, the bit-error
    rate is -ln(1 - q) / b; the counts decay (`half_life_bits`) so the
    estimate follows the line, and the chunk is `optimal_chunk` of it.
    `prior` clean exchanges keep one loss from shrinking a clean line's frames."""

    def __init__(
        self,
        hi: int,
        lo: int = 32,
        overhead: int = c.CHUNK_OVERHEAD + 4 + c.MIN_BODY + 3,
        half_life_bits: float = 2e6,
        prior: float = 50.0,
    ):
        self.hi, self.lo, self.overhead = int(hi), int(min(lo, hi)), int(overhead)
        self._decay_per_bit = math.log(2) / half_life_bits
        self.prior = float(prior)
        self.fails = 0.0
        self.attempts = 0.0
        self.bits = 0.0

    def record(self, wire_bytes: int, failed: bool) -> None:
        b = 8.0 * wire_bytes
        keep = math.exp(-self._decay_per_bit * b)
        self.fails = self.fails * keep + (1.0 if failed else 0.0)
        self.attempts = self.attempts * keep + 1.0
        self.bits = self.bits * keep + b

    @property
    def ber(self) -> float:
        if self.attempts <= 0 or self.fails <= 0:
            return 0.0
        q = min(self.fails / (self.attempts + self.prior), 0.99)
        return -math.log1p(-q) / (self.bits / self.attempts)

    @property
    def chunk(self) -> int:
        return optimal_chunk(self.ber, self.overhead, self.lo, self.hi)


class _Redo(Exception):
    """Start the sample again (device reset or incomplete input)."""

    def __init__(self, why: str, reset: bool = False):
        super().__init__(why)
        self.reset = reset


class _NoAnswer(DeviceError):
    """A request went unanswered through every retry (the handshake words
    this its own way; everyone else sees the DeviceError)."""


class _Outcome(enum.Enum):
    """What a response handler asks of the exchange besides done / more requests."""

    DEFER = enum.auto()  # send the request again after `_release_deferred()`


@dataclass
class _Req:
    msg: object
    seq: int = 0
    tries: int = 0
    deadline: float = 0.0
    reply_bytes: int = 16  # expected response body size (for its line time)
    tag: object = None
    body: bytes = b""
    first_idx: int = 0  # order of this request's first transmission
    last_idx: int = 0  # order of its latest transmission
    base: float = 0.0  # when its answer could arrive at the earliest, but for the round trip
    nak_try: int = -1  # `tries` when a NAK last resent it
    gate: Callable[[], bool] | None = None  # not sent (nor its job's later requests) until true
    timeouts: int = 0  # retransmissions after its timeout (a NAK shows the device alive)


def _errno(exc: BaseException) -> int | None:
    """The errno behind a port error. pyserial's posix port sets it on its
    SerialException; its socket:// and rfc2217:// handlers raise a
    SerialException without one while handling the socket's OSError."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(getattr(exc, "errno", None), int):
            return exc.errno
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


_BUSY = frozenset({errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK})  # EAGAIN: another holds the exclusive lock
_MISSING = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})
_DENIED = frozenset({errno.EACCES, errno.EPERM})


def _open_error(url: str, exc: BaseException) -> DeviceError:
    """A port that would not open, classified by its errno."""
    code = _errno(exc)
    if code in _BUSY:
        return DeviceError(
            f"port {url} is busy (another program has it open)",
            "close the other program (serial monitor, another hil)",
        )
    if code == errno.EISDIR:
        return DeviceError(f"port {url} is a folder, not a serial device", PORT_HINT)
    if code in _MISSING:
        return DeviceError(f"port {url} does not exist", PORT_HINT)
    if code == errno.ECONNREFUSED:
        return DeviceError(
            f"nothing listens at {url} (connection refused)",
            "start the device (e.g. `hil device sim`) or check host:port",
        )
    if code in _DENIED:
        return DeviceError(f"no permission to open {url}", "add yourself to the dialout group (then log in again)")
    text = str(exc)
    return DeviceError(f"cannot open port {url}: {text.splitlines()[0] if text else type(exc).__name__}", PORT_HINT)


class DeviceSession:
    """A connection to one device; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 921600,
        timeout: float = 2.0,
        retries: int = 5,
        window: int | None = None,
        chunk_size: int | None = None,
        on_log: Callable[[int, str], None] | None = None,
        max_version: int = c.VERSION,
        adaptive: bool = True,
        min_rto: float = 0.040,
        clock: Callable[[], float] = time.monotonic,
    ):
        if timeout <= 0:
            raise ConfigError(f"timeout {timeout} s must be positive", "use e.g. --timeout 2")
        if retries < 0:
            raise ConfigError(f"retries {retries} must be 0 or more", "use e.g. 5")
        if window is not None and window < 1:
            raise ConfigError(f"window {window} must be at least 1", "use 1 for stop-and-wait")
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError(f"chunk size {chunk_size} must be at least 1 byte", "omit it to use the device's")
        if not c.VERSION_MIN <= max_version <= c.VERSION:
            raise ConfigError(
                f"protocol version {max_version} is not one this host speaks", f"use {c.VERSION_MIN}..{c.VERSION}"
            )
        self.url = url
        self.baudrate = int(baudrate)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.window_limit = window
        self.chunk_limit = chunk_size
        self.on_log = on_log
        self.max_version = int(max_version)
        self.adaptive = bool(adaptive)
        self._clock = clock
        # the fixed `timeout` is the upper bound; adaptive sessions learn the rest
        self.rto = RtoEstimator(self.timeout, min_rto=min(min_rto, self.timeout), max_rto=self.timeout)
        self.sizer: FrameSizer | None = None
        self.read_sizer: FrameSizer | None = None
        self._compute_free = 0.0  # when the device will be done with the INVOKEs sent
        self._reply_free = 0.0  # when the answers to the requests sent will have arrived
        self._invoke_recent: deque[float] = deque(maxlen=16)  # the device's invoke times, s
        self._naks: deque[c.Nak] = deque()
        self._inflight: dict[int, _Req] = {}
        self.logs: deque[tuple[int, str]] = deque(maxlen=500)
        self.stats = LinkStats()
        self.info: DeviceInfo | None = None
        self.window = 1
        self.chunk = 32
        self.read_chunk = 32
        self._seq = 0
        self._decoder = c.FrameDecoder()
        self._line_free = 0.0
        self._sample_id = 0
        self._invoke_options = (0, 0)  # (INVOKE options, capture_op) for the next INVOKEs (trace)
        self._boots: deque[c.Boot] = deque()
        self._tx_idx = 0
        self._port = self._open()

    # ------------------------------------------------------------ port
    def _open(self):
        kw = dict(baudrate=self.baudrate, timeout=0)
        if not self.url.startswith("rfc2217://"):
            # pyserial's RFC 2217 client has no write timeout (it raises
            # NotImplementedError); its writes go to a TCP socket anyway.
            kw["write_timeout"] = max(self.timeout, 1.0)
        if "://" not in self.url:
            kw["exclusive"] = True
        try:
            port = serial.serial_for_url(self.url, **kw)
        except ValueError as exc:
            raise DeviceError(f"cannot open port {self.url}: {exc}", PORT_HINT) from exc
        except (serial.SerialException, OSError) as exc:
            raise _open_error(self.url, exc) from exc
        try:
            port.reset_input_buffer()  # stale bytes from before us
        except Exception:
            pass
        try:
            self._fd = port.fileno()
        except Exception:
            self._fd = None
        return port

    def close(self) -> None:
        port, self._port = getattr(self, "_port", None), None
        if port is not None:
            try:
                port.close()
            except Exception:
                pass

    def __enter__(self) -> DeviceSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - safety net
        self.close()

    def _write(self, data: bytes) -> None:
        if self._port is None:
            raise DeviceError(f"port {self.url} is closed", "open a new session")
        try:
            self._port.write(data)
        except serial.SerialTimeoutException as exc:
            raise DeviceError(
                f"device at {self.url} does not take data (write timed out)", "check the port/baud/firmware"
            ) from exc
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"port {self.url} failed while writing: {exc}", PORT_HINT) from exc
        now = self._clock()
        self._line_free = max(self._line_free, now) + self._line_time(len(data))
        self.stats.bytes_sent += len(data)

    def _line_time(self, nbytes: int) -> float:
        return 10.0 * nbytes / self.baudrate if self.baudrate > 0 else 0.0

    def _poll(self, wait: float) -> list[c.Frame]:
        """Frames that arrived within `wait` seconds (returns early on data)."""
        if self._port is None:
            raise DeviceError(f"port {self.url} is closed", "open a new session")
        try:
            data = self._port.read(65536)
            if not data and wait > 0:
                if self._fd is not None:
                    select.select([self._fd], [], [], wait)
                else:
                    time.sleep(min(wait, 0.001))
                data = self._port.read(65536)
        except (serial.SerialException, OSError) as exc:
            busy = next((t for _, t in self.logs if t.startswith("busy: ")), None)
            if busy:  # a simulated board serving another host said so, then closed
                raise DeviceError(
                    f"board busy: the device at {self.url} is {busy[6:]}",
                    "wait for the other host to finish, or start another board",
                ) from exc
            raise DeviceError(
                f"device at {self.url} went away: {str(exc).splitlines()[0] if str(exc) else exc}",
                "check the cable/power, then run again",
            ) from exc
        if not data:
            return []
        self.stats.bytes_received += len(data)
        before = self._decoder.dropped
        frames = self._decoder.feed(data)
        self.stats.dropped_frames += self._decoder.dropped - before
        self.stats.frames_received += len(frames)
        out = []
        for f in frames:
            if f.type == c.LOG:
                self._log(f)
            elif f.type in c.REQUEST_TYPES:
                # A request on the way in is our own, echoed (a device never
                # sends one): dropped, and counted for the error message.
                self.stats.echoed_frames += 1
            elif f.type == c.BOOT:
                try:
                    self._boots.append(f.message())
                except c.CodecError:
                    self._boots.append(c.Boot(0))
            elif f.type == c.NAK:
                try:
                    self._naks.append(f.message())
                    self.stats.naks += 1
                except c.CodecError:
                    pass
            else:
                out.append(f)
        return out

    def _log(self, f: c.Frame) -> None:
        try:
            m = f.message()
        except c.CodecError:
            return
        self.logs.append((m.level, m.text))
        if self.on_log is not None:
            self.on_log(m.level, m.text)

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1
        return self._seq

    # ------------------------------------------------------------ engine
    def _send(self, req: _Req, retry: bool = False) -> None:
        if not retry:
            req.seq = self._next_seq()
        flags = c.FLAG_RETRY if retry else 0
        req.body = c.message_body(req.msg, req.seq, flags)
        wire = c.encode_wire(req.body)
        # a leading 0x00 ends whatever junk the device holds, so it cannot
        # spoil this frame (docs/protocol.md, section 1)
        self._write(b"\x00" + wire)
        req.tries += 1
        self._tx_idx += 1
        if not retry:
            req.first_idx = self._tx_idx
        req.last_idx = self._tx_idx
        self.stats.frames_sent += 1
        if retry:
            self.stats.retransmits += 1
        # late = the line time of all we have queued (the device reads it
        # first), the device's compute still ahead of it, the reply's line
        # time, then the timeout proper (fixed, or the measured round trip's)
        reply = self._line_time(req.reply_bytes + req.reply_bytes // 254 + 2)
        if not self.adaptive:
            req.base = self._line_free + reply
            req.deadline = req.base + self.timeout
            return
        start = max(self._line_free, self._compute_free)
        est = max(self._invoke_recent) if self._invoke_recent else None
        if isinstance(req.msg, c.Invoke):
            self._compute_free = start + (est or 0.0)
            start = self._compute_free
        # answers queue on the way back too: this one leaves after those before it
        self._reply_free = max(start, self._reply_free) + reply
        req.base = self._reply_free
        # until the device has said how long an invoke takes, give it the full timeout
        unknown = isinstance(req.msg, c.Invoke) and est is None
        req.deadline = req.base + (self.timeout if unknown else self.rto.rto)

    def _exchange(
        self, reqs: list[_Req], handle: Callable[[_Req, object], object], what: str, stop_on_boot: bool = True
    ) -> None:
        """Run `reqs` pipelined. `handle(req, msg)` returns None (done),
        `_Outcome.DEFER` (send again after `_release_deferred()`), or a list
        of new requests; it may raise. Responses to requests not in flight
        are ignored."""
        for _ in self._flow(reqs, handle, what, stop_on_boot):
            pass

    # over 60 lines: the one event loop of the link (send, receive, resend, adapt); split, its state
    # would travel through every part.
    def _flow(
        self,
        reqs: list[_Req],
        handle: Callable[[_Req, object], object],
        what: str,
        stop_on_boot: bool = True,
        refill: Callable[[], bool] | None = None,
    ) -> Iterator[None]:
        """`_exchange` one poll at a time (it yields after each), so a
        stream hands results on while its later samples are in flight.
        `refill()` adds requests to `self._pending` when it runs short and
        says whether it did."""
        pending: deque[_Req] = deque(reqs)
        inflight: dict[int, _Req] = {}
        self._inflight = inflight
        self._deferred: list[_Req] = []
        self._pending = pending
        self._naks.clear()
        while True:
            if refill is not None:
                while len(pending) < self.window and refill():
                    pass
            if not (pending or inflight or self._deferred):
                return
            if stop_on_boot and self._boots:
                self._boots.clear()
                raise _Redo("device reset (BOOT)", reset=True)
            while pending and len(inflight) < self.window:
                r = _take_ready(pending)
                if r is None:
                    break
                self._send(r)
                inflight[r.seq] = r
            if not inflight and not pending and self._deferred:
                raise DeviceError(f"device at {self.url} answered out of order", "check the firmware")  # unreachable
            now = self._clock()
            next_deadline = min((r.deadline for r in inflight.values()), default=now + 0.05)
            answered: list[_Req] = []
            for f in self._poll(max(0.0, min(next_deadline - now, 0.05))):
                r = inflight.get(f.seq)
                if r is None:
                    continue  # a late answer to something we no longer wait for
                try:
                    msg = f.message()
                except c.CodecError:
                    continue  # garbled beyond the CRC's reach: wait for the retry
                if f.type != c.ERROR and f.type != _RESPONSE[type(r.msg)]:
                    continue
                del inflight[f.seq]
                answered.append(r)
                self._learn(r, msg, len(f.body))
                out = handle(r, msg)
                if out is _Outcome.DEFER:
                    self._deferred.append(r)
                elif out:
                    pending.extendleft(reversed(out))
            # The device answers in the order it received: a request sent
            # before the first copy of one just answered, and still
            # unanswered, was lost (or its answer was) — resend it now
            # rather than at its timeout.
            if answered:
                mark = max(r.first_idx for r in answered)
                for r in [r for r in inflight.values() if r.last_idx < mark]:
                    self._retry(r, inflight, pending, what)
            # the device said which requests it missed: resend those now,
            # once per transmission (a gap and a bad frame may name the same)
            while self._naks:
                nak = self._naks.popleft()
                seq = nak.first_seq
                for _ in range(min(nak.count, 4 * self.window)):
                    r = inflight.get(seq)
                    if r is not None and r.nak_try != r.tries:
                        self.stats.nak_resends += 1
                        self._retry(r, inflight, pending, what)
                        r.nak_try = r.tries
                    seq = c.next_seq(seq)
            now = self._clock()
            late = [r for r in inflight.values() if now >= r.deadline]
            if late and self.adaptive:
                self.rto.backoff()
            for r in late:
                self.stats.timeouts += 1
                r.timeouts += 1
                self._retry(r, inflight, pending, what)
            yield None

    def _learn(self, r: _Req, msg, reply_body: int) -> None:
        """An answer came: a round-trip sample (Karn: only for requests sent
        once), the loss seen by the frame sizer, the device's invoke time."""
        if not self.adaptive:
            return
        now = self._clock()
        if r.tries == 1:
            self.rto.sample(now - r.base)
        sizer = self._sizer_of(r)
        if sizer is not None:
            sizer.record(len(r.body) + c.cobs_max_encoded(reply_body) + 3, failed=False)
        if isinstance(msg, c.Result):
            self._invoke_recent.append(msg.invoke_us / 1e6)
            # the device finished this invoke when its answer left: re-anchor
            # the device is done with this invoke: what is left is the
            # invokes still in flight (keeps the estimate from drifting ahead)
            left = sum(1 for q in self._inflight.values() if isinstance(q.msg, c.Invoke))
            self._compute_free = min(self._compute_free, now + left * max(self._invoke_recent))

    def _sizer_of(self, r: _Req) -> FrameSizer | None:
        if isinstance(r.msg, c.Write):
            return self.sizer
        return self.read_sizer if isinstance(r.msg, c.Read) else None

    def _retry(self, r: _Req, inflight: dict, pending: deque, what: str) -> None:
        sizer = self._sizer_of(r) if self.adaptive else None
        if sizer is not None:  # this attempt failed: the request or its answer was lost
            sizer.record(len(r.body) + c.cobs_max_encoded(r.reply_bytes) + 3, failed=True)
        if isinstance(r.tag, _Attempt):
            r.tag.job.retransmits += 1
        parts = _split(r) if r.tries >= 2 else None
        if parts:
            # a frame that keeps failing is cut in two: on a noisy line
            # shorter frames get through (WRITE/READ address by offset)
            del inflight[r.seq]
            pending.extendleft(reversed(parts))
            m0 = parts[0].msg
            if isinstance(m0, c.Write):
                self.chunk = max(MIN_CHUNK, min(self.chunk, len(m0.data)))
            else:
                self.read_chunk = max(MIN_CHUNK, min(self.read_chunk, m0.length))
            for p in parts:
                p.tag = r.tag
            self.stats.retransmits += 1
            return
        # Given up after `retries` timeouts in a row; resends the device asked
        # for (NAK) or that a later answer revealed show it alive and count
        # only against a looser bound.
        if (r.timeouts > self.retries or r.tries > 8 * (self.retries + 1)) if self.adaptive else r.tries > self.retries:
            st = self.stats
            if st.frames_received and (st.retransmits or st.dropped_frames):  # it answered, the line ate it
                raise _NoAnswer(
                    f"device at {self.url} stopped answering: the link is too noisy ({what}: "
                    f"{c.TYPE_NAMES[r.msg.TYPE]} unanswered after {r.tries} tries; {st.retransmits} retransmits, "
                    f"{st.dropped_frames} frames lost to CRC/framing errors so far)",
                    "check the cable and line rate (a lower --baud), or allow more --retries",
                )
            raise _NoAnswer(
                f"device at {self.url} stopped answering ({what}: "
                f"{c.TYPE_NAMES[r.msg.TYPE]} unanswered after {r.tries} tries, "
                f"{self.timeout:g} s each)",
                "check the port/baud/firmware, or reset the board",
            )
        self._send(r, retry=True)

    def _release_deferred(self) -> None:
        """Issue deferred requests again (as new requests)."""
        if self._deferred:
            for r in self._deferred:
                r.tries = 0
            self._pending.extendleft(reversed(self._deferred))
            self._deferred = []

    def _drain(self, reqs_left: float) -> None:
        """After abandoning a sample, let answers to requests already sent
        come back so the device's buffer is empty before the next burst."""
        end = self._clock() + reqs_left
        while self._clock() < end:
            if not self._poll(0.01) and self._clock() > self._line_free + 0.05:
                break

    # ------------------------------------------------------------ API
    def handshake(self) -> DeviceInfo:
        t0 = time.monotonic()
        try:
            return self._handshake()
        finally:
            self.stats.elapsed += time.monotonic() - t0

    def _handshake(self) -> DeviceInfo:
        info = self._hello()
        self._accept(info)
        self.info = info
        self.window = max(1, min(info.rx_window or 1, self.window_limit or 1 << 16))
        self.chunk = max(1, min(c.max_chunk(info.max_frame), self.chunk_limit or 1 << 30))
        self.read_chunk = c.max_chunk(info.max_frame)
        if self.adaptive and self.sizer is None:
            self.sizer = FrameSizer(self.chunk, lo=min(MIN_CHUNK // 2, self.chunk))
            self.read_sizer = FrameSizer(self.read_chunk, lo=min(MIN_CHUNK // 2, self.read_chunk))
        self._compute_free = 0.0
        self._boots.clear()
        return info

    @property
    def line_baud(self) -> int:
        """The line rate: the device's own where its INFO says one, else the host's setting."""
        return (self.info.line_baud if self.info is not None else 0) or self.baudrate

    def _hello(self) -> c.Info:
        """HELLO, stop-and-wait, until INFO comes back."""
        result: list[c.Info] = []

        def handle(r, msg):
            if isinstance(msg, c.Error):
                if msg.code == c.E_VERSION:
                    raise DeviceError(
                        f"device at {self.url} speaks another protocol version ({msg.message}); "
                        f"this host speaks {c.VERSION_MIN}..{self.max_version}",
                        "update the firmware or the harness so both speak one version",
                    )
                raise DeviceError(
                    f"device at {self.url} refused the handshake: {msg.name} {msg.message}", "check the firmware"
                )
            result.append(msg)

        nonce = int.from_bytes(os.urandom(4), "little")
        req = _Req(c.Hello(c.VERSION_MIN, self.max_version, nonce), reply_bytes=1024)
        self._boots.clear()
        saved = self.window
        self.window = 1
        try:
            self._exchange([req], handle, "handshake", stop_on_boot=False)
        except _NoAnswer:
            total = self.timeout * (self.retries + 1)
            if self.stats.echoed_frames:
                raise DeviceError(
                    f"the port {self.url} echoes what is sent back (TX looped to RX?); "
                    f"no device answered the handshake within {total:g} s",
                    "pick the board's port (`hil ports`) or check the wiring",
                ) from None
            raise DeviceError(
                f"device at {self.url} did not answer the handshake within {total:g} s",
                "check the port/baud/firmware",
            ) from None
        finally:
            self.window = saved
        return result[0]

    def _accept(self, m: c.Info) -> None:
        """A DeviceError unless this host can work with the device `m` describes."""
        if not c.VERSION_MIN <= m.version <= self.max_version:
            raise DeviceError(
                f"device at {self.url} chose protocol version {m.version}; "
                f"this host speaks {c.VERSION_MIN}..{self.max_version}",
                "update the firmware or the harness",
            )
        if m.max_frame < 64:
            raise DeviceError(
                f"device at {self.url} reports max_frame {m.max_frame}, below the protocol's minimum",
                "check the firmware",
            )
        if self.info is not None and (m.model_sha256, m.inputs, m.outputs) != (
            self.info.model_sha256,
            self.info.inputs,
            self.info.outputs,
        ):
            raise DeviceError(
                f"device at {self.url} came back from a reset with another model or tensor layout",
                "check what is flashed on the board",
            )

    def ping(self, payload: bytes = b"") -> bytes:
        t0 = time.monotonic()
        try:
            if self.info is None:
                self._handshake()
            if len(payload) > self.info.max_frame - c.MIN_BODY:
                raise ConfigError(
                    f"ping payload of {len(payload)} B exceeds the device's frame "
                    f"({self.info.max_frame - c.MIN_BODY} B)",
                    "send less",
                )
            got: list[bytes] = []

            def handle(r, msg):
                if isinstance(msg, c.Error):
                    raise DeviceError(
                        f"device at {self.url} answered PING with {msg.name}: {msg.message}", "check the firmware"
                    )
                got.append(msg.data)

            self._exchange(
                [_Req(c.Ping(bytes(payload)), reply_bytes=len(payload) + c.MIN_BODY)],
                handle,
                "ping",
                stop_on_boot=False,
            )
            if got[0] != bytes(payload):
                raise DeviceError(
                    f"device at {self.url} echoed other bytes than it was sent",
                    "the link corrupts data undetected — check the firmware's codec",
                )
            return got[0]
        finally:
            self.stats.elapsed += time.monotonic() - t0

    def infer(self, inputs: Sequence[np.ndarray]) -> InferenceResult:
        """One sample, start to end (no overlap with another)."""
        t0 = time.monotonic()
        try:
            if self.info is None:
                self._handshake()
            if self.info.version >= 2:
                return next(self._stream_v2(iter([inputs])))
            return self._infer(inputs)
        finally:
            self.stats.elapsed += time.monotonic() - t0

    def infer_stream(self, samples: Iterable[Sequence[np.ndarray]]) -> Iterator[InferenceResult]:
        """Every sample's result, in order. With a version-2 device the
        samples overlap on the link and on the device (module docstring);
        with a version-1 device it is `infer` one after the other. Inputs
        are taken from `samples` only as the link has room for them."""
        t0 = time.monotonic()
        try:
            if self.info is None:
                self._handshake()
            if self.info.version < 2:
                results = (self._infer(x) for x in samples)
            else:
                results = self._stream_v2(iter(samples))
            for res in results:
                self.stats.elapsed += time.monotonic() - t0
                t0 = time.monotonic()
                yield res  # the caller's time between results is not the link's
                t0 = time.monotonic()
        finally:
            self.stats.elapsed += time.monotonic() - t0

    def trace(self, inputs: Sequence[np.ndarray], capture_op: int | None = None) -> TraceResult:
        """One sample with the device's per-operator trace (FEATURE_TRACE):
        every operator's output CRC-32 and ticks, and with `capture_op` the
        outputs of operators from `capture_op` on, as many as the device's
        capture buffer holds. One invoke (again only after a reset)."""
        t0 = time.monotonic()
        try:
            if self.info is None:
                self._handshake()
            info = self.info
            if not info.traces:
                raise DeviceError(
                    f"device at {self.url} has no per-operator trace (INFO features lack TRACE)",
                    "flash firmware built by this tinyhil (hil build), or use the simulated board",
                )
            if capture_op is not None and not (0 <= capture_op < info.n_ops):
                raise ConfigError(f"operator {capture_op} is not one of the device's {info.n_ops}", "pick 0..n_ops-1")
            opts = c.INVOKE_TRACE | (c.INVOKE_CAPTURE if capture_op is not None and info.capture_bytes else 0)
            for _ in range(self.retries + 1):
                self._invoke_options = (opts, capture_op or 0)
                try:
                    res = next(self._stream_v2(iter([inputs])))
                finally:
                    self._invoke_options = (0, 0)
                try:
                    crcs, ticks = self._read_trace(self._sample_id)
                    cap = self._read_capture(self._sample_id) if opts & c.INVOKE_CAPTURE else None
                except _Redo:
                    continue  # the device lost the trace (reset): run the sample again
                return TraceResult(res, crcs, ticks, cap, info.tick_hz)
            raise DeviceError(f"device at {self.url} kept losing its trace", "check the board's power and the link")
        finally:
            self.stats.elapsed += time.monotonic() - t0

    def _trace_error(self, r: _Req, msg) -> None:
        if isinstance(msg, c.Error):
            if msg.code == c.E_STALE:
                raise _Redo(f"{c.TYPE_NAMES[r.msg.TYPE]}: STALE")
            raise DeviceError(
                f"device at {self.url} answered {c.TYPE_NAMES[r.msg.TYPE]} with {msg.name}: {msg.message}",
                "check that the firmware matches this tinyhil",
            )

    def _read_trace(self, sid: int) -> tuple[list[int], list[int]]:
        n = self.info.n_ops
        per = max(1, (self.info.max_frame - c.MIN_BODY - c.TRACE_HEADER) // c.TRACE_RECORD)
        crcs, ticks = [0] * n, [0] * n

        def handle(r, msg):
            self._trace_error(r, msg)
            if msg.sample_id != sid or msg.first_op != r.msg.first_op or msg.n_ops != n:
                raise DeviceError(f"device at {self.url} answered TRACE_READ with another trace", "check the firmware")
            k = msg.first_op
            crcs[k : k + len(msg.crcs)] = msg.crcs
            ticks[k : k + len(msg.ticks)] = msg.ticks
            got = k + len(msg.crcs)
            want = r.msg.first_op + r.msg.count
            if len(msg.crcs) == 0 and r.msg.count:
                raise DeviceError(f"device at {self.url} sent an empty TRACE", "check the firmware")
            return [_Req(c.TraceRead(sid, got, want - got), reply_bytes=c.MIN_BODY + 64)] if got < want else None

        reqs = [
            _Req(c.TraceRead(sid, k, min(per, n - k)), reply_bytes=c.MIN_BODY + c.TRACE_HEADER + 8 * min(per, n - k))
            for k in range(0, n, per)
        ]
        self._exchange(reqs, handle, "trace")
        return crcs[:n], ticks[:n]

    def _read_capture(self, sid: int) -> tuple[int, int, bytes]:
        chunk = max(1, self.info.max_frame - c.MIN_BODY - c.CAPTURE_HEADER)
        buf = bytearray()
        head: list = []

        def handle(r, msg):
            self._trace_error(r, msg)
            if msg.sample_id != sid or msg.offset != r.msg.offset:
                raise DeviceError(
                    f"device at {self.url} answered CAPTURE_READ with another capture", "check the firmware"
                )
            if not head:
                head[:] = [msg.first_op, msg.n_ops, msg.total]
                buf.extend(bytes(msg.total))
            buf[msg.offset : msg.offset + len(msg.data)] = msg.data
            end = msg.offset + len(msg.data)
            if end < msg.total:
                if not msg.data:
                    raise DeviceError(f"device at {self.url} sent an empty CAPTURE", "check the firmware")
                return [_Req(c.CaptureRead(sid, end, min(chunk, msg.total - end)), reply_bytes=c.MIN_BODY + chunk)]
            return None

        self._exchange([_Req(c.CaptureRead(sid, 0, chunk), reply_bytes=c.MIN_BODY + chunk)], handle, "capture")
        return head[0], head[1], bytes(buf)

    def _size_frames(self) -> None:
        if self.sizer is not None:
            self.chunk = max(1, min(self.sizer.chunk, self.chunk_limit or 1 << 30))
            self.read_chunk = self.read_sizer.chunk

    # ------------------------------------------------------------ version 2
    def _stream_v2(self, samples: Iterator[Sequence[np.ndarray]]) -> Iterator[InferenceResult]:
        """The overlapped pipeline (docs/protocol.md 5.2): jobs of WRITEs,
        INVOKE(sample, crc) and READ(sample)s queued back to back; a job the
        device refuses (INPUT_MISMATCH, INCOMPLETE_INPUT, STALE) is sent
        again after what is already queued; results leave in order."""
        stream = _Stream(self, samples)
        resets = 0
        carry: list[_Req] = []
        while True:
            try:
                for _ in self._flow(carry, stream.handle, "inference", refill=stream.refill):
                    while stream.ready:
                        yield stream.ready.popleft()
                while stream.ready:
                    yield stream.ready.popleft()
                return
            except _Redo as redo:
                resets += 1
                self.stats.repeats += 1
                if resets > self.retries:
                    raise DeviceError(
                        f"device at {self.url} reset {resets} times during a run (last: {redo})",
                        "check the board's power and the link",
                    ) from None
                self.stats.device_resets += 1
                self._handshake()
                stream.after_reset()
                carry = list(self._pending)

    def _infer(self, inputs: Sequence[np.ndarray]) -> InferenceResult:
        if self.info is None:
            self._handshake()
        bufs = self._input_bytes(inputs)
        r0, d0 = self.stats.retransmits, self.stats.dropped_frames
        repeats = resets = 0
        while True:
            try:
                res = self._infer_once(bufs)
                res.retransmits = self.stats.retransmits - r0
                res.resyncs = self.stats.dropped_frames - d0
                res.repeats, res.device_resets = repeats, resets
                return res
            except _Redo as redo:
                repeats += 1
                self.stats.repeats += 1
                if repeats > self.retries:
                    st = self.stats
                    raise DeviceError(
                        f"device at {self.url} could not complete a sample in {repeats} attempts (last: {redo}); "
                        f"the link is too noisy: {st.retransmits} retransmits, {st.dropped_frames} frames lost",
                        "check the link (cable, a lower --baud) and the board's power",
                    ) from None
                if redo.reset:
                    resets += 1
                    self.stats.device_resets += 1
                    self._handshake()
                else:
                    self._drain(self.timeout)

    def _input_bytes(self, inputs: Sequence[np.ndarray]) -> list[bytes]:
        """Each input as the device's tensor bytes; a DataError when one does not fit."""
        info = self.info
        if len(inputs) != len(info.inputs):
            raise DataError(
                f"{len(inputs)} input arrays for a device with {len(info.inputs)} inputs",
                "pass one array per model input",
            )
        bufs = []
        for i, (x, t) in enumerate(zip(inputs, info.inputs)):
            x = np.asarray(x)
            if x.dtype != t.np_dtype.newbyteorder("="):
                raise DataError(
                    f"input {i} is {x.dtype}, the device's input {i} is {t.dtype}",
                    "convert/quantize the data to the device's dtype first",
                )
            b = np.ascontiguousarray(x, dtype=t.np_dtype).tobytes()
            if len(b) != t.nbytes:
                raise DataError(
                    f"input {i} holds {len(b)} bytes, the device's input {i} takes {t.nbytes} (shape {tuple(t.shape)})",
                    "reshape the data to the device's input shape",
                )
            bufs.append(b)
        return bufs

    def _infer_once(self, bufs: list[bytes]) -> InferenceResult:
        """One attempt at a sample: plan its requests, run them, adapt the
        frame sizes, and turn the device's bytes into arrays."""
        info = self.info
        self._sample_id = (self._sample_id + 1) & 0xFFFFFFFF
        sample = _Sample(self, self._sample_id, bufs)
        r0 = self.stats.retransmits
        self._exchange(sample.first_requests(), sample.handle, "inference")
        if self.adaptive:
            self._size_frames()
        elif self.stats.retransmits == r0:  # a clean sample: frames may grow back
            self.chunk = min(c.max_chunk(info.max_frame), self.chunk_limit or 1 << 30, self.chunk * 2)
            self.read_chunk = min(c.max_chunk(info.max_frame), self.read_chunk * 2)
        res = sample.result
        if res.status != 0:
            raise DeviceError(
                f"inference failed on the device at {self.url} (TfLiteStatus {res.status})",
                "check the firmware's op resolver and arena",
            )
        return InferenceResult(outputs=sample.arrays(), invoke_us=res.invoke_us, cycles=res.cycles, status=res.status)


def _write_req(tensor: int, offset: int, data: bytes, slot: int = 0) -> _Req:
    return _Req(c.Write(tensor, offset, data, slot), reply_bytes=c.MIN_BODY)


def _read_req(tensor: int, offset: int, length: int, sample_id: int | None = None) -> _Req:
    return _Req(c.Read(tensor, offset, length, sample_id), reply_bytes=length + c.CHUNK_OVERHEAD)


_ERROR_HINTS = {
    c.E_NOT_READY: "the model does not fit/load on the device — check its arena and RAM",
    c.E_INVOKE_FAILED: "the firmware's interpreter failed — check its op resolver and arena",
}


@dataclass
class _Sample:
    """One attempt at one sample on the link: the WRITEs, then (once every
    WRITE is acknowledged) the INVOKE and the READs; `handle` is the
    exchange's response handler."""

    session: DeviceSession
    sample_id: int
    bufs: list[bytes]
    result: c.Result | None = None
    acked: int = 0
    outs: list[bytearray] = field(default_factory=list)
    after: list[_Req] = field(default_factory=list)  # sent once every input byte is acknowledged

    def __post_init__(self):
        s = self.session
        self.outs = [bytearray(t.nbytes) for t in s.info.outputs]
        self.after = [_Req(c.Invoke(self.sample_id), reply_bytes=c.MIN_BODY + 24)]
        for ti, t in enumerate(s.info.outputs):
            for off in range(0, t.nbytes, s.read_chunk):
                self.after.append(_read_req(ti, off, min(s.read_chunk, t.nbytes - off)))
        self.total_in = sum(len(b) for b in self.bufs)

    def first_requests(self) -> list[_Req]:
        if self.total_in == 0:
            out, self.after = self.after, []
            return out
        n = self.session.chunk
        return [_write_req(ti, off, b[off : off + n]) for ti, b in enumerate(self.bufs) for off in range(0, len(b), n)]

    def handle(self, r: _Req, msg) -> list[_Req] | _Outcome | None:
        if isinstance(r.msg, c.Read) and self.result is None:
            return _Outcome.DEFER  # processed before the INVOKE: may be the previous sample's
        if isinstance(msg, c.Error):
            return self._fail(r, msg)
        if isinstance(msg, c.Ack):
            return self._on_ack(r)
        if isinstance(msg, c.Result):
            return self._on_result(msg)
        return self._on_data(r.msg, msg)

    def _fail(self, r: _Req, msg: c.Error):
        if msg.code == c.E_INCOMPLETE_INPUT:
            raise _Redo(f"{c.TYPE_NAMES[r.msg.TYPE]}: INCOMPLETE_INPUT ({msg.message})")
        raise DeviceError(
            f"device at {self.session.url} answered {c.TYPE_NAMES[r.msg.TYPE]} with {msg.name}: {msg.message}",
            _ERROR_HINTS.get(msg.code, "check that the firmware matches the model"),
        )

    def _on_ack(self, r: _Req) -> list[_Req] | None:
        self.session.stats.payload_bytes_sent += len(r.msg.data)
        self.acked += len(r.msg.data)
        if self.acked >= self.total_in and self.after:
            # INVOKE only once every WRITE is in: a WRITE the device handled
            # after the INVOKE would leave its bytes marked as written for
            # the next sample
            out, self.after = self.after, []
            return out
        return None

    def _on_result(self, msg: c.Result) -> None:
        if msg.sample_id != self.sample_id:
            raise DeviceError(
                f"device at {self.session.url} answered sample {self.sample_id} with sample {msg.sample_id}",
                "check the firmware's INVOKE handling",
            )
        self.result = msg
        self.session._release_deferred()

    def _on_data(self, req: c.Read, msg: c.Data) -> list[_Req] | None:
        if msg.tensor != req.tensor or msg.offset != req.offset or len(msg.data) > req.length or not msg.data:
            raise DeviceError(
                f"device at {self.session.url} answered READ(t{req.tensor} @{req.offset}) with "
                f"DATA(t{msg.tensor} @{msg.offset} +{len(msg.data)})",
                "check the firmware's READ",
            )
        self.outs[req.tensor][req.offset : req.offset + len(msg.data)] = msg.data
        self.session.stats.payload_bytes_received += len(msg.data)
        if len(msg.data) < req.length:  # the device's frame is smaller: read on
            return [_read_req(req.tensor, req.offset + len(msg.data), req.length - len(msg.data))]
        return None

    def arrays(self) -> list[np.ndarray]:
        return [
            np.frombuffer(bytes(b), t.np_dtype).reshape(tuple(t.shape)).astype(t.np_dtype.newbyteorder("="))
            for b, t in zip(self.outs, self.session.info.outputs)
        ]


@dataclass
class _Job:
    """One sample in the version-2 stream."""

    index: int
    bufs: list[bytes]
    crc: int
    sample_id: int = 0
    attempt: int = 0
    result: c.Result | None = None
    outs: list[bytearray] = field(default_factory=list)
    got: int = 0  # output bytes received
    deferred: list[_Req] = field(default_factory=list)  # READs refused before the RESULT
    slot: int = -1  # the device's input slot it holds until its RESULT
    acked: int = 0  # input bytes acknowledged in this attempt
    invoke_wait: _Req | None = None  # an INVOKE refused while WRITEs were still unanswered
    retransmits: int = 0
    repeats: int = 0
    resets: int = 0


@dataclass(frozen=True)
class _Attempt:
    """A request's tag: which job, which attempt of it (a restarted job's
    older answers are ignored)."""

    job: _Job
    attempt: int


class _Stream:
    """The version-2 stream's bookkeeping; `handle` is the exchange's
    response handler, `refill` feeds it the next sample."""

    MAX_OPEN = 4  # samples between their first WRITE and their delivery

    def __init__(self, session: DeviceSession, samples: Iterator):
        self.s = session
        self.samples = samples
        self.exhausted = False
        self.open: deque[_Job] = deque()
        self.ready: deque[InferenceResult] = deque()
        self.next_index = 0
        self.out_total = sum(t.nbytes for t in session.info.outputs)
        self.in_total = sum(t.nbytes for t in session.info.inputs)
        self.d0 = session.stats.dropped_frames
        # A slot holds one sample's input from its first WRITE to its RESULT:
        # the next sample streams into the other one (one slot: it waits).
        self.slot_owner: list[_Job | None] = [None] * max(1, session.info.input_slots)
        self.waiting: deque[_Job] = deque()  # restarted jobs waiting for a slot

    def _lossy(self) -> bool:
        z = self.s.sizer
        return z is not None and z.ber * 8 * (self.s.chunk + z.overhead) > 0.005

    def _free_slot(self) -> int | None:
        return next((i for i, j in enumerate(self.slot_owner) if j is None), None)

    def refill(self) -> bool:
        slot = self._free_slot()
        if slot is None:
            return False
        if self.waiting:
            self._start(self.waiting.popleft(), slot)
            return True
        if self.exhausted or len(self.open) >= self.MAX_OPEN:
            return False
        try:
            x = next(self.samples)
        except StopIteration:
            self.exhausted = True
            return False
        bufs = self.s._input_bytes(x)
        job = _Job(self.next_index, bufs, c.input_crc(bufs))
        self.next_index += 1
        self.open.append(job)
        self._start(job, slot)
        return True

    def _start(self, job: _Job, slot: int) -> None:
        s = self.s
        job.slot = slot
        self.slot_owner[slot] = job
        job.acked, job.invoke_wait = 0, None
        s._size_frames()
        s._sample_id = (s._sample_id + 1) & 0xFFFFFFFF
        job.sample_id, job.result, job.got, job.deferred = s._sample_id, None, 0, []
        job.outs = [bytearray(t.nbytes) for t in s.info.outputs]
        tag = _Attempt(job, job.attempt)
        reqs = [
            _write_req(ti, off, b[off : off + s.chunk], slot)
            for ti, b in enumerate(job.bufs)
            for off in range(0, len(b), s.chunk)
        ]
        invoke = _Req(c.Invoke(job.sample_id, job.crc, slot, *s._invoke_options), reply_bytes=c.MIN_BODY + 24)
        # On a lossy line an INVOKE right behind its WRITEs often overtakes
        # a resent one (and is refused): there it waits for their ACKs, while
        # the next sample streams into the other slot.
        invoke.gate = lambda: job.acked >= self.in_total or not self._lossy()
        reqs.append(invoke)
        for ti, t in enumerate(s.info.outputs):
            for off in range(0, t.nbytes, s.read_chunk):
                reqs.append(_read_req(ti, off, min(s.read_chunk, t.nbytes - off), job.sample_id))
        for r in reqs:
            r.tag = tag
        s._pending.extend(reqs)

    def _restart(self, job: _Job, why: str) -> None:
        """Send the sample again, behind what is queued (so the samples
        after it keep their inputs), under a new sample_id."""
        job.repeats += 1
        self.s.stats.repeats += 1
        if job.repeats > 4 * self.s.retries:
            raise DeviceError(
                f"device at {self.s.url} could not complete sample {job.index} in {job.repeats} attempts (last: {why})",
                "check the link (cable, baud) and the board's power",
            )
        self._forget(job)
        job.attempt += 1
        if self.slot_owner[job.slot] is job:
            self._start(job, job.slot)
        else:  # its slot went to a later sample after its RESULT
            self.waiting.append(job)

    def _forget(self, job: _Job) -> None:
        s = self.s
        keep = [r for r in s._pending if not (isinstance(r.tag, _Attempt) and r.tag.job is job)]
        s._pending.clear()
        s._pending.extend(keep)
        for seq in [q for q, r in s._inflight.items() if isinstance(r.tag, _Attempt) and r.tag.job is job]:
            del s._inflight[seq]

    def after_reset(self) -> None:
        """The device lost its state: every open sample starts again."""
        self.s._pending.clear()
        self.s._inflight.clear()
        self.slot_owner = [None] * max(1, self.s.info.input_slots)
        self.waiting.clear()
        for job in self.open:
            job.resets += 1
            job.attempt += 1
            self.waiting.append(job)

    def handle(self, r: _Req, msg) -> None:
        tag = r.tag
        job = tag.job
        if tag.attempt != job.attempt:
            return None  # an answer for an abandoned attempt
        if isinstance(msg, c.Error):
            self._error(job, r, msg)
        elif isinstance(msg, c.Ack):
            self.s.stats.payload_bytes_sent += len(r.msg.data)
            job.acked += len(r.msg.data)
            if job.acked >= self.in_total and job.invoke_wait is not None:
                self._reinvoke(job)
        elif isinstance(msg, c.Result):
            self._on_result(job, msg)
        else:
            self._on_data(job, r, msg)
        self._deliver()
        return None

    def _error(self, job: _Job, r: _Req, msg: c.Error) -> None:
        kind = c.TYPE_NAMES[r.msg.TYPE]
        if isinstance(r.msg, c.Invoke) and msg.code in (c.E_INPUT_MISMATCH, c.E_INCOMPLETE_INPUT):
            # a WRITE was lost or is still on its way again: the device ran
            # nothing. Its slot is the sample's alone, so once every WRITE is
            # answered the INVOKE is sent again; if they all were, the whole
            # sample is (the slot holds something else).
            if job.acked < self.in_total:
                job.invoke_wait = r
            else:
                self._restart(job, f"{kind}: {msg.name} ({msg.message})")
        elif isinstance(r.msg, c.Read) and msg.code == c.E_STALE:
            if job.result is None:  # the READ overtook its INVOKE's retransmission
                r.tries = 0
                job.deferred.append(r)
            else:  # the outputs were overwritten before they were read
                self._restart(job, f"{kind}: {msg.name} ({msg.message})")
        else:
            raise DeviceError(
                f"device at {self.s.url} answered {kind} with {msg.name}: {msg.message}",
                _ERROR_HINTS.get(msg.code, "check that the firmware matches the model"),
            )

    def _reinvoke(self, job: _Job) -> None:
        r, job.invoke_wait = job.invoke_wait, None
        job.repeats += 1
        self.s.stats.repeats += 1
        if job.repeats > 4 * self.s.retries:
            raise DeviceError(
                f"device at {self.s.url} refused sample {job.index}'s input {job.repeats} times",
                "check the link (cable, baud) and the board's power",
            )
        r.tries = 0
        self.s._pending.appendleft(r)

    def _on_result(self, job: _Job, msg: c.Result) -> None:
        if msg.sample_id != job.sample_id:
            raise DeviceError(
                f"device at {self.s.url} answered sample {job.sample_id} with sample {msg.sample_id}",
                "check the firmware's INVOKE handling",
            )
        if msg.status != 0:
            raise DeviceError(
                f"inference failed on the device at {self.s.url} (TfLiteStatus {msg.status})",
                "check the firmware's op resolver and arena",
            )
        job.result = msg
        if self.slot_owner[job.slot] is job:
            self.slot_owner[job.slot] = None
        if job.deferred:
            self.s._pending.extendleft(reversed(job.deferred))
            job.deferred = []

    def _on_data(self, job: _Job, r: _Req, msg: c.Data) -> None:
        req = r.msg
        if msg.tensor != req.tensor or msg.offset != req.offset or len(msg.data) > req.length or not msg.data:
            raise DeviceError(
                f"device at {self.s.url} answered READ(t{req.tensor} @{req.offset}) with "
                f"DATA(t{msg.tensor} @{msg.offset} +{len(msg.data)})",
                "check the firmware's READ",
            )
        job.outs[req.tensor][req.offset : req.offset + len(msg.data)] = msg.data
        job.got += len(msg.data)
        self.s.stats.payload_bytes_received += len(msg.data)
        if len(msg.data) < req.length:  # the device's frame is smaller: read on
            more = _read_req(req.tensor, req.offset + len(msg.data), req.length - len(msg.data), req.sample_id)
            more.tag = r.tag
            self.s._pending.appendleft(more)

    def _deliver(self) -> None:
        while self.open and self.open[0].result is not None and self.open[0].got >= self.out_total:
            job = self.open.popleft()
            res = job.result
            dropped = self.s.stats.dropped_frames
            arrays = [
                np.frombuffer(bytes(b), t.np_dtype).reshape(tuple(t.shape)).astype(t.np_dtype.newbyteorder("="))
                for b, t in zip(job.outs, self.s.info.outputs)
            ]
            self.ready.append(
                InferenceResult(
                    outputs=arrays,
                    invoke_us=res.invoke_us,
                    cycles=res.cycles,
                    status=res.status,
                    retransmits=job.retransmits,
                    resyncs=dropped - self.d0,
                    repeats=job.repeats + job.resets,
                    device_resets=job.resets,
                )
            )
            self.d0 = dropped


def _take_ready(pending: deque[_Req]) -> _Req | None:
    """The first pending request that may go: one whose gate is shut holds
    back the later requests of its own job only."""
    held: list = []
    for i, r in enumerate(pending):
        if i >= 256:
            return None
        job = r.tag.job if isinstance(r.tag, _Attempt) else None
        if job is not None and any(h is job for h in held):
            continue
        if r.gate is not None and not r.gate():
            held.append(job)
            continue
        del pending[i]
        return r
    return None


MIN_CHUNK = 64


def _split(r: _Req) -> list[_Req] | None:
    m = r.msg
    if isinstance(m, c.Write) and len(m.data) >= 2 * MIN_CHUNK:
        h = len(m.data) // 2
        return [
            _write_req(m.tensor, m.offset, m.data[:h], m.slot),
            _write_req(m.tensor, m.offset + h, m.data[h:], m.slot),
        ]
    if isinstance(m, c.Read) and m.length >= 2 * MIN_CHUNK:
        h = m.length // 2
        return [
            _read_req(m.tensor, m.offset, h, m.sample_id),
            _read_req(m.tensor, m.offset + h, m.length - h, m.sample_id),
        ]
    return None


_RESPONSE = {
    c.Hello: c.INFO,
    c.Write: c.ACK,
    c.Invoke: c.RESULT,
    c.Read: c.DATA,
    c.Ping: c.PONG,
    c.TraceRead: c.TRACE,
    c.CaptureRead: c.CAPTURE,
}


def check_device_matches(info: DeviceInfo, model) -> list[str]:
    """Differences between what the device holds and `model`
    (a `harness.model.ModelInfo`), one human-readable line each."""
    out = []
    if info.model_sha256 != model.sha256:
        out.append(f"model sha256: device {info.model_sha256[:16]}…, file {model.sha256[:16]}…")
    if info.model_size != model.size:
        out.append(f"model size: device {info.model_size} B, file {model.size} B")
    for kind, dev, want in (("input", info.inputs, model.inputs), ("output", info.outputs, model.outputs)):
        if len(dev) != len(want):
            out.append(f"{kind}s: device has {len(dev)}, model has {len(want)}")
        for i, (d, m) in enumerate(zip(dev, want)):
            name = f"{kind} {i}" + (f" '{m.name}'" if getattr(m, "name", "") else "")
            if d.dtype != m.dtype:
                out.append(f"{name} dtype: device {d.dtype}, model {m.dtype}")
            if tuple(d.shape) != tuple(m.shape):
                out.append(f"{name} shape: device {tuple(d.shape)}, model {tuple(m.shape)}")
            if np.float32(d.scale) != np.float32(m.scale):
                out.append(f"{name} scale: device {d.scale:.9g}, model {m.scale:.9g}")
            if int(d.zero_point) != int(m.zero_point):
                out.append(f"{name} zero point: device {d.zero_point}, model {m.zero_point}")
            if d.nbytes and d.nbytes != m.nbytes and tuple(d.shape) == tuple(m.shape) and d.dtype == m.dtype:
                out.append(f"{name} size: device {d.nbytes} B, model {m.nbytes} B")
    return out
