"""The simulated board (SIL device): speaks the wire protocol of
docs/protocol.md and runs inference with TensorFlow Lite Micro's own kernels
(the `tflite-micro` package), so its outputs are what TFLM firmware computes.

`SimDevice` is the board's protocol logic (no I/O): frames in, frames out.
`start_sim()` puts it behind an emulated serial line (`harness.device.link`)
on a real pseudo-terminal or a TCP socket, in background threads:

    with start_sim("model.tflite", listen="pty") as sim:
        with DeviceSession(sim.url) as s:
            s.handshake()

Its `invoke_us` is the host's wall time for TFLM's `Invoke()` (INFO flags
bit 1 says so), or the emulated compute time (`invoke_ms`, with its jitter)
when that is longer; `cycles` is 0. It speaks protocol versions 1 and 2
(`max_version=1` makes a version-1 board); in version 2 it keeps the previous
sample's outputs in a staging buffer and sends NAK on a sequence gap or a
corrupt frame.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import __version__
from harness.arena import measure_arena
from harness.boards import Board, load_board
from harness.device.link import Faults, LineFaults, LinePipe, RxBuffer, make_transport, parse_faults
from harness.errors import ConfigError
from harness.model import inspect_bytes, read_model_bytes
from harness.protocol import codec as c
from harness.runtime import HostInterpreter

FIRMWARE = f"tinyhil-sim {__version__}"
BOOT_TIME_S = 0.02  # a reset loses what arrives while the board boots
SIM_CAPTURE_BYTES = 16384  # the board's capture buffer (the firmware's HIL_CAPTURE_BYTES)
TRACE_TICK_HZ = 1_000_000_000  # the board's trace ticks are host nanoseconds

_ARENA_CACHE: dict[str, int] = {}


def measured_arena(model: bytes) -> int:
    """TFLM's arena need for `model` (harness.arena), cached per model."""
    sha = hashlib.sha256(model).hexdigest()
    if sha not in _ARENA_CACHE:
        with tempfile.TemporaryDirectory(prefix="hil-sim-") as d:
            p = Path(d) / "model.tflite"
            p.write_bytes(model)
            _ARENA_CACHE[sha] = measure_arena(p).bytes
    return _ARENA_CACHE[sha]


@dataclass
class SimStats:
    frames_received: int = 0
    frames_sent: int = 0
    requests: int = 0
    duplicates: int = 0
    invokes: int = 0
    resets: int = 0
    stalls: int = 0
    errors: dict = field(default_factory=dict)
    invoke_us: list = field(default_factory=list)  # host time of each Invoke()
    naks: int = 0
    mismatches: int = 0  # INVOKEs refused: the input's CRC did not match


