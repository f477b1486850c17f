"""The wire protocol's pure codec (docs/protocol.md): COBS framing, CRC-32,
frame bodies and typed messages. Bytes in, bytes or messages out; no I/O.

Every decoding failure raises `CodecError` whose `.reason` names it:
frame level `COBS`, `SHORT`, `CRC`, `TOO_LONG` (the golden vectors' names);
message level `UNKNOWN_TYPE`, `BAD_LENGTH` (a valid frame whose payload
does not fit its type). Encoding a value that does not fit its field raises
`CodecError("VALUE")`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from harness.errors import ProtocolError

VERSION = 2  # the highest version this codec speaks
VERSION_MIN = 1  # the lowest
HEADER = 4  # type, flags, seq
TRAILER = 4  # crc
MIN_BODY = HEADER + TRAILER
MAX_BODY_HOST = 65535 + MIN_BODY  # the largest body a host accepts
CHUNK_HEADER = 8  # WRITE/DATA: tensor, 0, 0, offset
CHUNK_OVERHEAD = MIN_BODY + CHUNK_HEADER  # body bytes around a WRITE's or DATA's tensor bytes
FLAG_RETRY = 0x01


def next_seq(seq: int) -> int:
    """The request number after `seq` (1 .. 65535, 0 never used)."""
    return seq % 0xFFFF + 1


def seq_distance(a: int, b: int) -> int:
    """How many requests `b` comes after `a` (mod 65535), in -32767 .. 32767."""
    d = (b - a) % 0xFFFF
    return d - 0xFFFF if d > 0x7FFF else d


def input_crc(bufs) -> int:
    """CRC-32 of every input tensor's bytes in order (version 2 INVOKE)."""
    crc = 0
    for b in bufs:
        crc = zlib.crc32(b, crc)
    return crc & 0xFFFFFFFF


def max_chunk(max_frame: int) -> int:
    """Tensor bytes one WRITE or DATA carries in a body of `max_frame` bytes."""
    return max_frame - CHUNK_OVERHEAD


# INFO flags
INFO_CYCLES_REAL = 0x0001
INFO_HOST_TIME = 0x0002

# INFO (version 2) features: bits a device sets for what it does beyond the
# version's mandatory behaviour. Later versions add bits; never renumbered.
FEATURE_STAGED_OUTPUTS = 0x0001  # the previous sample's outputs stay readable (staging buffer)
FEATURE_NAK = 0x0002  # the device sends NAK on a sequence gap or a bad frame
FEATURE_TRACE = 0x0004  # per-operator trace and capture (TRACE_READ, CAPTURE_READ; INFO trace fields)

# INVOKE (version 2) options, only to a device with FEATURE_TRACE
INVOKE_TRACE = 0x01  # record every operator's output CRC-32 and ticks
INVOKE_CAPTURE = 0x02  # copy the outputs of operators capture_op, capture_op + 1, ... while they fit
TRACE_RECORD = 8  # u32 crc, u32 ticks per operator in a TRACE
TRACE_HEADER = 8  # TRACE: u32 sample_id, u16 n_ops, u16 first_op
CAPTURE_HEADER = 16  # CAPTURE: u32 sample_id, u16 first_op, u16 n_ops, u32 total, u32 offset

# NAK reasons
NAK_GAP, NAK_BAD_FRAME = 1, 2

# message types
HELLO, WRITE, INVOKE, READ, PING = 0x01, 0x02, 0x03, 0x04, 0x06
TRACE_READ, CAPTURE_READ = 0x07, 0x08  # FEATURE_TRACE
ACK, INFO, RESULT, DATA, PONG, NAK = 0x80, 0x81, 0x83, 0x84, 0x86, 0x87
TRACE, CAPTURE = 0x88, 0x89  # FEATURE_TRACE
ERROR, LOG, BOOT = 0xE0, 0xF0, 0xF1

# ERROR codes
E_UNKNOWN_TYPE, E_BAD_LENGTH, E_BAD_TENSOR, E_OUT_OF_RANGE = 1, 2, 3, 4
E_INCOMPLETE_INPUT, E_INVOKE_FAILED, E_VERSION, E_NOT_READY = 5, 6, 7, 8
E_INPUT_MISMATCH, E_STALE = 9, 10  # version 2
ERROR_NAMES = {
    1: "UNKNOWN_TYPE",
    2: "BAD_LENGTH",
    3: "BAD_TENSOR",
    4: "OUT_OF_RANGE",
    5: "INCOMPLETE_INPUT",
    6: "INVOKE_FAILED",
    7: "VERSION",
    8: "NOT_READY",
    9: "INPUT_MISMATCH",
    10: "STALE",
}

