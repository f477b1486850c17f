"""harness.drivers: one driver class per flash method, chosen by the board's
data; flash() is a thin wrapper; nothing outside a driver tests a method."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import drivers
from harness.boards import all_boards, load_board
from harness.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_every_board_has_a_driver_named_by_role():
    names = {m: cls.__name__ for m, cls in drivers.registered().items()}
    assert names == {
        "native": "NativeDriver",
        "qemu": "QemuDriver",
        "platformio": "PlatformIOUploadDriver",
        "stm32cubeprogrammer": "StmProgrammerDriver",
        "sim": "SimDriver",
    }
    for board in all_boards():
        assert type(drivers.driver_for(board)).method == board.upload_method


def test_an_unknown_method_is_a_config_error_naming_the_known_ones():
    board = load_board("qemu_m55")
    odd = type(board)(**{**board.__dict__, "upload_method": "carrier-pigeon"})
    with pytest.raises(ConfigError, match="carrier-pigeon") as exc:
        drivers.driver_for(odd)
    assert "qemu" in exc.value.hint


def test_a_driver_is_one_new_module(tmp_path):
    """A module dropped into the package registers itself on import."""
    pkg = REPO / "harness" / "drivers"
    extra = pkg / "zz_test_probe.py"
    extra.write_text(
        textwrap.dedent(
            """
            from harness.drivers.base import Driver, register

            @register("probe")
            class ProbeDriver(Driver):
                pass
            """
        )
    )
    try:
        code = "from harness import drivers; print(drivers.registered()['probe'].__name__)"
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env={"PYTHONPATH": str(REPO)}
        )
        assert out.stdout.strip() == "ProbeDriver", out.stderr
    finally:
        extra.unlink()


def test_two_drivers_for_one_method_are_refused():
    with pytest.raises(RuntimeError, match="two drivers"):

        @drivers.register("qemu")
        class Other(drivers.Driver):
            pass


def test_default_firmware_is_the_drivers():
    from harness.flash import default_elf

    assert default_elf(load_board("native")) == Path("build/native/firmware")
    assert default_elf(load_board("qemu_m55")) == Path("build/qemu_m55/firmware.elf")


def test_sim_driver_needs_the_model_and_stays_in_process(tmp_path):
    from harness.flash import flash

    with pytest.raises(ConfigError, match="needs the model"):
        flash("sim")
    with pytest.raises(ConfigError, match="cannot be detached"):
        flash("sim", model=tmp_path / "m.tflite", detach=True)
    with pytest.raises(ConfigError, match="unknown simulated-board settings: colour"):
        flash("sim", model=tmp_path / "m.tflite", options={"colour": "red"})


def test_sim_driver_serves_the_model_on_a_port(tmp_path):
    from harness.flash import flash
    from harness.protocol.session import DeviceSession
    from harness.testing.models import tiny_models

    model = tiny_models()["float_io"]
    res = flash("sim", model=model, options={"baud": 0, "latency_ms": 0})
    try:
        assert res.port and res.process is not None
        with DeviceSession(res.port, timeout=5.0) as session:
            assert session.handshake().board == "sim"
    finally:
        res.stop()


# The files where a board id or a flash method used to be tested in an if.
# (cli/demo.py prints the equivalent commands per board; it is not a seam.)
SEAMS = [
    "harness/build.py",
    "harness/flash.py",
    "harness/demo.py",
    "harness/ports.py",
    "harness/cli/build.py",
    "harness/cli/flash.py",
    "harness/cli/boards.py",
    "harness/cli/ports.py",
]
BOARD_TEST = re.compile(
    r"\b(if|elif|while)\b[^\n]*(board\.id\s*==|upload_method\s*[!=]=|board\s*[!=]=\s*\"|"
    r"==\s*\"(qemu|native|sim|platformio|stm32cubeprogrammer)\")"
)


@pytest.mark.parametrize("rel", SEAMS)
def test_no_board_or_method_is_tested_outside_its_driver(rel):
    text = (REPO / rel).read_text()
    hits = [line.strip() for line in text.splitlines() if BOARD_TEST.search(line)]
    assert not hits, f"{rel} tests a board id or method: {hits}"
