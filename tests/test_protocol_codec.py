"""Property-based tests of the pure codec: messages round-trip, and no input
makes it raise anything but its own `CodecError`."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import ProtocolError
from harness.protocol import codec as c

u8, u16, u32 = (st.integers(0, 2**b - 1) for b in (8, 16, 32))
i32 = st.integers(-(2**31), 2**31 - 1)
blob = st.binary(max_size=600)
text = st.text(max_size=80)
f32 = st.floats(width=32, allow_nan=False)
str8 = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)

descriptors = st.builds(
    c.TensorDescriptor,
    dtype=st.sampled_from(sorted(c.DTYPE_CODES)),
    shape=st.lists(i32, max_size=6).map(tuple),
    scale=f32,
    zero_point=i32,
    nbytes=u32,
)

messages = st.one_of(
    st.builds(c.Hello, u16, u16, u32),
    st.builds(c.Write, u8, u32, blob),
    st.builds(c.Invoke, u32),
    st.builds(c.Read, u8, u32, u32),
    st.builds(c.Ping, blob),
    st.just(c.Ack()),
    st.builds(
        c.Info,
        u16,
        u16,
        u32,
        u16,
        u32,
        u32,
        u32,
        st.binary(min_size=32, max_size=32).map(bytes.hex),
        u32,
        str8,
        str8,
        st.lists(descriptors, max_size=4).map(tuple),
        st.lists(descriptors, max_size=4).map(tuple),
    ),
    st.builds(c.Result, u32, u32, u32, st.integers(0, 2**64 - 1)),
    st.builds(c.Data, u8, u32, blob),
    st.builds(c.Pong, blob),
    st.builds(c.Error, u16, text),
    st.builds(c.Log, u8, text),
    st.builds(c.Boot, u32),
)


def _same(a, b) -> bool:
    # -0.0 == 0.0 but a scale must survive bit-exactly
    return a == b and repr(a) == repr(b)


@given(messages, u16, u8)
def test_messages_round_trip(msg, seq, flags):
    wire = c.encode_message(msg, seq, flags)
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    got, s, f = c.decode_message(wire)
    assert _same(got, msg) and (s, f) == (seq, flags)


@given(messages, u16, st.lists(st.binary(max_size=20), max_size=5), st.integers(1, 50))
def test_stream_with_garbage_yields_every_frame(msg, seq, garbage, step):
    wire = c.encode_message(msg, seq)
    # garbage is separated from frames by a 0x00: it may cost itself, never a frame
    stream = b"".join(g + b"\x00" + wire for g in garbage) + wire
    dec = c.FrameDecoder()
    out = []
    for i in range(0, len(stream), step):
        out += dec.feed(stream[i : i + step])
    msgs = [f.message() for f in out if f.seq == seq and f.type == msg.TYPE]
    assert len(msgs) >= len(garbage) + 1
    assert all(_same(m, msg) for m in msgs)


@given(st.binary(max_size=2000))
def test_cobs_round_trip(data):
    enc = c.cobs_encode(data)
    assert 0 not in enc and len(enc) <= c.cobs_max_encoded(len(data))
    assert c.cobs_decode(enc) == data


@given(st.binary(max_size=400), st.integers(8, 2000))
def test_random_bytes_raise_only_codec_errors(data, max_body):
    try:
        f = c.decode_wire(data, max_body)
    except c.CodecError as exc:
        assert exc.reason in {"COBS", "SHORT", "CRC", "TOO_LONG"}
        assert isinstance(exc, ProtocolError)
    else:
        try:
            f.message()
        except c.CodecError as exc:
            assert exc.reason in {"UNKNOWN_TYPE", "BAD_LENGTH"}
    dec = c.FrameDecoder(max_body=max_body)
    for fr in dec.feed(data):
        try:
            fr.message()
        except c.CodecError as exc:
            assert exc.reason in {"UNKNOWN_TYPE", "BAD_LENGTH"}


@given(messages, st.data())
def test_truncated_or_flipped_frames_never_decode_wrongly(msg, data):
    body = c.message_body(msg, 5)
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(c.CodecError):
        c.decode_body(body[:cut])
    # any payload truncation of a valid frame raises only the codec's error
    p = msg.payload()
    k = data.draw(st.integers(0, len(p)))
    try:
        c.decode_payload(msg.TYPE, p[:k])
    except c.CodecError as exc:
        assert exc.reason == "BAD_LENGTH"
    # a single bit flip is always caught by the CRC (or COBS/length)
    wire = bytearray(c.cobs_encode(body))
    i = data.draw(st.integers(0, len(wire) - 1))
    bit = data.draw(st.integers(0, 7))
    wire[i] ^= 1 << bit
    if 0 in wire:
        return  # the flip made a delimiter: the stream decoder splits there
    with pytest.raises(c.CodecError):
        c.decode_wire(bytes(wire))


@settings(max_examples=50)
@given(st.binary(min_size=1, max_size=3000), st.integers(64, 1100))
def test_decoder_skips_overlong_frames_without_buffering(junk, limit):
    junk = junk.replace(b"\x00", b"\x01")
    dec = c.FrameDecoder(max_body=limit)
    good = c.encode_message(c.Ping(b"ok"), 9)
    out = dec.feed(junk + b"\x00" + good)
    assert [f.message() for f in out] == [c.Ping(b"ok")]
    assert dec.feed(good) == [c.decode_wire(good)]  # nothing of the junk was kept


def test_names_and_flags():
    assert c.Error(5).name == "INCOMPLETE_INPUT"
    assert c.TYPE_NAMES[c.INFO] == "INFO"
    with pytest.raises(c.CodecError) as exc:
        c.encode_message(c.Invoke(-1))
    assert exc.value.reason == "VALUE"
    with pytest.raises(c.CodecError):
        c.Info(1, 0, 0, 0, 0, 0, 0, "ab" * 31, 0, "", "").payload()
    assert struct.unpack("<I", c.message_body(c.Ack(), 1)[-4:])[0] == c.crc32(b"\x80\x00\x01\x00")


def test_info_ignores_bytes_of_later_versions():
    info = c.Info(
        1, 2, 4096, 8, 100, 50, 10, "00" * 32, 0, "fw", "sim", (c.TensorDescriptor("float32", (1, 4), 0.0, 0, 16),), ()
    )
    body = c.encode_body(c.INFO, 0, 1, info.payload() + b"future fields")
    assert c.decode_body(body).message() == info