# Tensor dtypes on the wire (docs/protocol.md 3.1; hil_protocol.h kDtype*;
# the generated model_data.h kHilDtype*): stable, never renumbered.
DTYPE_CODES = {"float32": 1, "int8": 2, "uint8": 3, "int16": 4, "int32": 5, "float16": 6, "int64": 7, "bool": 8}
DTYPE_NAMES = {v: k for k, v in DTYPE_CODES.items()}
LOG_LEVELS = {0: "error", 1: "warn", 2: "info", 3: "debug"}


class CodecError(ProtocolError):
    """Bytes the codec cannot accept; `.reason` is the error's name."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(
            f"protocol {reason}" + (f": {detail}" if detail else ""),
            "the link is corrupting data — check the cable, baud rate and firmware version",
        )
        self.reason = reason


# --------------------------------------------------------------------- COBS


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode `data` as in Cheshire & Baker's StuffData: the result holds
    no 0x00 (the delimiter is not added); a run of 254 non-zero bytes ends its
    block with code 0xFF and is followed by a new block, even at the end."""
    out = bytearray()
    for part in bytes(data).split(b"\x00"):  # each part but the last is followed by a zero
        i, n = 0, len(part)
        while n - i >= 254:
            out.append(0xFF)
            out += part[i : i + 254]
            i += 254
        out.append(n - i + 1)
        out += part[i:]
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS-encoded frame (without its 0x00); `CodecError("COBS")` if invalid."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise CodecError("COBS", f"zero byte at {i} inside a frame")
        j = i + code
        if j > n:
            raise CodecError("COBS", f"block at {i} runs past the end of the frame")
        block = data[i + 1 : j]
        if 0 in block:
            raise CodecError("COBS", "zero byte inside a frame")
        out += block
        i = j
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def cobs_max_encoded(n: int) -> int:
    """Longest COBS encoding of `n` bytes (without the delimiter)."""
    return n + n // 254 + 1


# --------------------------------------------------------------------- frames


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Frame:
    """A checked frame body: header fields and the raw payload."""

    type: int
    flags: int
    seq: int
    payload: bytes

    def message(self) -> Message:
        return decode_payload(self.type, self.payload)

    @property
    def body(self) -> bytes:
        return encode_body(self.type, self.flags, self.seq, self.payload)


def encode_body(mtype: int, flags: int, seq: int, payload: bytes) -> bytes:
    if not (0 <= mtype <= 0xFF and 0 <= flags <= 0xFF and 0 <= seq <= 0xFFFF):
        raise CodecError("VALUE", f"header out of range (type {mtype}, flags {flags}, seq {seq})")
    head = struct.pack("<BBH", mtype, flags, seq) + bytes(payload)
    return head + struct.pack("<I", crc32(head))


def decode_body(body: bytes, max_body: int = MAX_BODY_HOST) -> Frame:
    """Check a decoded body: length and CRC."""
    if len(body) > max_body:
        raise CodecError("TOO_LONG", f"{len(body)}-byte body, limit {max_body}")
    if len(body) < MIN_BODY:
        raise CodecError("SHORT", f"{len(body)}-byte body, at least {MIN_BODY} needed")
    (want,) = struct.unpack_from("<I", body, len(body) - TRAILER)
    if crc32(body[:-TRAILER]) != want:
        raise CodecError("CRC")
    mtype, flags, seq = struct.unpack_from("<BBH", body, 0)
    return Frame(mtype, flags, seq, bytes(body[HEADER:-TRAILER]))


def encode_wire(body: bytes) -> bytes:
    """A body as it goes on the wire: COBS(body) 0x00."""
    return cobs_encode(body) + b"\x00"


def decode_wire(wire: bytes, max_body: int = MAX_BODY_HOST) -> Frame:
    """Decode exactly one frame, with or without its trailing 0x00."""
    wire = bytes(wire)
    if wire.endswith(b"\x00"):
        wire = wire[:-1]
    if len(wire) > cobs_max_encoded(max_body):
        raise CodecError("TOO_LONG", f"{len(wire)} encoded bytes, body limit {max_body}")
    return decode_body(cobs_decode(wire), max_body)


