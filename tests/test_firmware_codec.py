"""The firmware's C++ protocol library (firmware/lib/hil_protocol), tested on
the host: the golden vectors under AddressSanitizer + UBSan, the device-side
dispatcher against responses the Python codec encodes, a bounded libFuzzer
run, and the Cortex-M cross build (harness.protocol.footprint: no heap in the
link, static RAM reported).
Needs g++ (clang++ with libFuzzer, arm-none-eabi-g++ for their tests)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import replace

import pytest
from helpers import firmware_build as fb

from harness.protocol import codec as c
from harness.protocol import footprint

GOLDEN_FRAMES = fb.REPO / "tests" / "golden" / "frames.txt"
MAX_FRAME = 1024  # HIL_MAX_FRAME of the test build (the library's default)
RX_WINDOW = 4
STAGING_BYTES = 4096  # HIL_STAGING_BYTES of the test build (the library's default)


@pytest.fixture(scope="session")
def codec_bin(tmp_path_factory):
    if not shutil.which("g++"):
        pytest.skip("g++ is not installed (apt-get install g++)")
    return fb.build_host_test(tmp_path_factory.mktemp("fw_codec"))


def run_bin(exe, *args, stdin: str | None = None):
    return subprocess.run([str(exe), *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_selftest_under_sanitizers(codec_bin):
    proc = run_bin(codec_bin, "selftest")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failed" in proc.stdout


def test_golden_vectors_under_sanitizers(codec_bin):
    proc = run_bin(codec_bin, "vectors", str(GOLDEN_FRAMES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    n_vectors = sum(1 for line in GOLDEN_FRAMES.read_text().splitlines() if line and not line.startswith("#"))
    assert f"vectors: {n_vectors} vectors" in proc.stdout


def test_vector_check_fails_on_a_wrong_vector(codec_bin, tmp_path):
    # The vector runner must be able to fail: flip one expected body byte.
    lines = GOLDEN_FRAMES.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if not line.startswith("#") and " frame " in line)
    name, kind, wire, body = lines[i].split(" ")[:4]
    lines[i] = " ".join([name, kind, wire, body[:-2] + ("00" if body[-2:] != "00" else "01")])
    bad = tmp_path / "frames.txt"
    bad.write_text("\n".join(lines) + "\n")
    proc = run_bin(codec_bin, "vectors", str(bad))
    assert proc.returncode == 1 and f"FAIL {name}" in proc.stdout


# --------------------------------------------------------------------- dispatcher


class FakeModel:
    """Python twin of firmware/test/fake_backend.h."""

    inputs = (c.TensorDescriptor("float32", (1, 4), 0.0, 0, 16), c.TensorDescriptor("int8", (1, 2, 3), 0.5, -3, 6))
    outputs = (c.TensorDescriptor("int8", (1, 5), 0.25, 1, 5), c.TensorDescriptor("int32", (300,), 0.0, 0, 1200))
    info = c.Info(
        version=1,
        flags=c.INFO_CYCLES_REAL,
        max_frame=MAX_FRAME,
        rx_window=RX_WINDOW,
        arena_size=8192,
        arena_used=5000,
        model_size=4321,
        model_sha256=bytes(range(32)).hex(),
        cpu_hz=64_000_000,
        firmware="fake-fw 1.0",
        board="fake",
        inputs=inputs,
        outputs=outputs,
    )

    @staticmethod
    def outputs_for(in0: bytes, in1: bytes) -> tuple[bytes, bytes]:
        s = (sum(in0) + sum(in1)) & 0xFFFFFFFF
        out0 = bytes((s + k) & 0xFF for k in range(5))
        out1 = b"".join(struct.pack("<I", (s + 7 * j) & 0xFFFFFFFF) for j in range(300))
        return out0, out1

    @staticmethod
    def result(sample_id: int, n: int) -> c.Result:
        return c.Result(sample_id, 0, 1000 + n, (1 << 32) + n)


class Device:
    """Drives `test_codec dispatch`: each step feeds bytes and yields the
    device's frames (wire bytes) for that step."""

    def __init__(self, exe, not_ready: bool = False, max_version: int | None = None):
        self.exe = exe
        self.not_ready = not_ready
        self.max_version = max_version
        self.steps: list[str] = []

    def feed(self, data: bytes) -> int:
        self.steps.append(f"feed {data.hex() or '-'}")
        return len(self.steps) - 1

    def request(self, msg, seq: int, flags: int = 0) -> int:
        return self.feed(c.encode_message(msg, seq, flags))

    def boot(self, nonce: int) -> int:
        self.steps.append(f"boot {nonce}")
        return len(self.steps) - 1

    def log(self, level: int, text: str) -> int:
        self.steps.append(f"log {level} {text.encode().hex()}")
        return len(self.steps) - 1

    def run(self) -> list[list[bytes]]:
        args = ["dispatch"] + (["--not-ready"] if self.not_ready else [])
        args += ["--max-version", str(self.max_version)] if self.max_version else []
        proc = run_bin(self.exe, *args, stdin="\n".join(self.steps) + "\n")
        assert proc.returncode == 0, proc.stderr
        out, cur = [], []
        for line in proc.stdout.splitlines():
            if line == "done":
                out.append(cur)
                cur = []
            else:
                assert line.startswith("out ")
                cur.append(bytes.fromhex(line[4:]))
        assert len(out) == len(self.steps)
        return out


