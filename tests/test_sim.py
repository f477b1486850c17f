"""The simulated board's protocol logic (frames in, frames out, no I/O) and
its line emulation pieces."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from harness.boards import load_board
from harness.device.link import Faults, LineFaults, LinePipe, RxBuffer, parse_faults
from harness.device.sim import SimDevice
from harness.errors import ConfigError
from harness.model import inspect_model
from harness.protocol import codec as c
from harness.runtime import HostInterpreter
from harness.testing.models import random_inputs, tiny_models


@pytest.fixture(scope="session")
def sim_models():
    return tiny_models()


def req(dev: SimDevice, msg, seq: int, flags: int = 0):
    body = dev.handle(c.decode_body(c.message_body(msg, seq, flags)))
    f = c.decode_body(body)
    assert f.seq == seq
    return f.message()


def run_sample(dev, xs, seq0=10, chunk=100):
    seq = seq0
    for ti, x in enumerate(xs):
        b = x.tobytes()
        for off in range(0, len(b), chunk):
            assert req(dev, c.Write(ti, off, b[off : off + chunk]), seq) == c.Ack()
            seq += 1
    res = req(dev, c.Invoke(7), seq)
    assert isinstance(res, c.Result) and res.sample_id == 7 and res.status == 0
    outs = []
    for ti, t in enumerate(dev.info_model.outputs):
        data = b""
        while len(data) < t.nbytes:
            seq += 1
            d = req(dev, c.Read(ti, len(data), t.nbytes - len(data)), seq)
            assert isinstance(d, c.Data) and d.offset == len(data) and d.data
            data += d.data
        outs.append(np.frombuffer(data, t.np_dtype).reshape(t.shape))
    return outs


@pytest.mark.parametrize("name", ["float_io", "int8_io", "two_outputs"])
def test_outputs_are_tflm_outputs_exactly(sim_models, name):
    data = sim_models[name].read_bytes()
    mi = inspect_model(sim_models[name])
    dev = SimDevice(data, max_frame=256, arena_size=100_000)
    info = req(dev, c.Hello(1, 1, 5), 1)
    assert isinstance(info, c.Info)
    assert info.model_sha256 == mi.sha256 and info.flags & c.INFO_HOST_TIME and info.board == "sim"
    assert [(t.dtype, t.shape) for t in info.inputs] == [(t.dtype, t.shape) for t in mi.inputs]
    assert [t.nbytes for t in info.outputs] == [t.nbytes for t in mi.outputs]
    host = HostInterpreter(data, "tflm")
    rng = np.random.default_rng(1)
    for i in range(3):
        xs = random_inputs(mi.inputs, rng)
        outs = run_sample(dev, xs, seq0=10 + 100 * i)
        for a, b in zip(outs, host.run(xs)):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_error_answers(sim_models):
    mi = inspect_model(sim_models["float_io"])
    dev = SimDevice(sim_models["float_io"].read_bytes(), arena_size=100_000)
    n = mi.inputs[0].nbytes
    assert req(dev, c.Read(0, 0, 4), 2).name == "INCOMPLETE_INPUT"  # no INVOKE since boot
    assert req(dev, c.Write(5, 0, b"x"), 3).name == "BAD_TENSOR"
    assert req(dev, c.Write(0, n - 1, b"xy"), 4).name == "OUT_OF_RANGE"
    assert req(dev, c.Read(3, 0, 1), 5).name == "BAD_TENSOR"
    assert req(dev, c.Read(0, 0, 999), 6).name == "OUT_OF_RANGE"
    assert req(dev, c.Write(0, 0, bytes(n // 2)), 7) == c.Ack()
    e = req(dev, c.Invoke(1), 8)
    assert e.name == "INCOMPLETE_INPUT" and f"{n // 2} of {n}" in e.message
    assert req(dev, c.Hello(3, 4, 0), 9).name == "VERSION"
    assert req(dev, c.Ping(b"\x00\x01"), 10) == c.Pong(b"\x00\x01")
    # valid frames that are not valid requests
    body = dev.handle(c.decode_body(c.encode_body(0x42, 0, 11, b"")))
    assert c.decode_body(body).message().name == "UNKNOWN_TYPE"
    body = dev.handle(c.decode_body(c.encode_body(c.INVOKE, 0, 12, b"\x01")))
    assert c.decode_body(body).message().name == "BAD_LENGTH"
    body = dev.handle(c.decode_body(c.message_body(c.Ack(), 13)))
    assert c.decode_body(body).message().name == "UNKNOWN_TYPE"


def test_duplicates_are_answered_from_memory_not_executed_again(sim_models):
    mi = inspect_model(sim_models["float_io"])
    dev = SimDevice(sim_models["float_io"].read_bytes(), arena_size=100_000)
    n = mi.inputs[0].nbytes
    req(dev, c.Hello(), 1)
    assert req(dev, c.Write(0, 0, bytes(n)), 2) == c.Ack()
    r1 = req(dev, c.Invoke(3), 3)
    assert isinstance(r1, c.Result)
    # the retransmitted INVOKE must not run again (inputs are consumed: it would fail)
    assert req(dev, c.Invoke(3), 3, flags=c.FLAG_RETRY) == r1
    assert dev.stats.invokes == 1 and dev.stats.duplicates == 1
    # same seq, other content: a new request (a new host after reconnecting)
    assert req(dev, c.Invoke(4), 3).name == "INCOMPLETE_INPUT"
    # HELLO forgets the memory: a new host numbers from 1 again
    req(dev, c.Hello(), 1)
    assert req(dev, c.Write(0, 0, bytes(n)), 2) == c.Ack()
    assert isinstance(req(dev, c.Invoke(3), 3), c.Result)
    # a reset loses the outputs
    dev.boot()
    assert req(dev, c.Read(0, 0, 4), 4).name == "INCOMPLETE_INPUT"


def test_model_too_big_for_the_board_answers_not_ready(sim_models):
    small = replace(load_board("sim"), ram_bytes=1024)
    dev = SimDevice(sim_models["float_io"].read_bytes(), board=small, arena_size=5000)
    info = req(dev, c.Hello(), 1)
    assert isinstance(info, c.Info) and info.arena_used == 5000  # the handshake still tells the truth
    e = req(dev, c.Write(0, 0, b"x"), 2)
    assert e.name == "NOT_READY" and "does not fit" in e.message and "1024" in e.message


def test_arena_is_measured_when_not_given(sim_models):
    dev = SimDevice(sim_models["int8_io"].read_bytes())
    assert 0 < dev.arena_used < 64 * 1024
    assert req(dev, c.Hello(), 1).arena_used == dev.arena_used


def test_board_profile_sets_frame_and_window(sim_models):
    b = load_board("qemu_m55")
    dev = SimDevice(sim_models["float_io"].read_bytes(), board="qemu_m55", arena_size=1000)
    info = req(dev, c.Hello(), 1)
    assert (info.max_frame, info.rx_window, info.board, info.cpu_hz) == (
        b.max_frame,
        b.rx_window,
        "qemu_m55",
        b.get("clock_hz"),
    )


def test_parse_faults():
    f = parse_faults("ber=1e-4,drop=1e-4,garbage=0.01,reset_after=50,stall=0.001:200ms")
    assert f == Faults(ber=1e-4, drop=1e-4, garbage=0.01, reset_after=50, stall_p=0.001, stall_s=0.2)
    assert parse_faults(None) == Faults() and parse_faults("none") == Faults()
    assert "stall=0.001:200ms" in f.describe()
    for bad in ("ber=2", "bogus=1", "ber", "reset_after=-1", "stall=x:1s"):
        with pytest.raises(ConfigError):
            parse_faults(bad)


def test_line_faults_are_seeded_and_rates_hold():
    data = bytes(range(1, 256)) * 400 + b"\x00"
    a = LineFaults(Faults(ber=1e-3, drop=1e-3), seed=5).apply(data)
    b = LineFaults(Faults(ber=1e-3, drop=1e-3), seed=5).apply(data)
    assert a == b and a != data
    lf = LineFaults(Faults(ber=1e-3), seed=1)
    lf.apply(data)
    assert 0.5 * len(data) * 8e-3 < lf.flipped < 1.5 * len(data) * 8e-3
    g = LineFaults(Faults(garbage=1.0), seed=1)
    out = g.apply(b"\x01\x00\x02\x00")
    assert len(out) > 4 and g.garbage_bytes == len(out) - 4


def test_line_rate_and_latency():
    now = [10.0]
    got = []
    pipe = LinePipe(got.append, baud=100_000, latency_s=0.02, clock=lambda: now[0], threaded=False)
    pipe.put(bytes(1000))  # 1000 bytes at 10 kB/s: 0.1 s on the wire, in 32-byte pieces of 3.2 ms

    def at(t):
        now[0] = 10.0 + t
        return len(pipe.pump())

    assert at(0.0) == 0 and at(0.0231) == 0  # the first piece: 3.2 ms on the wire + 20 ms latency
    assert at(0.0233) == 32
    assert at(0.1199) == 30 * 32  # pieces 2..31 left the wire by 99.2 ms
    assert at(0.1201) == 8  # the last 8 bytes leave the wire at 0.1 s: due 0.12 s, not before
    assert at(1.0) == 0 and b"".join(got) == bytes(1000)
    pipe.put(b"x")  # the wire was idle: a late byte waits only its own line time and the latency
    assert at(1.0200) == 0 and at(1.0202) == 1


def test_rx_buffer_overrun_loses_bytes():
    rx = RxBuffer(10)
    rx.push(b"12345\x00")
    rx.push(b"abcdefgh")
    assert rx.overrun_bytes == 4
    assert rx.pop_frame(0.01) == b"12345\x00"
    assert rx.pop_frame(0.01) is None
