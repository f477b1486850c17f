"""Generate the protocol's golden vectors from the Python codec.

    python tests/golden/make_vectors.py          # rewrite vectors.json and frames.txt
    python tests/golden/make_vectors.py --check  # exit 1 if the committed files differ

The Python codec (tests/test_protocol_golden.py) and the firmware's C++ codec
are both held to these bytes. Everything here is deterministic: no random
source without a fixed seed, no timestamps.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from harness.protocol import codec as c  # noqa: E402

MAX_BODY = 1024  # every vector is decoded with this body limit


# Fields a compatible extension added (FEATURE_TRACE): left out of a vector
# while they hold their default, so the vectors before it stay byte-identical.
LATER_FIELDS = {"options", "capture_op", "n_ops", "capture_bytes", "tick_hz"}


def to_fields(msg) -> dict:
    out = {}
    for f in fields(msg):
        v = getattr(msg, f.name)
        if f.name in LATER_FIELDS and v == f.default:
            continue
        if isinstance(v, bytes):
            v = v.hex()
        elif isinstance(v, tuple) and v and is_dataclass(v[0]):
            v = [to_fields(t) for t in v]
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def from_fields(mtype: int, d: dict):
    cls = c.MESSAGE_CLASSES[mtype]
    kw = {}
    for f in fields(cls):
        if f.name not in d:  # a field of a later version: its default
            continue
        v = d[f.name]
        if f.name == "data":
            v = bytes.fromhex(v)
        elif f.name in ("crcs", "ticks"):
            v = tuple(v)
        elif f.name in ("inputs", "outputs"):
            v = tuple(
                c.TensorDescriptor(t["dtype"], tuple(t["shape"]), t["scale"], t["zero_point"], t["nbytes"]) for t in v
            )
        kw[f.name] = v
    return cls(**kw)


def _info(**over) -> c.Info:
    model = b"golden-model"
    kw = dict(
        version=1,
        flags=c.INFO_HOST_TIME,
        max_frame=4096,
        rx_window=8,
        arena_size=65536,
        arena_used=23456,
        model_size=len(model),
        model_sha256=hashlib.sha256(model).hexdigest(),
        cpu_hz=0,
        firmware="tinyhil-sim 0.1.0",
        board="sim",
        inputs=(c.TensorDescriptor("float32", (1, 64, 96, 1), 0.0, 0, 24576),),
        outputs=(
            c.TensorDescriptor("int8", (1, 4), 0.00390625, -128, 4),
            c.TensorDescriptor("float32", (1, 4), 0.0, 0, 16),
        ),
    )
    kw.update(over)
    return c.Info(**kw)


def frame_vectors() -> list[tuple[str, object, int, int]]:
    """(name, message, seq, flags)"""
    rng = random.Random(4)
    blob = bytes(rng.randrange(256) for _ in range(300))
    return [
        ("hello", c.Hello(1, 1, 0x12345678), 1, 0),
        ("hello_range", c.Hello(1, 3, 0), 2, 0),
        ("write_small", c.Write(0, 0, bytes(range(16))), 3, 0),
        ("write_zeros", c.Write(1, 4096, bytes(20)), 4, 0),
        ("write_254_run", c.Write(0, 8, b"\x55" * 254), 5, 0),
        ("write_random_300", c.Write(0, 1000, blob), 6, 0),
        ("write_retry", c.Write(0, 0, b"\x00\x01\x02\x03"), 7, c.FLAG_RETRY),
        ("write_max_body", c.Write(0, 0, bytes((i * 7 + 1) % 256 for i in range(MAX_BODY - 16))), 8, 0),
        ("invoke", c.Invoke(42), 9, 0),
        ("invoke_retry_seq_max", c.Invoke(0xFFFFFFFF), 0xFFFF, c.FLAG_RETRY),
        ("read", c.Read(0, 0, 4096), 10, 0),
        ("read_offset", c.Read(2, 4080, 16), 11, 0),
        ("ping_empty", c.Ping(b""), 12, 0),
        ("ping_data", c.Ping(b"\x00\xff\x00hello\x00"), 13, 0),
        ("ack", c.Ack(), 3, 0),
        ("info", _info(), 1, 0),
        (
            "info_no_tensors",
            _info(inputs=(), outputs=(), firmware="", board="qemu_m55", flags=c.INFO_CYCLES_REAL, cpu_hz=32000000),
            1,
            0,
        ),
        (
            "info_int8_4d",
            _info(
                inputs=(c.TensorDescriptor("int8", (1, 49, 10, 1), 0.1015625, -3, 490),),
                outputs=(c.TensorDescriptor("int8", (1, 12), 0.00390625, -128, 12),),
                board="nano33ble",
                firmware="tinyhil-fw 0.1.0+ünï",
            ),
            1,
            0,
        ),
        ("result", c.Result(42, 0, 1234, 0), 9, 0),
        ("result_cycles", c.Result(7, 1, 0xFFFFFFFF, 0x0123456789ABCDEF), 20, 0),
        ("data", c.Data(0, 0, bytes([0x80, 0x7F, 0x00, 0x01])), 10, 0),
        ("data_offset", c.Data(1, 4080, blob[:16]), 11, 0),
        ("pong_empty", c.Pong(b""), 12, 0),
        ("pong_data", c.Pong(b"\x00\xff\x00hello\x00"), 13, 0),
        ("error_incomplete", c.Error(c.E_INCOMPLETE_INPUT, "input 0: 100 of 24576 bytes written"), 9, 0),
        ("error_not_ready", c.Error(c.E_NOT_READY, "arena 600000 B does not fit 524288 B RAM"), 1, 0),
        ("error_empty", c.Error(c.E_UNKNOWN_TYPE, ""), 30, 0),
        ("log_info", c.Log(2, "model loaded"), 0, 0),
        ("log_error_utf8", c.Log(0, "überlauf ✗"), 0, 0),
        ("boot", c.Boot(0xCAFEBABE), 0, 0),
        # version 2
        ("hello_v1_v2", c.Hello(1, 2, 0x0BADF00D), 1, 0),
        ("write_v2_slot1", c.Write(0, 96, bytes(range(24)), 1), 14, 0),
        ("invoke_v2", c.Invoke(43, 0xDEADBEEF, 1), 15, 0),
        ("read_v2", c.Read(0, 0, 16, 43), 16, 0),
        ("nak_gap", c.Nak(17, 2, c.NAK_GAP), 0, 0),
        ("nak_bad_frame", c.Nak(0xFFFF, 1, c.NAK_BAD_FRAME), 0, 0),
        ("error_input_mismatch", c.Error(c.E_INPUT_MISMATCH, "input CRC 00000000, INVOKE expects deadbeef"), 15, 0),
        ("error_stale", c.Error(c.E_STALE, "no outputs of sample 43 held"), 16, 0),
        (
            "info_v2",
            _info(
                version=2,
                line_baud=921600,
                staging_bytes=2 * 98304 + 20,
                features=c.FEATURE_STAGED_OUTPUTS | c.FEATURE_NAK,
                input_slots=2,
            ),
            1,
            0,
        ),
        ("info_v2_no_staging", _info(version=2, board="qemu_m55", features=c.FEATURE_NAK), 1, 0),
        # FEATURE_TRACE (a compatible extension of version 2)
        ("invoke_v2_trace", c.Invoke(44, 0x01020304, 0, c.INVOKE_TRACE), 21, 0),
        ("invoke_v2_trace_capture", c.Invoke(45, 0xCAFEF00D, 1, c.INVOKE_TRACE | c.INVOKE_CAPTURE, 7), 22, 0),
        ("trace_read", c.TraceRead(45, 0, 0xFFFF), 23, 0),
        ("trace_read_from_40", c.TraceRead(45, 40, 12), 24, 0),
        ("capture_read", c.CaptureRead(45, 1000, 1008), 25, 0),
        ("trace", c.Trace(45, 12, 0, (0x00000000, 0xFFFFFFFF, 0x8D6B3F21), (0, 1234567, 0xFFFFFFFF)), 23, 0),
        ("trace_empty", c.Trace(45, 12, 12, (), ()), 24, 0),
        ("capture", c.Capture(45, 7, 3, 2048, 1000, bytes([0x80, 0x7F, 0x00, 0x01, 0xFE])), 25, 0),
        ("error_stale_trace", c.Error(c.E_STALE, "no trace of sample 44 held"), 23, 0),
        (
            "info_v2_trace",
            _info(
                version=2,
                flags=c.INFO_CYCLES_REAL,
                cpu_hz=64000000,
                board="nano33ble",
                features=c.FEATURE_NAK | c.FEATURE_TRACE,
                n_ops=31,
                capture_bytes=4096,
                tick_hz=64000000,
            ),
            1,
            0,
        ),
    ]


def _wire_with_body(body: bytes) -> str:
    return c.encode_wire(body).hex()


def malformed_vectors() -> list[tuple[str, bytes, str]]:
    """(name, wire bytes ending in 0x00, frame-level error)"""
    good = c.message_body(c.Invoke(42), seq=9)
    bad_crc = bytearray(good)
    bad_crc[5] ^= 0x01
    bad_crc_tail = bytearray(good)
    bad_crc_tail[-1] ^= 0x80
    enc = bytearray(c.cobs_encode(good))
    enc_trunc = bytes(enc[:-2])  # last block's code now points past the end
    return [
        ("cobs_code_past_end", b"\x05\x01\x02\x00", "COBS"),
        ("cobs_truncated_frame", enc_trunc + b"\x00", "COBS"),
        ("cobs_single_ff", b"\xff\x00", "COBS"),
        ("short_empty_body", b"\x01\x00", "SHORT"),
        ("short_7_bytes", c.cobs_encode(good[:7]) + b"\x00", "SHORT"),
        ("short_header_only", c.cobs_encode(good[:4]) + b"\x00", "SHORT"),
        ("crc_payload_bit", c.cobs_encode(bytes(bad_crc)) + b"\x00", "CRC"),
        ("crc_trailer_bit", c.cobs_encode(bytes(bad_crc_tail)) + b"\x00", "CRC"),
        ("crc_lost_byte", c.cobs_encode(good[:6] + good[7:]) + b"\x00", "CRC"),
        ("too_long_by_one", c.encode_message(c.Write(0, 0, b"\x11" * (MAX_BODY - 16 + 1)), seq=1), "TOO_LONG"),
        ("too_long_1100", c.encode_message(c.Write(0, 0, bytes(range(1, 256)) * 5), seq=1), "TOO_LONG"),
    ]


def message_error_vectors() -> list[tuple[str, bytes, str]]:
    """(name, body) frames that are valid but whose message is not."""
    return [
        ("unknown_type_0x42", c.encode_body(0x42, 0, 5, b"\x01\x02"), "UNKNOWN_TYPE"),
        ("unknown_type_0x05", c.encode_body(0x05, 0, 6, b""), "UNKNOWN_TYPE"),
        ("invoke_short", c.encode_body(c.INVOKE, 0, 7, b"\x01\x02\x03"), "BAD_LENGTH"),
        ("invoke_long", c.encode_body(c.INVOKE, 0, 8, b"\x01\x02\x03\x04\x05"), "BAD_LENGTH"),
        ("read_short", c.encode_body(c.READ, 0, 9, bytes(11)), "BAD_LENGTH"),
        ("write_header_short", c.encode_body(c.WRITE, 0, 10, bytes(7)), "BAD_LENGTH"),
        ("hello_short", c.encode_body(c.HELLO, 0, 11, bytes(6)), "BAD_LENGTH"),
        ("ack_with_payload", c.encode_body(c.ACK, 0, 12, b"\x00"), "BAD_LENGTH"),
        ("info_truncated", c.encode_body(c.INFO, 0, 1, _info().payload()[:60]), "BAD_LENGTH"),
        ("invoke_v2_short", c.encode_body(c.INVOKE, 0, 17, bytes(8)), "BAD_LENGTH"),
        ("read_v2_long", c.encode_body(c.READ, 0, 18, bytes(17)), "BAD_LENGTH"),
        ("nak_short", c.encode_body(c.NAK, 0, 0, bytes(6)), "BAD_LENGTH"),
        ("info_v2_without_tail", c.encode_body(c.INFO, 0, 1, _info(version=2).payload()[:-16]), "BAD_LENGTH"),
        ("trace_read_short", c.encode_body(c.TRACE_READ, 0, 19, bytes(7)), "BAD_LENGTH"),
        ("capture_read_long", c.encode_body(c.CAPTURE_READ, 0, 20, bytes(13)), "BAD_LENGTH"),
        ("trace_ragged_record", c.encode_body(c.TRACE, 0, 21, bytes(8 + 5)), "BAD_LENGTH"),
        ("capture_short", c.encode_body(c.CAPTURE, 0, 22, bytes(15)), "BAD_LENGTH"),
        (
            "info_trace_without_tail",
            c.encode_body(c.INFO, 0, 1, _info(version=2, features=c.FEATURE_TRACE, n_ops=3).payload()[:-4]),
            "BAD_LENGTH",
        ),
    ]


def stream_vectors() -> list[tuple[str, bytes, list[bytes], list[str]]]:
    """(name, wire stream, bodies expected out in order, drop reasons in order)"""
    a = c.message_body(c.Ping(b"A"), 1)
    b = c.message_body(c.Write(0, 0, bytes(range(40))), 2)
    d = c.message_body(c.Result(3, 0, 99, 0), 3)
    wa, wb, wd = (c.encode_wire(x) for x in (a, b, d))
    bad = bytearray(b)
    bad[20] ^= 0x04  # a payload bit: the frame's CRC fails
    return [
        ("back_to_back", wa + wb + wd, [a, b, d], []),
        ("leading_zeros", b"\x00\x00" + wa + b"\x00" + wb, [a, b], []),
        ("garbage_before", b"\x13\x37\xfe" + b"\x00" + wa, [a], ["COBS"]),
        ("garbage_glued_to_frame", b"\x13\x37" + wa + wb, [b], ["COBS"]),
        ("garbage_between", wa + b"\x02\x41\x00" + wb + b"\xff\xff\x00" + wd, [a, b, d], ["SHORT", "COBS"]),
        ("corrupt_then_good", c.encode_wire(bytes(bad)) + wd, [d], ["CRC"]),
        ("truncated_then_resync", wb[:20] + wa, [], ["COBS"]),
        ("overlong_then_good", c.cobs_encode(b"\x01" * (MAX_BODY + 50)) + b"\x00" + wa, [a], ["TOO_LONG"]),
        ("log_between", wa + c.encode_message(c.Log(2, "hi"), 0) + wd, [a, c.message_body(c.Log(2, "hi"), 0), d], []),
    ]


def build() -> dict:
    frames = []
    for name, msg, seq, flags in frame_vectors():
        body = c.message_body(msg, seq, flags)
        frames.append(
            {
                "name": name,
                "type": msg.TYPE,
                "type_name": c.TYPE_NAMES[msg.TYPE],
                "seq": seq,
                "flags": flags,
                "fields": to_fields(msg),
                "payload": msg.payload().hex(),
                "body": body.hex(),
                "wire": c.encode_wire(body).hex(),
            }
        )
    return {
        "format": 1,
        "protocol_version": c.VERSION,
        "max_body": MAX_BODY,
        "about": "Golden vectors for docs/protocol.md, generated by tests/golden/make_vectors.py. "
        "Decode every wire input with a body limit of max_body.",
        "frames": frames,
        "malformed": [{"name": n, "wire": w.hex(), "error": e} for n, w, e in malformed_vectors()],
        "message_errors": [
            {"name": n, "body": b.hex(), "wire": _wire_with_body(b), "error": e} for n, b, e in message_error_vectors()
        ],
        "streams": [
            {"name": n, "wire": w.hex(), "bodies": [x.hex() for x in bodies], "drops": drops}
            for n, w, bodies, drops in stream_vectors()
        ],
    }


TXT_HEADER = """\
# tinyhil protocol golden vectors (docs/protocol.md), generated by
# tests/golden/make_vectors.py from the Python codec; do not edit.
# vectors.json holds the same vectors with every message's fields.
#
# One vector a line, fields separated by one space, hex in lower case:
#   NAME KIND WIRE EXPECT [DROPS]
# Decode every WIRE with a body limit (max_frame) of {max_body} bytes.
#   KIND frame     WIRE is one frame (COBS(body) 00). EXPECT is the body hex:
#                  decoding WIRE gives it, encoding it gives WIRE exactly, and
#                  its message decodes without error and re-encodes to it.
#   KIND error     WIRE is one frame the frame decoder must drop; EXPECT is the
#                  reason: COBS, SHORT, CRC or TOO_LONG.
#   KIND msgerror  WIRE is a valid frame whose message is not; EXPECT is the
#                  message-level reason: UNKNOWN_TYPE or BAD_LENGTH (a device
#                  answers ERROR with that code and the frame's seq).
#   KIND stream    WIRE is a byte stream for an incremental decoder. EXPECT
#                  is the comma-separated list of bodies (hex) it yields in
#                  order, or - for none; DROPS is the comma-separated list of
#                  drop reasons in order, or - for none. Empty frames (00 00)
#                  are ignored, not dropped.
"""


def build_txt(v: dict) -> str:
    lines = [TXT_HEADER.format(max_body=v["max_body"])]
    for f in v["frames"]:
        lines.append(f"{f['name']} frame {f['wire']} {f['body']}\n")
    for m in v["malformed"]:
        lines.append(f"{m['name']} error {m['wire']} {m['error']}\n")
    for m in v["message_errors"]:
        lines.append(f"{m['name']} msgerror {m['wire']} {m['error']}\n")
    for s in v["streams"]:
        bodies = ",".join(s["bodies"]) or "-"
        drops = ",".join(s["drops"]) or "-"
        lines.append(f"{s['name']} stream {s['wire']} {bodies} {drops}\n")
    return "".join(lines)


def render() -> tuple[str, str]:
    v = build()
    return json.dumps(v, indent=1, ensure_ascii=False) + "\n", build_txt(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = ap.parse_args(argv)
    js, txt = render()
    targets = {HERE / "vectors.json": js, HERE / "frames.txt": txt}
    if args.check:
        stale = [p.name for p, t in targets.items() if not p.is_file() or p.read_text(encoding="utf-8") != t]
        if stale:
            print(f"stale golden vectors: {', '.join(stale)} — run python tests/golden/make_vectors.py")
            return 1
        return 0
    for p, t in targets.items():
        p.write_text(t, encoding="utf-8")
    print(f"wrote {', '.join(str(p) for p in targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