class SimDevice:
    """The board: protocol state machine around a TFLM interpreter.

    `handle(frame) -> response body or None`; `boot() -> BOOT body`.
    When the model does not fit the board (arena > RAM, model > flash) the
    device still answers HELLO (INFO tells the truth) and answers every
    other request with `ERROR NOT_READY`, as the firmware does.
    """

    def __init__(
        self,
        model: bytes,
        board: str | Board = "sim",
        *,
        max_frame: int | None = None,
        rx_window: int | None = None,
        arena_size: int | None = None,
        max_version: int = c.VERSION,
        invoke_ms: float = 0.0,
        invoke_jitter_ms: float = 0.0,
        seed: int = 0,
        staging: bool = True,
        line_baud: int = 0,
        sleep=time.sleep,
        perturb: tuple[int, int] | None = None,
        capture_bytes: int = SIM_CAPTURE_BYTES,
    ):
        if not c.VERSION_MIN <= int(max_version) <= c.VERSION:
            raise ConfigError(
                f"protocol version {max_version} is not one this board speaks",
                f"use {c.VERSION_MIN}..{c.VERSION}",
            )
        if invoke_ms < 0 or invoke_jitter_ms < 0:
            raise ConfigError("invoke time and jitter must be 0 or more ms", "use e.g. --invoke-ms 5")
        self.max_version = int(max_version)
        self.invoke_ms = float(invoke_ms)
        self.invoke_jitter_ms = float(invoke_jitter_ms)
        self._jitter_rng = np.random.default_rng(int(seed) + 104729)
        self._sleep = sleep
        self.line_baud = int(line_baud)
        self.model = bytes(model)
        self.info_model = inspect_bytes(self.model)
        self.board = board if isinstance(board, Board) else load_board(board)
        self.max_frame = int(max_frame or self.board.max_frame)
        self.rx_window = int(rx_window or self.board.rx_window)
        if self.max_frame < 64:
            raise ConfigError(f"max_frame {self.max_frame} is too small", "use at least 64 bytes")
        self.arena_used = int(arena_size) if arena_size else measured_arena(self.model)
        self.not_ready = ""
        if self.arena_used > self.board.ram_bytes:
            self.not_ready = (
                f"tensor arena {self.arena_used} B does not fit the board's {self.board.ram_bytes} B of RAM"
            )
        elif len(self.model) > self.board.flash_bytes:
            self.not_ready = f"model {len(self.model)} B does not fit the board's {self.board.flash_bytes} B of flash"
        self._interp = None
        if not self.not_ready:
            self._interp = HostInterpreter(self.model, "tflm")
        self._ins = self.info_model.inputs
        self._outs = self.info_model.outputs
        # the trace runs the model one operator at a time (harness.localize.OpChain)
        from harness.localize import model_ops

        self.ops = model_ops(self.model)
        self.perturb = perturb
        if perturb is not None and not 0 <= perturb[0] < len(self.ops):
            raise ConfigError(
                f"fault op={perturb[0]}: the model has {len(self.ops)} operators", f"use 0..{len(self.ops) - 1}"
            )
        self.capture_bytes = int(capture_bytes)
        self._chain = None
        # staging (version 2): two input slots, so the next sample streams in
        # while one waits or runs, and one set of outputs (the previous sample's)
        self.input_slots = 2 if staging else 0
        self.staging_bytes = (
            (self.input_slots * sum(t.nbytes for t in self._ins) + sum(t.nbytes for t in self._outs)) if staging else 0
        )
        self.stats = SimStats()
        self.boot_nonce = 0
        self._reset_state()

    # ------------------------------------------------------------- state
    def _reset_state(self) -> None:
        self._in_bufs = [bytearray(t.nbytes) for t in self._ins]
        self._in_marks = [np.zeros(t.nbytes, bool) for t in self._ins]
        self._slot_bufs = [[bytearray(t.nbytes) for t in self._ins] for _ in range(self.input_slots)]
        self._slot_marks = [[np.zeros(t.nbytes, bool) for t in self._ins] for _ in range(self.input_slots)]
        self._out_bufs: list[bytes] | None = None  # None until an INVOKE succeeds
        self._out_sample: int | None = None  # the INVOKE (version 2 sample_id) they belong to
        self._staged: tuple[int, list[bytes]] | None = None  # the outputs before them
        self._trace: tuple[int, list[int], list[int]] | None = None  # (sample_id, crcs, ticks)
        self._capture: tuple[int, int, int, bytes] | None = None  # (sample_id, first_op, n_ops, bytes)
        self.version = 1  # negotiated by HELLO
        self._expect: int | None = None  # the seq the next new request should carry (version 2)
        # seq -> (type, payload digest, response body): 2 x rx_window requests
        self._memory: OrderedDict[int, tuple[int, bytes, bytes]] = OrderedDict()

    def boot(self) -> bytes:
        """Power-on / reset: state lost; returns the BOOT frame's body."""
        self._reset_state()
        self.boot_nonce = int.from_bytes(os.urandom(4), "little")
        return c.message_body(c.Boot(self.boot_nonce), 0)

    def info(self) -> c.Info:
        def desc(t):
            return c.TensorDescriptor(t.dtype, tuple(t.shape), float(t.scale), int(t.zero_point), t.nbytes)

        return c.Info(
            version=self.version,
            flags=c.INFO_HOST_TIME,
            max_frame=self.max_frame,
            rx_window=self.rx_window,
            arena_size=self.arena_used,
            arena_used=self.arena_used,
            model_size=len(self.model),
            model_sha256=self.info_model.sha256,
            cpu_hz=int(self.board.get("clock_hz", 0) or 0),
            firmware=FIRMWARE,
            board=self.board.id,
            inputs=tuple(desc(t) for t in self._ins),
            outputs=tuple(desc(t) for t in self._outs),
            line_baud=self.line_baud,
            staging_bytes=self.staging_bytes,
            features=(c.FEATURE_STAGED_OUTPUTS if self.staging_bytes else 0) | c.FEATURE_NAK | c.FEATURE_TRACE,
            input_slots=self.input_slots,
            n_ops=len(self.ops),
            capture_bytes=self.capture_bytes,
            tick_hz=TRACE_TICK_HZ,
        )

    # ------------------------------------------------------------- NAK
    def nak_bad_frame(self) -> bytes | None:
        """A frame was dropped (CRC, COBS, ...): in version 2, NAK the
        request expected next — most likely the one that was garbled."""
        if self.version < 2 or self._expect is None:
            return None
        seq, self._expect = self._expect, c.next_seq(self._expect)
        self.stats.naks += 1
        return c.message_body(c.Nak(seq, 1, c.NAK_BAD_FRAME), 0)

    def _track(self, frame: c.Frame) -> bytes | None:
        """Version 2: a request that skips numbers reveals lost ones."""
        if self.version < 2 or self._expect is None or frame.type not in c.REQUEST_TYPES:
            return None
        first = self._expect
        d = c.seq_distance(first, frame.seq)
        if d < 0:
            return None  # a retransmission
        self._expect = c.next_seq(frame.seq)
        if 0 < d <= 4 * self.rx_window:
            self.stats.naks += 1
            return c.message_body(c.Nak(first, d, c.NAK_GAP), 0)
        return None

    # ------------------------------------------------------------- requests
    def handle_all(self, frame: c.Frame) -> list[bytes]:
        """The bodies to send for `frame`: a NAK first when it revealed a gap."""
        nak = self._track(frame)
        resp = self.handle(frame)
        return [b for b in (nak, resp) if b is not None]

    def handle(self, frame: c.Frame) -> bytes | None:
        st = self.stats
        st.frames_received += 1
        if frame.type == c.HELLO:
            self._memory.clear()  # a (new) host numbers from 1 again
        else:
            key = hashlib.blake2s(bytes([frame.type]) + frame.payload, digest_size=8).digest()
            seen = self._memory.get(frame.seq)
            if seen is not None and seen[0] == frame.type and seen[1] == key and frame.type != c.READ:
                st.duplicates += 1
                return seen[2]
        try:
            msg = frame.message()
        except c.CodecError as exc:
            code = c.E_UNKNOWN_TYPE if exc.reason == "UNKNOWN_TYPE" else c.E_BAD_LENGTH
            return self._error(frame, code, str(exc.args[0]))
        st.requests += 1
        if isinstance(msg, c.Hello):
            chosen = min(self.max_version, msg.version_max)
            if chosen >= max(msg.version_min, c.VERSION_MIN):
                self.version = chosen
                self._expect = c.next_seq(frame.seq)
                resp = c.message_body(self.info(), frame.seq)
            else:
                return self._error(
                    frame,
                    c.E_VERSION,
                    f"device speaks {c.VERSION_MIN}..{self.max_version}, "
                    f"host asked {msg.version_min}..{msg.version_max}",
                )
        elif isinstance(msg, c.Ping):
            resp = c.message_body(c.Pong(msg.data), frame.seq)
        elif not isinstance(msg, (c.Write, c.Invoke, c.Read, c.TraceRead, c.CaptureRead)):
            return self._error(frame, c.E_UNKNOWN_TYPE, f"type 0x{frame.type:02X} is not a request")
        elif self.not_ready:
            return self._error(frame, c.E_NOT_READY, self.not_ready)
        elif self.version < 2 and (
            isinstance(msg, (c.TraceRead, c.CaptureRead))
            or (isinstance(msg, c.Invoke) and msg.input_crc is not None)
            or (isinstance(msg, c.Read) and msg.sample_id is not None)
        ):
            return self._error(frame, c.E_BAD_LENGTH, f"{c.TYPE_NAMES[frame.type]}: a version-2 form in version 1")
        elif isinstance(msg, c.Write):
            resp = self._write(frame, msg)
        elif isinstance(msg, c.Invoke):
            resp = self._invoke(frame, msg)
        elif isinstance(msg, c.TraceRead):
            resp = self._trace_read(frame, msg)
        elif isinstance(msg, c.CaptureRead):
            resp = self._capture_read(frame, msg)
        else:
            resp = self._read(frame, msg)
        if frame.type != c.HELLO:
            self._remember(frame, resp)
        return resp

    def _remember(self, frame: c.Frame, resp: bytes) -> None:
        key = hashlib.blake2s(bytes([frame.type]) + frame.payload, digest_size=8).digest()
        self._memory[frame.seq] = (frame.type, key, resp)
        self._memory.move_to_end(frame.seq)
        while len(self._memory) > 2 * self.rx_window:
            self._memory.popitem(last=False)

    def _error(self, frame: c.Frame, code: int, text: str) -> bytes:
        name = c.ERROR_NAMES.get(code, str(code))
        self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
        resp = c.message_body(c.Error(code, text[:200]), frame.seq)
        if frame.type in c.REQUEST_TYPES and frame.type != c.HELLO:
            self._remember(frame, resp)
        return resp

    def _write(self, frame: c.Frame, m: c.Write) -> bytes:
        if m.tensor >= len(self._ins):
            return self._error(frame, c.E_BAD_TENSOR, f"input {m.tensor}: the model has {len(self._ins)} inputs")
        n = self._ins[m.tensor].nbytes
        if m.offset + len(m.data) > n:
            return self._error(
                frame, c.E_OUT_OF_RANGE, f"input {m.tensor}: bytes {m.offset}..{m.offset + len(m.data)} beyond its {n}"
            )
        bufs, marks = self._buffers(m.slot)
        if bufs is None:
            return self._error(frame, c.E_BAD_TENSOR, f"slot {m.slot}: the device has {self.input_slots} input slots")
        bufs[m.tensor][m.offset : m.offset + len(m.data)] = m.data
        marks[m.tensor][m.offset : m.offset + len(m.data)] = True
        return c.message_body(c.Ack(), frame.seq)

    def _buffers(self, slot: int):
        """Where a WRITE's bytes go: an input slot (version 2 with staging) or the tensors."""
        if self.version >= 2 and self.input_slots:
            return (self._slot_bufs[slot], self._slot_marks[slot]) if slot < self.input_slots else (None, None)
        return (self._in_bufs, self._in_marks) if slot == 0 else (None, None)

    def _invoke(self, frame: c.Frame, m: c.Invoke) -> bytes:
        bufs, all_marks = self._buffers(m.slot)
        if bufs is None:
            return self._error(frame, c.E_BAD_TENSOR, f"slot {m.slot}: the device has {self.input_slots} input slots")
        for i, marks in enumerate(all_marks):
            have = int(marks.sum())
            if have != marks.size:
                return self._error(frame, c.E_INCOMPLETE_INPUT, f"input {i}: {have} of {marks.size} bytes written")
        if m.input_crc is not None:
            have = c.input_crc(bufs)
            if have != m.input_crc:
                self.stats.mismatches += 1
                return self._error(frame, c.E_INPUT_MISMATCH, f"input CRC {have:08x}, INVOKE expects {m.input_crc:08x}")
        arrays = [np.frombuffer(bytes(b), t.np_dtype).reshape(t.shape) for b, t in zip(bufs, self._ins)]
        t0 = time.perf_counter()
        try:
            if m.options or self.perturb is not None:
                outs = self._run_traced(m, arrays)
            else:
                outs = self._interp.run(arrays)
        except Exception as exc:  # the interpreter's failure is the device's answer
            return self._error(frame, c.E_INVOKE_FAILED, f"{type(exc).__name__}: {exc}".splitlines()[0])
        want = self._compute_s()
        if want > 0:
            left = want - (time.perf_counter() - t0)
            if left > 0:
                self._sleep(left)
        us = int(round((time.perf_counter() - t0) * 1e6))
        if self.staging_bytes and self._out_bufs is not None and self._out_sample is not None:
            self._staged = (self._out_sample, self._out_bufs)
        self._out_bufs = [np.ascontiguousarray(o, t.np_dtype).tobytes() for o, t in zip(outs, self._outs)]
        self._out_sample = m.sample_id
        for marks in all_marks:
            marks[:] = False
        self.stats.invokes += 1
        self.stats.invoke_us.append(us)
        return c.message_body(c.Result(m.sample_id, 0, min(us, 0xFFFFFFFF), 0), frame.seq)

    def _run_traced(self, m: c.Invoke, arrays) -> list[np.ndarray]:
        """The model one operator at a time: the trace, the capture, and the
        perturbation fault (the operators after it compute on from it)."""
        from harness.localize import OpChain, output_crc

        if self._chain is None:
            self._chain = OpChain(self.model)
        k, lsb = self.perturb if self.perturb is not None else (-1, 0)
        per_op, ns, outs = self._chain.run(arrays, k, lsb)
        if m.options & c.INVOKE_TRACE:
            self._trace = (m.sample_id, [output_crc(o) for o in per_op], [min(t, 0xFFFFFFFF) for t in ns])
        if m.options & c.INVOKE_CAPTURE and m.capture_op < len(per_op):
            buf, n = b"", 0
            for o in per_op[m.capture_op :]:
                b = np.ascontiguousarray(o[0]).tobytes()
                room = self.capture_bytes - len(buf)
                if room <= 0:
                    break
                buf += b[:room]
                n += 1
            self._capture = (m.sample_id, m.capture_op, n, buf)
        return outs

    def _trace_read(self, frame: c.Frame, m: c.TraceRead) -> bytes:
        if self._trace is None or self._trace[0] != m.sample_id:
            return self._error(frame, c.E_STALE, f"no trace of sample {m.sample_id} held")
        _, crcs, ticks = self._trace
        if m.first_op > len(crcs):
            return self._error(frame, c.E_OUT_OF_RANGE, f"operator {m.first_op}: the model has {len(crcs)}")
        per = (self.max_frame - c.MIN_BODY - c.TRACE_HEADER) // c.TRACE_RECORD
        end = min(len(crcs), m.first_op + m.count, m.first_op + per)
        tr = c.Trace(m.sample_id, len(crcs), m.first_op, tuple(crcs[m.first_op : end]), tuple(ticks[m.first_op : end]))
        return c.message_body(tr, frame.seq)

    def _capture_read(self, frame: c.Frame, m: c.CaptureRead) -> bytes:
        if self._capture is None or self._capture[0] != m.sample_id:
            return self._error(frame, c.E_STALE, f"no capture of sample {m.sample_id} held")
        sid, first, n, buf = self._capture
        if m.offset > len(buf):
            return self._error(frame, c.E_OUT_OF_RANGE, f"capture offset {m.offset} beyond its {len(buf)} bytes")
        k = min(m.length, self.max_frame - c.MIN_BODY - c.CAPTURE_HEADER)
        cap = c.Capture(sid, first, n, len(buf), m.offset, buf[m.offset : m.offset + k])
        return c.message_body(cap, frame.seq)

    def _read(self, frame: c.Frame, m: c.Read) -> bytes:
        if m.tensor >= len(self._outs):
            return self._error(frame, c.E_BAD_TENSOR, f"output {m.tensor}: the model has {len(self._outs)} outputs")
        n = self._outs[m.tensor].nbytes
        if m.offset + m.length > n:
            return self._error(
                frame, c.E_OUT_OF_RANGE, f"output {m.tensor}: bytes {m.offset}..{m.offset + m.length} beyond its {n}"
            )
        if self._out_bufs is None and m.sample_id is None:
            return self._error(frame, c.E_INCOMPLETE_INPUT, "no INVOKE since the device started")
        bufs = self._out_bufs
        if m.sample_id is not None and m.sample_id != self._out_sample:
            if self._staged is None or self._staged[0] != m.sample_id:
                return self._error(frame, c.E_STALE, f"no outputs of sample {m.sample_id} held")
            bufs = self._staged[1]
        k = min(m.length, c.max_chunk(self.max_frame))
        return c.message_body(c.Data(m.tensor, m.offset, bufs[m.tensor][m.offset : m.offset + k]), frame.seq)

    def _compute_s(self) -> float:
        """The emulated compute time of one invoke, seconds."""
        if not self.invoke_ms and not self.invoke_jitter_ms:
            return 0.0
        ms = self.invoke_ms
        if self.invoke_jitter_ms:
            ms += float(self._jitter_rng.normal(0.0, self.invoke_jitter_ms))
        return max(0.0, ms) / 1000.0