def error_of(wire: bytes) -> tuple[str, int]:
    msg, seq, _ = c.decode_message(wire)
    assert isinstance(msg, c.Error), msg
    return msg.name, seq


def test_handshake_info_is_what_the_python_codec_encodes(codec_bin):
    dev = Device(codec_bin)
    dev.request(c.Hello(1, 1, 0x12345678), seq=1)
    dev.request(c.Hello(1, 3, 7), seq=2)
    (r1,), (r2,) = dev.run()
    assert r1 == c.encode_message(FakeModel.info, seq=1)
    assert r2 == c.encode_message(INFO_V2, seq=2)


# 2 x 22 input bytes + 1205 output bytes fit HIL_STAGING_BYTES (4096): two slots, staged outputs
INFO_V2 = replace(
    FakeModel.info,
    version=2,
    line_baud=115200,
    staging_bytes=4096,
    features=c.FEATURE_STAGED_OUTPUTS | c.FEATURE_NAK,
    input_slots=2,
)


def test_v2_samples_overlap_in_two_slots_and_outputs_stay_readable(codec_bin):
    a0, a1 = bytes(range(16)), bytes([1, 2, 3, 4, 5, 6])
    b0, b1 = bytes([9] * 16), bytes([8] * 6)
    out_a, out_b = FakeModel.outputs_for(a0, a1)[0], FakeModel.outputs_for(b0, b1)[0]
    dev = Device(codec_bin)
    dev.request(c.Hello(1, 2), 1)
    dev.request(c.Write(0, 0, a0, 0), 2)
    dev.request(c.Write(1, 0, a1, 0), 3)
    inv_a = dev.request(c.Invoke(11, c.input_crc([a0, a1]), 0), 4)
    dev.request(c.Write(0, 0, b0, 1), 5)  # sample B streams into slot 1 ...
    read_a = dev.request(c.Read(0, 0, 5, 11), 6)  # ... while A's outputs are read
    dev.request(c.Write(1, 0, b1, 1), 7)
    inv_b = dev.request(c.Invoke(12, c.input_crc([b0, b1]), 1), 8)
    read_a_late = dev.request(c.Read(0, 0, 5, 11), 9)  # A again, after B ran: from staging
    read_b = dev.request(c.Read(0, 0, 5, 12), 10)
    stale = dev.request(c.Read(0, 0, 5, 10), 11)
    res = dev.run()
    assert res[inv_a] == [c.encode_message(FakeModel.result(11, 0), 4)]
    assert res[read_a] == [c.encode_message(c.Data(0, 0, out_a), 6)]
    assert res[inv_b] == [c.encode_message(FakeModel.result(12, 1), 8)]
    assert res[read_a_late] == [c.encode_message(c.Data(0, 0, out_a), 9)]
    assert res[read_b] == [c.encode_message(c.Data(0, 0, out_b), 10)]
    assert error_of(res[stale][0]) == ("STALE", 11)