# --------------------------------------------------------------------- messages


def _u(fmt: str, payload: bytes, mtype: int, exact: bool = True) -> tuple:
    size = struct.calcsize(fmt)
    if len(payload) < size or (exact and len(payload) != size):
        raise CodecError("BAD_LENGTH", f"type 0x{mtype:02X} payload of {len(payload)} bytes")
    return struct.unpack_from(fmt, payload, 0)


def _pack(fmt: str, *values) -> bytes:
    try:
        return struct.pack(fmt, *values)
    except (struct.error, OverflowError) as exc:
        raise CodecError("VALUE", str(exc)) from exc


@dataclass(frozen=True)
class Hello:
    version_min: int = VERSION_MIN
    version_max: int = VERSION
    nonce: int = 0
    TYPE = HELLO

    def payload(self) -> bytes:
        return _pack("<HHI", self.version_min, self.version_max, self.nonce)

    @classmethod
    def parse(cls, p: bytes) -> Hello:
        return cls(*_u("<HHI", p, HELLO))


@dataclass(frozen=True)
class Write:
    """Version 2 uses the second byte as `slot`: which of the device's input
    staging buffers the bytes go to (0 in version 1)."""

    tensor: int
    offset: int
    data: bytes
    slot: int = 0
    TYPE = WRITE

    def payload(self) -> bytes:
        return _pack("<BBHI", self.tensor, self.slot, 0, self.offset) + bytes(self.data)

    @classmethod
    def parse(cls, p: bytes) -> Write:
        t, slot, _, off = _u("<BBHI", p, WRITE, exact=False)
        return cls(t, off, bytes(p[CHUNK_HEADER:]), slot)


@dataclass(frozen=True)
class Invoke:
    """Version 1: `u32 sample_id`. Version 2 adds `u32 input_crc`, the CRC-32
    of every input tensor's bytes in order, and `u8 slot, u8 0, u16 0`: the
    device runs only on exactly that input, taken from that staging slot
    (else ERROR INPUT_MISMATCH)."""

    sample_id: int
    input_crc: int | None = None
    slot: int = 0
    options: int = 0  # INVOKE_TRACE | INVOKE_CAPTURE (FEATURE_TRACE; else 0)
    capture_op: int = 0  # the first operator captured (INVOKE_CAPTURE)
    TYPE = INVOKE

    def payload(self) -> bytes:
        if self.input_crc is None:
            return _pack("<I", self.sample_id)
        return _pack("<IIBBH", self.sample_id, self.input_crc, self.slot, self.options, self.capture_op)

    @classmethod
    def parse(cls, p: bytes) -> Invoke:
        if len(p) == 12:
            return cls(*_u("<IIBBH", p, INVOKE))
        return cls(*_u("<I", p, INVOKE))


@dataclass(frozen=True)
class Read:
    """Version 2 adds `u32 sample_id`: the outputs of that INVOKE, or ERROR
    STALE when the device no longer (or not yet) holds them."""

    tensor: int
    offset: int
    length: int
    sample_id: int | None = None
    TYPE = READ

    def payload(self) -> bytes:
        if self.sample_id is None:
            return _pack("<BBHII", self.tensor, 0, 0, self.offset, self.length)
        return _pack("<BBHIII", self.tensor, 0, 0, self.offset, self.length, self.sample_id)

    @classmethod
    def parse(cls, p: bytes) -> Read:
        if len(p) == 16:
            t, _, _, off, n, sid = _u("<BBHIII", p, READ)
            return cls(t, off, n, sid)
        t, _, _, off, n = _u("<BBHII", p, READ)
        return cls(t, off, n)


@dataclass(frozen=True)
class TraceRead:
    """FEATURE_TRACE: up to `count` operator records from `first_op` of the
    trace of INVOKE `sample_id` (ERROR STALE when the device's last traced
    invoke is another)."""

    sample_id: int
    first_op: int = 0
    count: int = 0xFFFF
    TYPE = TRACE_READ

    def payload(self) -> bytes:
        return _pack("<IHH", self.sample_id, self.first_op, self.count)

    @classmethod
    def parse(cls, p: bytes) -> TraceRead:
        return cls(*_u("<IHH", p, TRACE_READ))


