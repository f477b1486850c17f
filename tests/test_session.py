"""DeviceSession: port errors, a silent device, model checks, input checks."""

from __future__ import annotations

import errno
import os
import re
import tty
from dataclasses import replace

import numpy as np
import pytest

from harness.device.link import TcpTransport
from harness.device.sim import start_sim
from harness.errors import DataError, DeviceError
from harness.model import inspect_model
from harness.protocol.session import DeviceSession, _open_error, check_device_matches
from harness.testing.models import tiny_models

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def models():
    return tiny_models()


def test_missing_port_is_a_one_line_device_error():
    with pytest.raises(DeviceError) as exc:
        DeviceSession("/dev/ttyDOES_NOT_EXIST")
    assert "does not exist" in str(exc.value) and "\n" not in str(exc.value)


def test_refused_tcp_port():
    t = TcpTransport(lambda d: None)
    port = t.port
    t.close()
    with pytest.raises(DeviceError) as exc:
        DeviceSession(f"socket://127.0.0.1:{port}")
    assert exc.value.message == f"nothing listens at socket://127.0.0.1:{port} (connection refused)"


def test_a_port_held_by_another_session_is_busy():
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        with DeviceSession(os.ttyname(slave)):
            with pytest.raises(DeviceError) as exc:
                DeviceSession(os.ttyname(slave))
        assert exc.value.message == f"port {os.ttyname(slave)} is busy (another program has it open)"
    finally:
        os.close(master)
        os.close(slave)


def test_port_errors_are_classified_by_errno_not_by_text():
    import serial

    # EINVAL's text holds "errno 2" and "could not open port": still not a missing port
    text = "could not open port /dev/ttyX: [Errno 22] Invalid argument: '/dev/ttyX'"
    e = _open_error("/dev/ttyX", serial.SerialException(errno.EINVAL, text))
    assert e.message == f"cannot open port /dev/ttyX: [Errno 22] {text}"
    e = _open_error("/dev/ttyX", serial.SerialException(errno.EACCES, "could not open port"))
    assert e.message == "no permission to open /dev/ttyX"
    # socket:// raises a SerialException without errno while handling the socket's error
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        except OSError as inner:
            raise serial.SerialException(f"Could not open port socket://h:1: {inner}") from None
    except serial.SerialException as outer:
        assert outer.__context__ is not None
        assert _open_error("socket://h:1", outer).message.startswith("nothing listens at socket://h:1")


@pytest.mark.timeout(30)  # a hang fails the test instead of stalling the suite
def test_silent_device_fails_the_handshake_in_bounded_time():
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        with DeviceSession(os.ttyname(slave), timeout=0.2, retries=2) as s:
            with pytest.raises(DeviceError) as exc:
                s.handshake()
        assert "did not answer the handshake within 0.6 s" in str(exc.value)
        assert "check the port/baud/firmware" in str(exc.value)
        assert exc.value.exit_code == 2
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.timeout(60)
def test_device_that_stops_answering_mid_run(models):
    mi = inspect_model(models["float_io"])
    sim = start_sim(models["float_io"], listen="tcp:0", baud=0, latency_ms=0, arena_size=100_000)
    try:
        with DeviceSession(sim.url, timeout=0.2, retries=2) as s:
            s.handshake()
            sim.close()
            with pytest.raises(DeviceError) as exc:
                s.infer([np.zeros(mi.inputs[0].shape, np.float32)])
        # the closed socket shows on the next read (or, had the device's RST
        # come first, on the next write); either way a lost link, not a silent one
        url = re.escape(sim.url)
        assert re.match(rf"^(device at {url} went away: |port {url} failed while writing: )", exc.value.message), (
            exc.value.message
        )
    finally:
        sim.close()


def test_check_device_matches_names_each_difference(models):
    mi = inspect_model(models["float_io"])
    other = inspect_model(models["int8_io"])
    with start_sim(models["float_io"], listen="tcp:0", baud=0, latency_ms=0, arena_size=100_000) as sim:
        with DeviceSession(sim.url) as s:
            info = s.handshake()
    assert check_device_matches(info, mi) == []
    diffs = check_device_matches(info, other)
    text = "\n".join(diffs)
    assert "model sha256" in text and "input 0" in text and "dtype: device float32, model int8" in text
    assert "scale" in text and "zero point" in text
    moved = replace(mi, inputs=(replace(mi.inputs[0], shape=(1, 301)),))
    assert any("shape: device (1, 300), model (1, 301)" in d for d in check_device_matches(info, moved))


def test_inputs_must_have_the_devices_dtype_and_size(models):
    mi = inspect_model(models["float_io"])
    with start_sim(models["float_io"], listen="tcp:0", baud=0, latency_ms=0, arena_size=100_000) as sim:
        with DeviceSession(sim.url) as s:
            with pytest.raises(DataError):
                s.infer([np.zeros(mi.inputs[0].shape, np.float64)])
            with pytest.raises(DataError):
                s.infer([np.zeros((1, 10), np.float32)])
            with pytest.raises(DataError):
                s.infer([])
            assert s.ping(b"\x00" * 100) == b"\x00" * 100


def test_not_ready_device_is_a_clean_error(models):
    from harness.boards import load_board

    small = replace(load_board("sim"), ram_bytes=100)
    mi = inspect_model(models["float_io"])
    with start_sim(models["float_io"], listen="tcp:0", board=small, baud=0, arena_size=5000) as sim:
        with DeviceSession(sim.url, timeout=0.5) as s:
            with pytest.raises(DeviceError) as exc:
                s.infer([np.zeros(mi.inputs[0].shape, np.float32)])
    assert "NOT_READY" in str(exc.value) and "does not fit" in str(exc.value)


def test_logs_go_to_on_log_not_into_data(models):
    logs = []
    with start_sim(models["float_io"], listen="tcp:0", baud=0, arena_size=100_000) as sim:
        with DeviceSession(sim.url, on_log=lambda level, text: logs.append((level, text))) as s:
            s.handshake()
            sim._log(1, "a warning from the board")
            sim._log(2, "\x00 binary-looking \x00 log")
            # the board sends the PONG after the logs on one ordered line, so
            # the session has handed both to on_log when ping returns
            assert s.ping(b"x") == b"x"
            assert logs[-2:] == [(1, "a warning from the board"), (2, "\x00 binary-looking \x00 log")]