def test_v2_invoke_refuses_an_input_whose_crc_differs(codec_bin):
    """The no-mix guarantee: a lost WRITE leaves the previous sample's bytes
    in its place; the INVOKE names the input it wants and runs nothing else."""
    old0, new0, in1 = bytes([7] * 16), bytes(range(16)), bytes(6)
    dev = Device(codec_bin)
    dev.request(c.Hello(1, 2), 1)
    dev.request(c.Write(0, 0, old0, 0), 2)
    dev.request(c.Write(1, 0, in1, 0), 3)
    dev.request(c.Invoke(1, c.input_crc([old0, in1]), 0), 4)
    # sample 2: the WRITE of input 0 is "lost" (never fed), input 1 arrives
    dev.request(c.Write(1, 0, in1, 0), 6)
    incomplete = dev.request(c.Invoke(2, c.input_crc([new0, in1]), 0), 7)
    dev.request(c.Write(0, 0, old0, 0), 8)  # a stale retransmission of sample 1's bytes
    mismatch = dev.request(c.Invoke(2, c.input_crc([new0, in1]), 0), 9)
    dev.request(c.Write(0, 0, new0, 0), 10)
    ok = dev.request(c.Invoke(2, c.input_crc([new0, in1]), 0), 11)
    res = dev.run()
    assert c.decode_message(res[incomplete][-1])[0].name == "INCOMPLETE_INPUT"
    assert c.decode_message(res[mismatch][-1])[0].name == "INPUT_MISMATCH"
    assert res[ok] == [c.encode_message(FakeModel.result(2, 1), 11)]  # the model ran twice, not three times


def test_v2_nak_on_a_gap_and_on_a_bad_frame(codec_bin):
    dev = Device(codec_bin)
    dev.request(c.Hello(1, 2), 1)
    gap = dev.request(c.Ping(b"a"), 4)  # 2 and 3 never came
    bad = bytearray(c.encode_message(c.Ping(b"b"), 5))
    bad[4] ^= 0x10
    corrupt = dev.feed(bytes(bad))
    after = dev.request(c.Ping(b"c"), 6)
    res = dev.run()
    assert res[gap] == [c.encode_message(c.Nak(2, 2, c.NAK_GAP), 0), c.encode_message(c.Pong(b"a"), 4)]
    assert res[corrupt] == [c.encode_message(c.Nak(5, 1, c.NAK_BAD_FRAME), 0)]
    assert res[after] == [c.encode_message(c.Pong(b"c"), 6)]  # 5 was NAKed already: no second NAK


def test_a_v1_only_device_answers_a_v2_host_in_version_1(codec_bin):
    in0, in1 = bytes(range(16)), bytes(6)
    dev = Device(codec_bin, max_version=1)
    hello = dev.request(c.Hello(1, 2), 1)
    dev.request(c.Write(0, 0, in0), 2)
    dev.request(c.Write(1, 0, in1), 3)
    v2_invoke = dev.request(c.Invoke(1, c.input_crc([in0, in1]), 0), 4)
    v1_invoke = dev.request(c.Invoke(1), 5)
    gap = dev.request(c.Ping(b""), 9)
    res = dev.run()
    assert res[hello] == [c.encode_message(FakeModel.info, seq=1)]
    assert error_of(res[v2_invoke][0]) == ("BAD_LENGTH", 4)
    assert res[v1_invoke] == [c.encode_message(FakeModel.result(1, 0), 5)]
    assert res[gap] == [c.encode_message(c.Pong(b""), 9)]  # no NAK in version 1