@dataclass(frozen=True)
class CaptureRead:
    """FEATURE_TRACE: `length` bytes from `offset` of the capture of INVOKE `sample_id`."""

    sample_id: int
    offset: int
    length: int
    TYPE = CAPTURE_READ

    def payload(self) -> bytes:
        return _pack("<III", self.sample_id, self.offset, self.length)

    @classmethod
    def parse(cls, p: bytes) -> CaptureRead:
        return cls(*_u("<III", p, CAPTURE_READ))


@dataclass(frozen=True)
class Trace:
    """Operator records `first_op` .. `first_op + len(crcs) - 1` of a traced
    invoke of `n_ops` operators: each its outputs' CRC-32 (over every output
    tensor's bytes in order, as `input_crc`) and its ticks."""

    sample_id: int
    n_ops: int
    first_op: int
    crcs: tuple[int, ...] = ()
    ticks: tuple[int, ...] = ()
    TYPE = TRACE

    def payload(self) -> bytes:
        if len(self.crcs) != len(self.ticks):
            raise CodecError("VALUE", "a TRACE needs one tick count per CRC")
        out = _pack("<IHH", self.sample_id, self.n_ops, self.first_op)
        return out + b"".join(_pack("<II", a, b) for a, b in zip(self.crcs, self.ticks))

    @classmethod
    def parse(cls, p: bytes) -> Trace:
        sid, n, first = _u("<IHH", p, TRACE, exact=False)
        body = p[TRACE_HEADER:]
        if len(body) % TRACE_RECORD:
            raise CodecError("BAD_LENGTH", f"TRACE records of {len(body)} bytes")
        recs = struct.unpack(f"<{len(body) // 4}I", body)
        return cls(sid, n, first, tuple(recs[0::2]), tuple(recs[1::2]))


@dataclass(frozen=True)
class Capture:
    """Bytes `offset` .. of a capture: the first outputs of operators
    `first_op` .. `first_op + n_ops - 1` back to back, `total` bytes in all
    (the last one cut where the device's buffer ended)."""

    sample_id: int
    first_op: int
    n_ops: int
    total: int
    offset: int
    data: bytes = b""
    TYPE = CAPTURE

    def payload(self) -> bytes:
        return _pack("<IHHII", self.sample_id, self.first_op, self.n_ops, self.total, self.offset) + bytes(self.data)

    @classmethod
    def parse(cls, p: bytes) -> Capture:
        sid, first, n, total, off = _u("<IHHII", p, CAPTURE, exact=False)
        return cls(sid, first, n, total, off, bytes(p[CAPTURE_HEADER:]))


@dataclass(frozen=True)
class Ping:
    data: bytes = b""
    TYPE = PING

    def payload(self) -> bytes:
        return bytes(self.data)

    @classmethod
    def parse(cls, p: bytes) -> Ping:
        return cls(bytes(p))


@dataclass(frozen=True)
class Ack:
    TYPE = ACK

    def payload(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, p: bytes) -> Ack:
        if p:
            raise CodecError("BAD_LENGTH", f"ACK with a {len(p)}-byte payload")
        return cls()


def dtype_code(name: str) -> int:
    if name in DTYPE_CODES:
        return DTYPE_CODES[name]
    if name.startswith("dtype") and name[5:].isdigit():
        return int(name[5:])
    raise CodecError("VALUE", f"dtype {name!r} has no wire code")


def dtype_name(code: int) -> str:
    return DTYPE_NAMES.get(code, f"dtype{code}")


@dataclass(frozen=True)
class TensorDescriptor:
    """An input or output tensor as the device reports it."""

    dtype: str
    shape: tuple[int, ...]
    scale: float = 0.0
    zero_point: int = 0
    nbytes: int = 0

    @property
    def np_dtype(self):
        import numpy as np

        if self.dtype not in DTYPE_CODES:
            raise CodecError("VALUE", f"dtype {self.dtype} has no numpy type")
        return np.dtype(self.dtype if self.dtype != "bool" else np.bool_).newbyteorder("<")

    def to_dict(self) -> dict:
        return {
            "dtype": self.dtype,
            "shape": list(self.shape),
            "scale": self.scale,
            "zero_point": self.zero_point,
            "nbytes": self.nbytes,
        }

    def encode(self) -> bytes:
        if len(self.shape) > 255:
            raise CodecError("VALUE", "more than 255 dims")
        return (
            _pack("<BBH", dtype_code(self.dtype), len(self.shape), 0)
            + _pack(f"<{len(self.shape)}i", *self.shape)
            + _pack("<fiI", self.scale, self.zero_point, self.nbytes)
        )

    @classmethod
    def parse_from(cls, p: bytes, pos: int) -> tuple[TensorDescriptor, int]:
        code, ndims, _ = _u("<BBH", p[pos : pos + 4], INFO)
        pos += 4
        need = 4 * ndims + 12
        if len(p) - pos < need:
            raise CodecError("BAD_LENGTH", "INFO ends inside a tensor descriptor")
        dims = struct.unpack_from(f"<{ndims}i", p, pos)
        scale, zp, nbytes = struct.unpack_from("<fiI", p, pos + 4 * ndims)
        return cls(dtype_name(code), tuple(dims), scale, zp, nbytes), pos + need


