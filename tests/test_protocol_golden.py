"""The Python codec against the committed golden vectors (tests/golden/),
which the firmware's C++ codec is held to as well."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.protocol import codec as c

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
import make_vectors  # noqa: E402

VECTORS = json.loads((GOLDEN / "vectors.json").read_text(encoding="utf-8"))
MAX_BODY = VECTORS["max_body"]


def test_committed_vectors_are_what_the_codec_produces():
    js, txt = make_vectors.render()
    assert (GOLDEN / "vectors.json").read_text(encoding="utf-8") == js, "run python tests/golden/make_vectors.py"
    assert (GOLDEN / "frames.txt").read_text(encoding="utf-8") == txt, "run python tests/golden/make_vectors.py"


def test_every_message_type_has_a_vector():
    assert {f["type"] for f in VECTORS["frames"]} == set(c.MESSAGE_CLASSES)
    assert {m["error"] for m in VECTORS["malformed"]} == {"COBS", "SHORT", "CRC", "TOO_LONG"}


@pytest.mark.parametrize("v", VECTORS["frames"], ids=lambda v: v["name"])
def test_frame_vector(v):
    wire, body = bytes.fromhex(v["wire"]), bytes.fromhex(v["body"])
    msg = make_vectors.from_fields(v["type"], v["fields"])
    # encode: fields -> exact bytes
    assert c.encode_message(msg, v["seq"], v["flags"]) == wire
    assert msg.payload().hex() == v["payload"]
    # decode: bytes -> exact fields
    got, seq, flags = c.decode_message(wire, MAX_BODY)
    assert (got, seq, flags) == (msg, v["seq"], v["flags"])
    assert c.decode_wire(wire, MAX_BODY).body == body
    assert 0 not in wire[:-1] and wire[-1] == 0


@pytest.mark.parametrize("v", VECTORS["malformed"], ids=lambda v: v["name"])
def test_malformed_vector(v):
    wire = bytes.fromhex(v["wire"])
    with pytest.raises(c.CodecError) as exc:
        c.decode_wire(wire, MAX_BODY)
    assert exc.value.reason == v["error"]
    dec = c.FrameDecoder(max_body=MAX_BODY)
    assert dec.feed(wire) == [] and dec.drop_log == [v["error"]]


@pytest.mark.parametrize("v", VECTORS["message_errors"], ids=lambda v: v["name"])
def test_message_error_vector(v):
    frame = c.decode_wire(bytes.fromhex(v["wire"]), MAX_BODY)
    assert frame.body.hex() == v["body"]
    with pytest.raises(c.CodecError) as exc:
        frame.message()
    assert exc.value.reason == v["error"]


@pytest.mark.parametrize("v", VECTORS["streams"], ids=lambda v: v["name"])
@pytest.mark.parametrize("step", [None, 1, 7])
def test_stream_vector(v, step):
    wire = bytes.fromhex(v["wire"])
    dec = c.FrameDecoder(max_body=MAX_BODY)
    step = step or len(wire)
    got = []
    for i in range(0, len(wire), step):
        got += [f.body.hex() for f in dec.feed(wire[i : i + step])]
    assert got == v["bodies"]
    assert dec.drop_log == v["drops"]


def test_text_twin_parses_like_a_cpp_test_would():
    lines = [
        ln.split(" ")
        for ln in (GOLDEN / "frames.txt").read_text(encoding="utf-8").splitlines()
        if ln and not ln.startswith("#")
    ]
    n = len(VECTORS["frames"]) + len(VECTORS["malformed"]) + len(VECTORS["message_errors"]) + len(VECTORS["streams"])
    assert len(lines) == n
    for parts in lines:
        _name, kind, wire = parts[0], parts[1], bytes.fromhex(parts[2])
        if kind == "frame":
            assert c.decode_wire(wire, MAX_BODY).body == bytes.fromhex(parts[3])
        elif kind == "error":
            # the message names the reason the line gives ("protocol CRC: ...")
            with pytest.raises(c.CodecError, match=rf"^protocol {parts[3]}\b") as exc:
                c.decode_wire(wire, MAX_BODY)
            assert exc.value.reason == parts[3]
        elif kind == "stream":
            assert len(parts) == 5
        else:
            assert kind == "msgerror"
            with pytest.raises(c.CodecError, match=rf"^protocol {parts[3]}\b") as exc:
                c.decode_wire(wire, MAX_BODY).message()
            assert exc.value.reason == parts[3]


def test_make_vectors_check_mode():
    assert make_vectors.main(["--check"]) == 0