def test_a_whole_sample_bit_exact(codec_bin):
    in0, in1 = bytes(range(100, 116)), bytes([1, 2, 3, 250, 5, 6])
    out0, out1 = FakeModel.outputs_for(in0, in1)
    chunk = MAX_FRAME - 16
    dev = Device(codec_bin)
    dev.request(c.Hello(), 1)
    dev.request(c.Write(0, 0, in0[:10]), 2)
    dev.request(c.Write(0, 10, in0[10:]), 3)
    dev.request(c.Write(1, 0, in1), 4)
    dev.request(c.Invoke(77), 5)
    dev.request(c.Read(0, 0, 5), 6)
    dev.request(c.Read(1, 0, 1200), 7)
    dev.request(c.Read(1, chunk, 1200 - chunk), 8)
    res = dev.run()
    assert (
        res[1:]
        == [
            [c.encode_message(c.Ack(), 2)],
            [c.encode_message(c.Ack(), 3)],
            [c.encode_message(c.Ack(), 4)],
            [c.encode_message(FakeModel.result(77, 0), 5)],
            [c.encode_message(c.Data(0, 0, out0), 6)],
            [c.encode_message(c.Data(1, 0, out1[:chunk]), 7)],  # cut to one max_frame body
            [c.encode_message(c.Data(1, chunk, out1[chunk:]), 8)],
        ]
    )
    assert len(c.message_body(c.Data(1, 0, out1[:chunk]), 7)) == MAX_FRAME


def test_pipelined_requests_split_anywhere(codec_bin):
    """A window of requests in one burst, fed in 1..7-byte pieces, with
    garbage and a corrupt frame in front: same answers, in order."""
    in0, in1 = bytes(16), bytes([9] * 6)
    out0, _ = FakeModel.outputs_for(in0, in1)
    reqs = [(c.Write(0, 0, in0), 1), (c.Write(1, 0, in1), 2), (c.Invoke(5), 3), (c.Read(0, 0, 5), 4)]
    corrupt = bytearray(c.encode_message(c.Ping(b"x"), 99))
    corrupt[3] ^= 0x40
    stream = b"\x13\x37\xfe\x00" + bytes(corrupt) + b"\x00" + b"".join(c.encode_message(m, s) for m, s in reqs)
    dev = Device(codec_bin)
    pos, k = 0, 0
    while pos < len(stream):
        n = 1 + k % 7
        dev.feed(stream[pos : pos + n])
        pos, k = pos + n, k + 1
    frames = [f for step in dev.run() for f in step]
    assert frames == [
        c.encode_message(c.Ack(), 1),
        c.encode_message(c.Ack(), 2),
        c.encode_message(FakeModel.result(5, 0), 3),
        c.encode_message(c.Data(0, 0, out0), 4),
    ]


def test_retransmissions_are_exactly_once(codec_bin):
    in0, in1 = bytes([1] * 16), bytes([2] * 6)
    dev = Device(codec_bin)
    dev.request(c.Write(0, 0, in0), 1)
    dev.request(c.Write(1, 0, in1), 2)
    dev.request(c.Invoke(1), 3)
    dup_invoke = dev.request(c.Invoke(1), 3, flags=c.FLAG_RETRY)  # response "lost": sent again
    dup_write = dev.request(c.Write(1, 0, in1), 2, flags=c.FLAG_RETRY)
    # A new sample: INVOKE needs both inputs again (the duplicate WRITE did not count).
    dev.request(c.Write(0, 0, in0), 4)
    incomplete = dev.request(c.Invoke(2), 5)
    dev.request(c.Write(1, 0, in1), 6)
    second = dev.request(c.Invoke(2), 7)
    res = dev.run()
    assert res[dup_invoke] == [c.encode_message(FakeModel.result(1, 0), 3)]  # the same RESULT, not run again
    assert res[dup_write] == [c.encode_message(c.Ack(), 2)]
    assert error_of(res[incomplete][0]) == ("INCOMPLETE_INPUT", 5)
    assert res[second] == [c.encode_message(FakeModel.result(2, 1), 7)]  # the model's 2nd invoke