def _str8(s: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 255:
        raise CodecError("VALUE", "string longer than 255 bytes")
    return bytes([len(b)]) + b


def _read_str8(p: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(p) or pos + 1 + p[pos] > len(p):
        raise CodecError("BAD_LENGTH", "INFO ends inside a string")
    n = p[pos]
    return p[pos + 1 : pos + 1 + n].decode("utf-8", "replace"), pos + 1 + n


_INFO_FIXED = "<HHIHHIII32sI"
_INFO_V2 = "<IIIBBH"  # line_baud, staging_bytes, features, input_slots, 0, 0
_INFO_TRACE = "<HHII"  # FEATURE_TRACE: n_ops, 0, capture_bytes, tick_hz


@dataclass(frozen=True)
class Info:
    """The handshake's answer: what the device is and holds (docs/protocol.md 3.1).
    The host's session keeps it as the device's description."""

    version: int
    flags: int
    max_frame: int
    rx_window: int
    arena_size: int
    arena_used: int
    model_size: int
    model_sha256: str  # hex, as `harness.model.ModelInfo.sha256`; 32 bytes on the wire
    cpu_hz: int
    firmware: str
    board: str
    inputs: tuple[TensorDescriptor, ...] = ()
    outputs: tuple[TensorDescriptor, ...] = ()
    # version 2, after the descriptors (absent from a version-1 INFO)
    line_baud: int = 0  # the device's line rate (0: unknown, e.g. USB CDC)
    staging_bytes: int = 0  # RAM of the device's output staging buffer
    features: int = 0  # FEATURE_*
    input_slots: int = 0  # input staging buffers (WRITE/INVOKE `slot` below this); 0 or 1: none
    # FEATURE_TRACE, after the version-2 fields
    n_ops: int = 0  # operators of subgraph 0 the trace records
    capture_bytes: int = 0  # the capture buffer (HIL_CAPTURE_BYTES; 0: no capture)
    tick_hz: int = 0  # trace ticks per second (0: unknown)
    TYPE = INFO

    @property
    def cycles_real(self) -> bool:
        return bool(self.flags & INFO_CYCLES_REAL)

    @property
    def host_time(self) -> bool:
        """True when invoke_us is the host's time (the simulated board)."""
        return bool(self.flags & INFO_HOST_TIME)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("inputs", "outputs")}
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        d["invoke_us_is_host_time"] = self.host_time
        return d

    def payload(self) -> bytes:
        try:
            sha = bytes.fromhex(self.model_sha256)
        except (TypeError, ValueError):
            sha = b""
        if len(sha) != 32:
            raise CodecError("VALUE", "model_sha256 must be 64 hex digits (32 bytes)")
        if len(self.inputs) > 255 or len(self.outputs) > 255:
            raise CodecError("VALUE", "more than 255 tensors")
        out = _pack(
            _INFO_FIXED,
            self.version,
            self.flags,
            self.max_frame,
            self.rx_window,
            0,
            self.arena_size,
            self.arena_used,
            self.model_size,
            sha,
            self.cpu_hz,
        )
        out += _str8(self.firmware) + _str8(self.board)
        out += bytes([len(self.inputs), len(self.outputs)])
        for t in (*self.inputs, *self.outputs):
            out += t.encode()
        if self.version >= 2:
            out += _pack(_INFO_V2, self.line_baud, self.staging_bytes, self.features, self.input_slots, 0, 0)
            if self.features & FEATURE_TRACE:
                out += _pack(_INFO_TRACE, self.n_ops, 0, self.capture_bytes, self.tick_hz)
        return out

    @property
    def traces(self) -> bool:
        return self.version >= 2 and bool(self.features & FEATURE_TRACE)

    @property
    def staged_outputs(self) -> bool:
        return bool(self.features & FEATURE_STAGED_OUTPUTS)

    @classmethod
    def parse(cls, p: bytes) -> Info:
        p = bytes(p)
        (version, flags, max_frame, rx_window, _, arena_size, arena_used, model_size, sha, cpu_hz) = _u(
            _INFO_FIXED, p, INFO, exact=False
        )
        pos = struct.calcsize(_INFO_FIXED)
        firmware, pos = _read_str8(p, pos)
        board, pos = _read_str8(p, pos)
        if pos + 2 > len(p):
            raise CodecError("BAD_LENGTH", "INFO ends before the tensor counts")
        n_in, n_out = p[pos], p[pos + 1]
        pos += 2
        tensors = []
        for _ in range(n_in + n_out):
            t, pos = TensorDescriptor.parse_from(p, pos)
            tensors.append(t)
        v2 = (0, 0, 0, 0)
        if version >= 2:
            if len(p) - pos < struct.calcsize(_INFO_V2):
                raise CodecError("BAD_LENGTH", "version-2 INFO ends before its line_baud/staging/features")
            v2 = struct.unpack_from(_INFO_V2, p, pos)[:4]
            pos += struct.calcsize(_INFO_V2)
        tr = (0, 0, 0)
        if version >= 2 and v2[2] & FEATURE_TRACE:
            if len(p) - pos < struct.calcsize(_INFO_TRACE):
                raise CodecError("BAD_LENGTH", "INFO with FEATURE_TRACE ends before its trace fields")
            n_ops, _, cap, hz = struct.unpack_from(_INFO_TRACE, p, pos)
            tr = (n_ops, cap, hz)
        # bytes past this point belong to later versions and are ignored
        return cls(
            version,
            flags,
            max_frame,
            rx_window,
            arena_size,
            arena_used,
            model_size,
            sha.hex(),
            cpu_hz,
            firmware,
            board,
            tuple(tensors[:n_in]),
            tuple(tensors[n_in:]),
            *v2,
            *tr,
        )


@dataclass(frozen=True)
class Result:
    sample_id: int
    status: int
    invoke_us: int
    cycles: int = 0
    TYPE = RESULT

    def payload(self) -> bytes:
        return _pack("<IIIIQ", self.sample_id, self.status, self.invoke_us, 0, self.cycles)

    @classmethod
    def parse(cls, p: bytes) -> Result:
        sid, status, us, _, cycles = _u("<IIIIQ", p, RESULT)
        return cls(sid, status, us, cycles)


@dataclass(frozen=True)
class Data:
    tensor: int
    offset: int
    data: bytes
    TYPE = DATA

    def payload(self) -> bytes:
        return _pack("<BBHI", self.tensor, 0, 0, self.offset) + bytes(self.data)

    @classmethod
    def parse(cls, p: bytes) -> Data:
        t, _, _, off = _u("<BBHI", p, DATA, exact=False)
        return cls(t, off, bytes(p[CHUNK_HEADER:]))


@dataclass(frozen=True)
class Pong:
    data: bytes = b""
    TYPE = PONG

    def payload(self) -> bytes:
        return bytes(self.data)

    @classmethod
    def parse(cls, p: bytes) -> Pong:
        return cls(bytes(p))


@dataclass(frozen=True)
class Nak:
    """Version 2, unsolicited (seq 0): requests `first_seq` .. `first_seq +
    count - 1` did not arrive (a gap in the sequence) or arrived corrupt
    (`reason` NAK_BAD_FRAME; then `first_seq` is the one the device expected
    next). The host resends those still unanswered at once."""

    first_seq: int
    count: int
    reason: int = NAK_GAP
    TYPE = NAK

    def payload(self) -> bytes:
        return _pack("<HHHH", self.first_seq, self.count, self.reason, 0)

    @classmethod
    def parse(cls, p: bytes) -> Nak:
        first, count, reason, _ = _u("<HHHH", p, NAK)
        return cls(first, count, reason)


@dataclass(frozen=True)
class Error:
    code: int
    message: str = ""
    TYPE = ERROR

    @property
    def name(self) -> str:
        return ERROR_NAMES.get(self.code, f"ERROR_{self.code}")

    def payload(self) -> bytes:
        return _pack("<HH", self.code, 0) + self.message.encode("utf-8")

    @classmethod
    def parse(cls, p: bytes) -> Error:
        code, _ = _u("<HH", p, ERROR, exact=False)
        return cls(code, bytes(p[4:]).decode("utf-8", "replace"))


@dataclass(frozen=True)
class Log:
    level: int
    text: str
    TYPE = LOG

    def payload(self) -> bytes:
        return _pack("<B", self.level) + self.text.encode("utf-8")

    @classmethod
    def parse(cls, p: bytes) -> Log:
        (level,) = _u("<B", p, LOG, exact=False)
        return cls(level, bytes(p[1:]).decode("utf-8", "replace"))


@dataclass(frozen=True)
class Boot:
    boot_nonce: int
    TYPE = BOOT

    def payload(self) -> bytes:
        return _pack("<I", self.boot_nonce)

    @classmethod
    def parse(cls, p: bytes) -> Boot:
        return cls(*_u("<I", p, BOOT))


Message = (
    Hello
    | Write
    | Invoke
    | Read
    | Ping
    | TraceRead
    | CaptureRead
    | Ack
    | Info
    | Result
    | Data
    | Pong
    | Nak
    | Trace
    | Capture
    | Error
    | Log
    | Boot
)
MESSAGE_CLASSES = {
    c.TYPE: c
    for c in (
        Hello,
        Write,
        Invoke,
        Read,
        Ping,
        TraceRead,
        CaptureRead,
        Ack,
        Info,
        Result,
        Data,
        Pong,
        Nak,
        Trace,
        Capture,
        Error,
        Log,
        Boot,
    )
}
REQUEST_TYPES = frozenset({HELLO, WRITE, INVOKE, READ, PING, TRACE_READ, CAPTURE_READ})
TYPE_NAMES = {c.TYPE: c.__name__.upper() for c in MESSAGE_CLASSES.values()} | {
    TRACE_READ: "TRACE_READ",
    CAPTURE_READ: "CAPTURE_READ",
}


def decode_payload(mtype: int, payload: bytes) -> Message:
    cls = MESSAGE_CLASSES.get(mtype)
    if cls is None:
        raise CodecError("UNKNOWN_TYPE", f"type 0x{mtype:02X}")
    return cls.parse(bytes(payload))


def encode_message(msg: Message, seq: int = 0, flags: int = 0) -> bytes:
    """A message as wire bytes: COBS(body) 0x00."""
    return encode_wire(encode_body(msg.TYPE, flags, seq, msg.payload()))


def message_body(msg: Message, seq: int = 0, flags: int = 0) -> bytes:
    return encode_body(msg.TYPE, flags, seq, msg.payload())


def decode_message(wire: bytes, max_body: int = MAX_BODY_HOST) -> tuple[Message, int, int]:
    """One frame's wire bytes -> (message, seq, flags)."""
    f = decode_wire(wire, max_body)
    return f.message(), f.seq, f.flags


# --------------------------------------------------------------------- stream


@dataclass
class FrameDecoder:
    """Incremental receiver: `feed(bytes)` returns the frames completed by
    those bytes. Bad frames are dropped (their reasons counted in `drops`
    and listed in `drop_log`) and decoding resumes after the next 0x00.
    Frames longer than `max_body` are skipped without being buffered."""

    max_body: int = MAX_BODY_HOST
    drops: dict = field(default_factory=dict)
    drop_log: list = field(default_factory=list)
    keep_log: int = 64

    def __post_init__(self):
        self._buf = bytearray()
        self._skipping = False
        self._max_enc = cobs_max_encoded(self.max_body)

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        self.drop_log.append(reason)
        if len(self.drop_log) > self.keep_log:
            del self.drop_log[: len(self.drop_log) - self.keep_log]

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def reset(self) -> None:
        self._buf.clear()
        self._skipping = False

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        data = bytes(data)
        pos, n = 0, len(data)
        while pos < n:
            z = data.find(0, pos)
            end = n if z < 0 else z
            if not self._skipping:
                self._buf += data[pos:end]
                if len(self._buf) > self._max_enc:
                    self._buf.clear()
                    self._skipping = True
                    self._drop("TOO_LONG")
            if z < 0:
                break
            pos = z + 1
            if self._skipping:
                self._skipping = False
                continue
            if not self._buf:
                continue  # empty frame: ignored
            enc = bytes(self._buf)
            self._buf.clear()
            try:
                out.append(decode_body(cobs_decode(enc), self.max_body))
            except CodecError as exc:
                self._drop(exc.reason)
        return out
