"""A real device on a real port: the lab rig's check, written with tinyhil's
pytest plugin (harness.pytest_plugin; docs/pytest.md).

Runs only when a board and a model are named; skipped otherwise, saying how:

    HIL_PORT=/dev/ttyACM0 HIL_MODEL=m_quantized.tflite HIL_DATA=m_quantized_validation_data.npz \\
        [HIL_BOARD=nucleo_n657x0_q] python3 -m pytest -m hardware tests/test_hardware.py

HIL_PORT / HIL_BOARD are the shorthand of --hil-port / --hil-board; a whole
lab works too (--hil-lab lab.yaml [--hil-select tag:T]: every test runs on
every board). HIL_PORT is any pyserial URL, so the same tests run against a
board behind a lab's ser2net (rfc2217://), QEMU (`hil flash --board qemu_m55`
prints a socket:// URL) or a simulated board (`hil device sim`). A board that
must be flashed is built and flashed with HIL_MODEL once per session.
"""

from __future__ import annotations

import os

import pytest

from harness.boards import load_board
from harness.model import inspect_model
from harness.protocol.session import check_device_matches

pytestmark = pytest.mark.hardware

HOWTO = (
    "no device named: set HIL_PORT=<pyserial URL> HIL_MODEL=<.tflite> "
    "HIL_DATA=<_validation_data.npz> [HIL_BOARD=<id>] (or --hil-port/--hil-lab) to run the tests against a board"
)


@pytest.fixture(scope="module")
def model_and_data():
    model, data = os.environ.get("HIL_MODEL"), os.environ.get("HIL_DATA")
    if not (model and data):
        pytest.skip(HOWTO)
    return model, data


@pytest.fixture
def board(model_and_data, hil_flash):
    """The board holding HIL_MODEL; flashed in a fixture, so a board that cannot be is an ERROR."""
    return hil_flash(model_and_data[0])


@pytest.mark.timeout(600)
def test_handshake_names_the_board_and_the_model(board, hil_session, model_and_data):
    info = hil_session.info
    assert hil_session.ping(b"tinyhil") == b"tinyhil"
    assert check_device_matches(info, inspect_model(model_and_data[0])) == []
    assert info.max_frame > 0 and info.arena_used <= info.arena_size
    assert info.board == board.board
    b = load_board(board.board)
    assert info.arena_size <= b.ram_bytes and info.model_size <= b.flash_bytes


@pytest.mark.timeout(1800)
def test_validation_passes_bit_exact_to_tflm(board, hil_validate, model_and_data):
    model, data = model_and_data
    r = hil_validate(model, data, max_lsb=0)
    assert r.passed
    assert r.samples_done == r.samples_planned > 0
    assert r.triangulation["matches"][0] == "tflm", r.triangulation
    assert r.timing, "the device reported no inference times"
    assert r.reports["junit"].is_file() and r.reports["html"].is_file()