def test_memory_holds_two_windows(codec_bin):
    in0, in1 = bytes(16), bytes(6)
    dev = Device(codec_bin)
    dev.request(c.Write(0, 0, in0), 1)
    dev.request(c.Write(1, 0, in1), 2)
    dev.request(c.Invoke(1), 3)
    for seq in range(4, 4 + 2 * RX_WINDOW - 1):  # seq 3 is still among the last 2 x rx_window
        dev.request(c.Ping(b"p"), seq)
    remembered = dev.request(c.Invoke(1), 3)
    dev.request(c.Ping(b"p"), 50)  # now seq 3 falls out of the memory
    forgotten = dev.request(c.Invoke(1), 3)
    res = dev.run()
    assert res[remembered] == [c.encode_message(FakeModel.result(1, 0), 3)]
    assert error_of(res[forgotten][0]) == ("INCOMPLETE_INPUT", 3)  # executed again


def test_a_new_session_is_not_answered_from_the_old_ones_memory(codec_bin):
    """A second host process numbers from 1 again; its HELLO (new nonce)
    clears the memory, a retransmitted HELLO (same nonce) does not."""
    dev = Device(codec_bin)
    for nonce, fill in ((111, 1), (222, 2)):  # two sessions, the same seqs
        dev.request(c.Hello(1, 1, nonce), 1)
        dev.request(c.Write(0, 0, bytes([fill] * 16)), 2)
        dev.request(c.Write(1, 0, bytes([fill] * 6)), 3)
        dev.request(c.Invoke(9), 4)
    dev.request(c.Hello(1, 1, 222), 1, flags=c.FLAG_RETRY)  # a late retransmission of the 2nd HELLO
    dup = dev.request(c.Invoke(9), 4, flags=c.FLAG_RETRY)
    res = dev.run()
    assert res[3] == [c.encode_message(FakeModel.result(9, 0), 4)]
    assert res[7] == [c.encode_message(FakeModel.result(9, 1), 4)]  # executed: the model's 2nd invoke
    assert res[dup] == res[7]  # still remembered


def test_errors(codec_bin):
    dev = Device(codec_bin)
    cases = {
        dev.request(c.Hello(3, 5), 1): "VERSION",
        dev.request(c.Write(2, 0, b"x"), 2): "BAD_TENSOR",
        dev.request(c.Write(0, 10, bytes(7)), 3): "OUT_OF_RANGE",
        dev.request(c.Write(0, 0xFFFFFFFF, b"x"), 4): "OUT_OF_RANGE",
        dev.request(c.Read(2, 0, 1), 5): "BAD_TENSOR",
        dev.request(c.Read(0, 3, 3), 6): "OUT_OF_RANGE",
        dev.request(c.Invoke(1), 7): "INCOMPLETE_INPUT",
        dev.feed(c.encode_wire(c.encode_body(c.INVOKE, 0, 8, b"\x01\x02"))): "BAD_LENGTH",
        dev.feed(c.encode_wire(c.encode_body(c.READ, 0, 9, bytes(13)))): "BAD_LENGTH",
        dev.feed(c.encode_wire(c.encode_body(0x42, 0, 10, b""))): "UNKNOWN_TYPE",
        dev.feed(c.encode_wire(c.encode_body(c.ACK, 0, 11, b""))): "UNKNOWN_TYPE",  # not a request
    }
    dev.request(c.Write(0, 0, bytes(16)), 12)
    dev.request(c.Write(1, 0, b"\x7f" + bytes(5)), 13)  # the fake interpreter fails on this input
    cases[dev.request(c.Invoke(3), 14)] = "INVOKE_FAILED"
    res = dev.run()
    seqs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14]
    for (step, want), seq in zip(cases.items(), seqs):
        assert len(res[step]) == 1
        assert error_of(res[step][0]) == (want, seq)


