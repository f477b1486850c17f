"""Board glue that cannot run here, compiled for its core with the cross
compiler: the Nano 33 BLE's (against declarations of the Arduino API it
uses, tests/stubs/arduino) and the Arduino branch of main.cpp, with the
board's defines from boards/nano33ble.json. This runs without the Arduino
core; tests/test_nano33ble_mbed.py compiles the same sources against the
real ArduinoCore-mbed headers and TFLM when HIL_ARDUINO_MBED_DIR is set."""

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.boards import firmware_defines, load_board

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
STUBS = Path(__file__).resolve().parent / "stubs" / "arduino"
# The Nano 33 BLE's nRF52840: Cortex-M4F, softfp as the Arduino mbed core's libmbed.a.
M4F = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=softfp", "-mfpu=fpv4-sp-d16"]
BOARD = [f"-D{n}" if v is None else f"-D{n}={v}" for n, v in firmware_defines(load_board("nano33ble"))]
FLAGS = [
    "-std=gnu++17",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-fno-exceptions",
    "-fno-rtti",
    *BOARD,
    f"-I{STUBS}",
    f"-I{FW / 'include'}",
    f"-I{FW / 'lib' / 'hil_protocol' / 'src'}",
    f"-I{FW / 'lib' / 'hil_runner' / 'src'}",
]


@pytest.fixture(scope="module")
def cross():
    exe = shutil.which("arm-none-eabi-g++")
    if not exe:
        pytest.skip("arm-none-eabi-g++ is not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")
    return exe


def _compile(cross, src: Path, out: Path, extra=()):
    proc = subprocess.run(
        [cross, *M4F, *FLAGS, *extra, "-c", str(src), "-o", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return out


def _symbols(obj: Path):
    nm = shutil.which("arm-none-eabi-nm")
    out = subprocess.run([nm, "-C", str(obj)], capture_output=True, text=True, check=True).stdout
    defined = {line.split(" ", 2)[2] for line in out.splitlines() if line[:1] != " " and len(line.split(" ", 2)) == 3}
    undefined = {line.split()[-1] for line in out.splitlines() if line.strip().startswith("U ")}
    return defined, undefined


def test_nano33ble_glue_implements_the_board_seam(cross, tmp_path):
    obj = _compile(cross, FW / "src" / "boards" / "nano33ble" / "board_nano33ble.cpp", tmp_path / "glue.o")
    defined, undefined = _symbols(obj)
    for fn in (
        "Init()",
        "Read(unsigned char*, unsigned int)",
        "Write(unsigned char const*, unsigned int)",
        "MicrosNow()",
        "CyclesNow()",
        "HasCycleCounter()",
        "CpuHz()",
        "BoardId()",
        "Halt(int)",
    ):
        assert f"hil::board::{fn}" in defined, (fn, sorted(defined))
    # It talks to the board only through the Arduino core's USB serial and clock.
    assert {"Serial", "millis()", "micros()"} <= undefined, undefined
    assert not any("malloc" in u or "operator new" in u for u in undefined), undefined


def test_main_has_the_arduino_entry_points(cross, tmp_path):
    obj = _compile(cross, FW / "src" / "main.cpp", tmp_path / "main.o")
    defined, _ = _symbols(obj)
    assert {"setup()", "loop()"} <= defined and "main" not in defined, sorted(defined)


def test_the_check_fails_for_glue_missing_a_function(cross, tmp_path):
    """The symbol check above is not vacuous: glue without Halt() is caught."""
    src = tmp_path / "broken.cpp"
    text = (FW / "src" / "boards" / "nano33ble" / "board_nano33ble.cpp").read_text()
    src.write_text(text.replace("void Halt(int code)", "void HaltRenamed(int code)"))
    obj = _compile(
        cross,
        src,
        tmp_path / "broken.o",
        extra=[f"-I{FW / 'src' / 'boards' / 'nano33ble'}", f"-iquote{FW / 'src' / 'boards' / 'nano33ble'}"],
    )
    defined, _ = _symbols(obj)
    assert "hil::board::Halt(int)" not in defined
