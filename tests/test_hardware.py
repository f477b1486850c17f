"""A real device on a real port: the lab rig's check.

Runs only when a device is named; skipped otherwise, saying how to enable it:

    HIL_PORT=/dev/ttyACM0 HIL_MODEL=m_quantized.tflite HIL_DATA=m_quantized_validation_data.npz \\
        [HIL_BOARD=nucleo_n657x0_q] python3 -m pytest -m hardware

HIL_PORT is any pyserial URL, so the same tests run against a board behind a
lab's ser2net (rfc2217://), QEMU (`hil flash --board qemu_m55` prints a
socket:// URL) or the native firmware's pty. The device must already hold
HIL_MODEL (`hil build` + `hil flash`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.boards import load_board
from harness.model import inspect_model
from harness.protocol.session import DeviceSession, check_device_matches

pytestmark = pytest.mark.hardware

HOWTO = (
    "no device named: set HIL_PORT=<pyserial URL> HIL_MODEL=<.tflite it holds> "
    "HIL_DATA=<_validation_data.npz> [HIL_BOARD=<id>] to run the tests against a board"
)


@pytest.fixture(scope="module")
def device():
    port, model, data = (os.environ.get(k) for k in ("HIL_PORT", "HIL_MODEL", "HIL_DATA"))
    if not (port and model and data):
        pytest.skip(HOWTO)
    return port, model, data, os.environ.get("HIL_BOARD")


@pytest.mark.timeout(120)
def test_handshake_names_the_board_and_the_model(device):
    port, model, _, board = device
    with DeviceSession(port, timeout=2.0) as s:
        info = s.handshake()
        assert s.ping(b"tinyhil") == b"tinyhil"
    assert check_device_matches(info, inspect_model(model)) == []
    assert info.max_frame > 0 and info.arena_used <= info.arena_size
    if board:
        assert info.board == board
        b = load_board(board)
        assert info.arena_size <= b.ram_bytes and info.model_size <= b.flash_bytes


@pytest.mark.timeout(1800)
def test_validation_passes_bit_exact_to_tflm(device, tmp_path):
    port, model, data, _ = device
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "validate",
            "--port",
            port,
            "--model",
            model,
            "--data",
            data,
            "--max-lsb",
            "0",
            "--report-json",
            str(report),
            "--junit-xml",
            str(tmp_path / "report.xml"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(report.read_text())
    assert r["status"] == "pass" and r["samples_done"] == r["samples_planned"] > 0
    assert r["triangulation"]["matches"][0] == "tflm", r["triangulation"]
    assert r["timing"], "the device reported no inference times"