def test_bad_length_is_checked_by_check_message_and_names_the_request(codec_bin):
    dev = Device(codec_bin)
    cases = {
        dev.feed(c.encode_wire(c.encode_body(c.HELLO, 0, 1, bytes(7)))): "HELLO takes 8 bytes",
        dev.feed(c.encode_wire(c.encode_body(c.WRITE, 0, 2, bytes(7)))): "WRITE takes 8 bytes + data",
        dev.feed(c.encode_wire(c.encode_body(c.INVOKE, 0, 3, bytes(5)))): "INVOKE takes 4 bytes (12 in version 2)",
        dev.feed(c.encode_wire(c.encode_body(c.READ, 0, 4, bytes(11)))): "READ takes 12 bytes (16 in version 2)",
    }
    res = dev.run()
    for step, text in cases.items():
        msg, _, _ = c.decode_message(res[step][0])
        assert (msg.name, msg.message) == ("BAD_LENGTH", text)


def test_header_constants_are_the_python_codecs():
    header = (fb.PROTOCOL_SRC / "hil_protocol.h").read_text()
    dtypes = {m[0].lower(): int(m[1]) for m in re.findall(r"kDtype(\w+) = (\d+),", header)}
    assert dtypes == c.DTYPE_CODES
    assert "constexpr size_t kChunkHeaderSize = 8;" in header and c.CHUNK_HEADER == 8
    assert "max_frame - kMinBody - kChunkHeaderSize" in header and c.max_chunk(1024) == 1024 - c.MIN_BODY - 8


def test_not_ready_device_says_why(codec_bin):
    dev = Device(codec_bin, not_ready=True)
    steps = [
        dev.request(c.Hello(), 1),
        dev.request(c.Write(0, 0, b"x"), 2),
        dev.request(c.Invoke(1), 3),
        dev.request(c.Read(0, 0, 1), 4),
    ]
    ping = dev.request(c.Ping(b"alive"), 5)
    res = dev.run()
    for seq, step in enumerate(steps, 1):
        msg, got_seq, _ = c.decode_message(res[step][0])
        assert (msg.name, got_seq, msg.message) == ("NOT_READY", seq, "arena too small for the model")
    assert res[ping] == [c.encode_message(c.Pong(b"alive"), 5)]


def test_boot_and_log_frames(codec_bin):
    dev = Device(codec_bin)
    boot = dev.boot(0xCAFEBABE)
    log = dev.log(1, "arena: 5000 of 8192 bytes used")
    long = dev.log(3, "y" * 400)
    res = dev.run()
    assert res[boot] == [c.encode_message(c.Boot(0xCAFEBABE), 0)]
    assert res[log] == [c.encode_message(c.Log(1, "arena: 5000 of 8192 bytes used"), 0)]
    assert res[long] == [c.encode_message(c.Log(3, "y" * 160), 0)]  # HIL_MAX_LOG


def test_bad_frames_get_no_answer(codec_bin):
    good = c.encode_message(c.Ping(b"ok"), 3)
    bad_crc = bytearray(c.encode_message(c.Ping(b"ok"), 1))
    bad_crc[2] ^= 1
    too_long = c.encode_message(c.Write(0, 0, bytes(MAX_FRAME)), 2)  # body MAX_FRAME + 8
    dev = Device(codec_bin)
    silent = [dev.feed(bytes(bad_crc)), dev.feed(too_long), dev.feed(b"\x05\x01\x02\x00"), dev.feed(b"\x01\x00")]
    answered = dev.feed(good)
    res = dev.run()
    assert all(res[s] == [] for s in silent)
    assert res[answered] == [c.encode_message(c.Pong(b"ok"), 3)]