def _model_bytes(model) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    return read_model_bytes(model)


class SimHandle:
    """A running simulated board: `.url` to open, `.close()` to stop."""

    def __init__(
        self,
        device: SimDevice,
        listen: str,
        baud: int,
        latency_ms: float,
        faults: Faults,
        seed: int,
        rx_buffer: int | None,
    ):
        self.device = device
        self.faults = faults
        self.baud = int(baud)
        self.latency_ms = float(latency_ms)
        self._rng = np.random.default_rng(seed + 7919)
        cap = (
            rx_buffer
            or int(device.board.get("rx_buffer", 0) or 0)
            or device.rx_window * (c.cobs_max_encoded(device.max_frame) + 2) + 256
        )
        self.rx = RxBuffer(cap)
        self._decoder = c.FrameDecoder(max_body=device.max_frame)
        self._stop = threading.Event()
        self._booting_until = 0.0
        self._frames_since_reset = 0
        self._reset_done = False
        self.transport = make_transport(listen, self._from_host, refuse=self._busy)
        lat = self.latency_ms / 1000.0
        self.to_device = LinePipe(self._into_device, self.baud, lat, LineFaults(faults, seed * 2 + 1), "h2d")
        self.to_host = LinePipe(self.transport.send, self.baud, lat, LineFaults(faults, seed * 2 + 2), "d2h")
        self.url = self.transport.url
        self._thread = threading.Thread(target=self._run, name="sim-device", daemon=True)
        self._thread.start()
        self._send(device.boot())
        self._log(
            2,
            f"{FIRMWARE} on board {device.board.id}: arena {device.arena_used} B of "
            f"{device.board.ram_bytes} B RAM" + (f"; NOT READY: {device.not_ready}" if device.not_ready else ""),
        )

    def _busy(self, peer: str, since: str) -> bytes:
        """What a second host gets: one LOG frame, then the line closes."""
        body = c.message_body(c.Log(0, f"busy: serving {peer} since {since}"), 0)
        return b"\x00" + c.encode_wire(body)

    # bytes from the host's port into the line
    def _from_host(self, data: bytes) -> None:
        self.to_device.put(data)

    def _into_device(self, data: bytes) -> None:
        if time.monotonic() < self._booting_until:
            return
        self.rx.push(data)

    def _send(self, body: bytes) -> None:
        self.device.stats.frames_sent += 1
        self.to_host.put(b"\x00" + c.encode_wire(body))

    def _log(self, level: int, text: str) -> None:
        self._send(c.message_body(c.Log(level, text), 0))

    def reset(self) -> None:
        """What a reset button does: state and buffered bytes lost, BOOT sent."""
        self.device.stats.resets += 1
        self._booting_until = time.monotonic() + BOOT_TIME_S
        self.rx.clear()
        self._decoder.reset()
        self._frames_since_reset = 0
        self._send(self.device.boot())

    def _run(self) -> None:
        f = self.faults
        while not self._stop.is_set():
            chunk = self.rx.pop_frame(0.1)
            if not chunk:
                continue
            dropped = self._decoder.dropped
            frames = self._decoder.feed(chunk)
            if self._decoder.dropped > dropped:
                nak = self.device.nak_bad_frame()
                if nak is not None:
                    self._send(nak)
            for frame in frames:
                if self._stop.is_set():
                    return
                if f.stall_p and self._rng.random() < f.stall_p:
                    self.device.stats.stalls += 1
                    self._stop.wait(f.stall_s)
                for body in self.device.handle_all(frame):
                    self._send(body)
                self._frames_since_reset += 1
                if (f.reset_after and not self._reset_done and self._frames_since_reset >= f.reset_after) or (
                    f.reset_every and self._frames_since_reset >= f.reset_every
                ):
                    self._reset_done = True
                    self.reset()
                    break

    @property
    def dropped_frames(self) -> dict:
        return dict(self._decoder.drops)

    def summary(self) -> dict:
        s = self.device.stats
        us = sorted(s.invoke_us)
        return {
            "url": self.url,
            "board": self.device.board.id,
            "baud": self.baud,
            "latency_ms": self.latency_ms,
            "faults": self.faults.describe(),
            "requests": s.requests,
            "duplicates": s.duplicates,
            "invokes": s.invokes,
            "resets": s.resets,
            "stalls": s.stalls,
            "errors": dict(s.errors),
            "dropped_frames": self.dropped_frames,
            "rx_overrun_bytes": self.rx.overrun_bytes,
            "rx_high_water": self.rx.high_water,
            "rx_capacity": self.rx.capacity,
            "invoke_us_host_median": us[len(us) // 2] if us else None,
            "protocol_version": self.device.version,
            "naks": s.naks,
            "input_mismatches": s.mismatches,
        }

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.rx.wake()
        self.to_device.close()
        self.to_host.close()
        self.transport.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_sim(
    model,
    listen: str = "pty",
    board: str | Board = "sim",
    baud: int = 921600,
    latency_ms: float = 1.0,
    faults: str | Faults | None = None,
    seed: int = 0,
    *,
    max_frame: int | None = None,
    rx_window: int | None = None,
    arena_size: int | None = None,
    rx_buffer: int | None = None,
    max_version: int = c.VERSION,
    invoke_ms: float = 0.0,
    invoke_jitter_ms: float = 0.0,
    staging: bool = True,
    capture_bytes: int = SIM_CAPTURE_BYTES,
) -> SimHandle:
    """Start a simulated board in background threads of this process.

    `model`: path or bytes of a .tflite. `listen`: "pty" or "tcp:PORT"
    ("tcp:0" picks a free port). `baud`: line rate (8N1: baud/10 bytes/s per
    direction; 0 = unlimited). `faults`: see `link.FAULTS_HELP`.
    `arena_size` skips the arena measurement (bytes). `max_version` 1 makes
    a version-1 board; `invoke_ms` (± `invoke_jitter_ms`, one standard
    deviation) emulates the device's compute time; `staging=False` keeps no
    previous outputs."""
    if baud < 0:
        raise ConfigError(f"baud {baud} is negative", "use a positive baud rate, or 0 for an unlimited line")
    if not (latency_ms >= 0 and latency_ms != float("inf")):  # NaN fails the first test
        raise ConfigError(f"latency {latency_ms} ms must be a finite number, 0 or more", "use e.g. 1")
    if arena_size is not None and int(arena_size) < 1:
        raise ConfigError(f"arena size {arena_size} must be a positive number of bytes", "leave it out to measure it")
    faults = parse_faults(faults)
    dev = SimDevice(
        _model_bytes(model),
        board,
        max_frame=max_frame,
        rx_window=rx_window,
        arena_size=arena_size,
        max_version=max_version,
        invoke_ms=invoke_ms,
        invoke_jitter_ms=invoke_jitter_ms,
        seed=int(seed),
        staging=staging,
        line_baud=int(baud),
        perturb=(faults.perturb_op, faults.perturb_lsb) if faults.perturb_op >= 0 else None,
        capture_bytes=capture_bytes,
    )
    return SimHandle(dev, listen, baud, latency_ms, faults, int(seed), rx_buffer)