# --------------------------------------------------------------------- fuzzing


def test_fuzz_receiver_and_dispatcher(tmp_path_factory):
    why = fb.fuzzer_unavailable()
    if why:
        pytest.skip(f"libFuzzer target not built: {why}")
    out = tmp_path_factory.mktemp("fw_fuzz")
    exe = fb.build_fuzzer(out)
    corpus = out / "corpus"
    corpus.mkdir()
    # Seeds: real request streams, raw (0x00 prefix) and as records (0x01).
    stream = b"".join(
        c.encode_message(m, s)
        for m, s in [
            (c.Hello(), 1),
            (c.Write(0, 0, bytes(16)), 2),
            (c.Write(1, 0, bytes(6)), 3),
            (c.Invoke(1), 4),
            (c.Read(1, 0, 1200), 5),
            (c.Ping(b"z"), 6),
        ]
    )
    (corpus / "raw").write_bytes(b"\x00" + stream)
    bodies = [c.message_body(c.Write(0, 4, bytes(8)), 9)[:-4], c.message_body(c.Invoke(2), 9)[:-4]]
    (corpus / "records").write_bytes(b"\x01" + b"".join(bytes([len(b)]) + b for b in bodies))
    proc = subprocess.run(
        [str(exe), "-runs=50000", "-seed=1", "-max_len=4096", "-timeout=10", str(corpus)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=out,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 50000 runs" in proc.stderr


# --------------------------------------------------------------------- Cortex-M


@pytest.fixture(scope="session")
def cross_results(tmp_path_factory):
    if not shutil.which("arm-none-eabi-g++"):
        pytest.skip("arm-none-eabi-g++ is not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")
    out = tmp_path_factory.mktemp("fw_cross")
    return {cpu: footprint.cross_build(cpu, out) for cpu in ("cortex-m4", "cortex-m55")}


@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m55"])
def test_cross_build_links_without_heap(cross_results, cpu):
    r = cross_results[cpu]
    assert r["forbidden"] == [], f"the link pulls in heap/exception code: {r['forbidden']}"
    assert set(r["library_imports"]) <= {"memcpy", "memmove", "memset"}, r["library_imports"]
    # Reported in the test output (pytest -s / -rA shows it).
    print(
        f"\n{cpu}: hil_protocol .text {r['library']['text']} B, static RAM {r['library_static_ram']} B "
        f"(.data+.bss); one Dispatcher (HIL_MAX_FRAME={MAX_FRAME}, HIL_RX_WINDOW={RX_WINDOW}) "
        f"{r['dispatcher_bytes']} B"
    )
    assert r["library_static_ram"] == 0  # all state lives in the caller's Dispatcher
    # the version-2 staging buffer is the RAM INFO reports (HIL_STAGING_BYTES); the rest stays small
    assert 0 < r["dispatcher_bytes"] - STAGING_BYTES < 3 * MAX_FRAME


def test_heap_check_can_fail(tmp_path):
    """The nm check does catch a program that allocates."""
    if not shutil.which("arm-none-eabi-g++"):
        pytest.skip("arm-none-eabi-g++ is not installed")
    src = tmp_path / "heap.cpp"
    src.write_text("int* volatile g;\nint main() { g = new int(3); delete g; return 0; }\n")
    elf = tmp_path / "heap.elf"
    subprocess.run(
        [
            "arm-none-eabi-g++",
            "-mcpu=cortex-m4",
            *footprint.CROSS_FLAGS,
            str(src),
            "--specs=nano.specs",
            "--specs=nosys.specs",
            "-o",
            str(elf),
        ],
        check=True,
        capture_output=True,
    )
    assert "malloc" in footprint.forbidden_symbols(elf)
