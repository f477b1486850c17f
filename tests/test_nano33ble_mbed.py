"""The nano33ble env compiled here without PlatformIO's registry: every
source `pio run -e nano33ble` compiles (the firmware, the generated model,
the TFLM tree, the Arduino core and variant) with arm-none-eabi-gcc for
cortex-m4, against the real ArduinoCore-mbed headers and with the command
lines PlatformIO's Arduino mbed builder makes (builder-framework-arduino-
core-mbed, as platform-nordicnrf52 v10.5.x runs it): the variant's
cflags/cxxflags/defines/includes.txt, the builder's own float flags, then
the env's build_flags and build_unflags read from platformio.ini.

Needs HIL_ARDUINO_MBED_DIR=/path/to/framework-arduino-mbed (an
ArduinoCore-mbed 4.1.x checkout or PlatformIO package) and a Cortex-M4 TFLM
tree (HIL_TFLM_M4_DIR, else HIL_TFLM_DIR); see docs/build.md. The TFLM
library is compiled once and cached (harness.tflm.build_static_lib).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import tflm
from harness.boards import firmware_defines, load_board

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
VARIANT = "ARDUINO_NANO33BLE"
# What PlatformIO's nano33ble board manifest (platform-nordicnrf52) adds.
BOARD_EXTRA = ["-DARDUINO_ARDUINO_NANO33BLE", "-DARDUINO_ARCH_NRF52840"]
# What arduino-core-mbed.py's configure_fpu_flags() appends for cortex-m4.
BUILDER_FPU = ["-mfloat-abi=soft", "-mfpu=fpv4-sp-d16"]
LIBRARIES = ("hil_protocol", "hil_runner")
# VFP instructions: single-precision arithmetic and FPU loads/stores.
VFP = re.compile(r"\bv(add|sub|mul|div|fma|mla|ldr|str|mov|cvt|cmp)(\.f32|\.32|\.s32\.f32|\.f32\.s32)?\b")

pytestmark = [pytest.mark.tflm, pytest.mark.slow]


@pytest.fixture(scope="module")
def framework() -> Path:
    value = os.environ.get("HIL_ARDUINO_MBED_DIR")
    if not value:
        pytest.skip(
            "set HIL_ARDUINO_MBED_DIR to a framework-arduino-mbed folder (ArduinoCore-mbed 4.1.x; docs/build.md)"
        )
    root = Path(value).expanduser()
    assert (root / "cores" / "arduino" / "Arduino.h").is_file(), f"{root} is not ArduinoCore-mbed (no cores/arduino)"
    assert (root / "variants" / VARIANT / "cflags.txt").is_file(), f"{root} has no variants/{VARIANT}"
    return root


@pytest.fixture(scope="module")
def cross() -> str:
    exe = shutil.which("arm-none-eabi-g++")
    if not exe:
        pytest.skip("arm-none-eabi-g++ is not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")
    return exe


@pytest.fixture(scope="module")
def tree() -> tflm.TflmTree:
    if not (os.environ.get(tflm.M4_ENV_VAR) or os.environ.get(tflm.ENV_VAR)):
        pytest.skip(f"set {tflm.M4_ENV_VAR} to a Cortex-M4 CMSIS-NN TFLM tree (docs/build.md)")
    return tflm.tree_for("cortex-m4")


def _env_option(name: str) -> list[str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(FW / "platformio.ini")
    return ini.get("env:nano33ble", name, fallback="").split()


def _flag_file(framework: Path, name: str) -> list[str]:
    lines = (framework / "variants" / VARIANT / f"{name}.txt").read_text().splitlines()
    # The files are written for a shell: -DX=\"y\" is -DX="y" on an argv.
    return [line.strip().replace('\\"', '"') for line in lines if line.strip()]


def mbed_flags(framework: Path, unflags: list[str], build_flags: list[str]) -> dict[str, list[str]]:
    """Compiler flags of the env as the builder composes them: the variant's
    flag files, the builder's float flags, the board's and env's
    build_flags, minus build_unflags (PlatformIO removes those last).
    "cc": both languages (CCFLAGS), "c"/"c++": each language's whole line
    but the sources' own include folders, "defines": CPPDEFINES and CPPPATH."""
    cflags, cxxflags = set(_flag_file(framework, "cflags")), set(_flag_file(framework, "cxxflags"))
    common = cflags & cxxflags
    core = framework / "cores" / "arduino"
    cc = sorted(common) + BUILDER_FPU + BOARD_EXTRA + [f for f in build_flags if not f.startswith("-std=")]
    cc += ["-iprefix" + str(core), "@" + str(framework / "variants" / VARIANT / "includes.txt"), "-nostdlib"]
    defines = _flag_file(framework, "defines") + ["-DARDUINO=10810", "-DARDUINO_ARCH_MBED"]
    paths = [core, core / "api" / "deprecated", core / "api" / "deprecated-avr-comp", framework / "variants" / VARIANT]
    tail = defines + [f"-I{p}" for p in paths]
    cxx_only = sorted(cxxflags - common) + [f for f in build_flags if f.startswith("-std=") and "++" in f]

    def keep(flags):
        return [f for f in flags if f not in unflags and f != "-c"]

    return {
        "cc": keep(cc),
        "c": keep(sorted(cflags - common) + cc) + tail,
        "c++": keep(cxx_only + cc) + tail,
        "defines": tail,
    }


def library_flags(flags: list[str], library: str) -> list[str]:
    """`flags` with a firmware library's own build flags and unflags (its library.json)."""
    build = json.loads((FW / "lib" / library / "library.json").read_text()).get("build", {})
    own = [f.replace("$PROJECT_INCLUDE_DIR", str(FW / "include")) for f in build.get("flags", [])]
    return [f for f in flags + own if f not in build.get("unflags", [])]


@pytest.fixture(scope="module")
def flags(framework) -> dict[str, list[str]]:
    return mbed_flags(framework, _env_option("build_unflags"), _env_option("build_flags"))


def _compile(tool: str, flags: list[str], src: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([tool, *flags, "-c", str(src), "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{src}:\n{proc.stderr[-3000:]}"
    return out


def _firmware_flags(flags, tree, model_dir: Path) -> list[str]:
    board = [f"-D{n}" if v is None else f"-D{n}={v}" for n, v in firmware_defines(load_board("nano33ble"))]
    ours = [FW / "include", FW / "lib" / "hil_protocol" / "src", FW / "lib" / "hil_runner" / "src", model_dir]
    return flags["c++"] + board + tree.defines() + [f"-I{d}" for d in [*ours, *tree.api_include_dirs()]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from harness import codegen
    from harness.testing.models import build_tiny_models

    models = build_tiny_models(tmp_path_factory.mktemp("nano_models"))
    out = tmp_path_factory.mktemp("nano_model")
    result = codegen.generate(models["float_io"], out, board="nano33ble")
    (out / "symbol").write_text(result.data_symbol)
    return out


def test_the_env_keeps_the_cores_float_abi(flags):
    """softfp + FPv4 as libmbed.a and the variant's cflags.txt; the builder's
    -mfloat-abi=soft is gone. C++ stays the variant's gnu++14 (the core's
    abs() macro breaks C++17's <chrono>); lib/hil_runner asks for C++17."""
    for lang in ("c", "c++"):
        abis = [f for f in flags[lang] if f.startswith("-mfloat-abi=")]
        assert abis and set(abis) == {"-mfloat-abi=softfp"}, abis
        assert "-mfpu=fpv4-sp-d16" in flags[lang] and "-mcpu=cortex-m4" in flags[lang]
    assert [f for f in flags["c++"] if f.startswith("-std=")] == ["-std=gnu++14"]
    assert [f for f in library_flags(flags["c++"], "hil_runner") if f.startswith("-std=")] == ["-std=gnu++17"]


def test_every_firmware_source_compiles_for_the_nano(cross, flags, tree, model_dir, tmp_path):
    """The sketch and the model with the env's flags, each firmware library
    with its library.json's on top, as PlatformIO compiles them."""
    fw_flags = _firmware_flags(flags, tree, model_dir)
    groups = [
        (fw_flags, [FW / "src" / "main.cpp", *sorted((FW / "src" / "boards" / "nano33ble").glob("*.cpp"))]),
        (fw_flags, sorted(model_dir.glob("*.cc"))),
        *[(library_flags(fw_flags, lib), sorted((FW / "lib" / lib / "src").glob("*.cc"))) for lib in LIBRARIES],
    ]
    objects = [
        _compile(cross, group_flags, src, tmp_path / (src.name + ".o"))
        for group_flags, sources in groups
        for src in sources
    ]
    assert len(objects) >= 7  # main, the glue, the model, 2 + 2 library files
    nm = shutil.which("arm-none-eabi-nm")
    defined = set()
    for obj in objects:
        out = subprocess.run([nm, "-C", "--defined-only", str(obj)], capture_output=True, text=True, check=True)
        defined |= {line.split(" ", 2)[2] for line in out.stdout.splitlines() if len(line.split(" ", 2)) == 3}
    # The Arduino entry points, the TFLM seams TFLM's own files would have
    # defined, and the model array.
    assert {"setup()", "loop()", "DebugLog", "DebugVsnprintf", "tflite::GetCurrentTimeTicks()"} <= defined, defined
    assert (model_dir / "symbol").read_text() in defined


def test_the_tflm_tree_compiles_for_the_nano(cross, flags, tree):
    """As scripts/hil_tflm_lib.py builds it: the env's CCFLAGS, the tree's
    own include folders and defines, TFLM's C++17 flags."""
    lib = tflm.build_static_lib(tree, cross, flags["cc"] + tree.defines(), jobs=2)
    members = subprocess.run(["arm-none-eabi-ar", "t", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "micro_interpreter.o" in members and ("fully_connected.o" in members)
    if tree.has_cmsis_nn:
        assert "arm_fully_connected_s8.o" in members


def test_the_arduino_core_compiles_with_the_envs_flags(cross, flags, framework, tmp_path):
    """The core and variant are compiled by the env too (softfp, the
    variant's gnu++14)."""
    roots = [framework / "cores" / "arduino", framework / "variants" / VARIANT]
    sources = sorted(p for r in roots for ext in ("*.c", "*.cpp") for p in r.rglob(ext) if "/mbed/" not in p.as_posix())
    assert len(sources) > 10
    for i, src in enumerate(sources):
        tool = cross if src.suffix == ".cpp" else cross[: -len("g++")] + "gcc"
        _compile(tool, flags["c++" if src.suffix == ".cpp" else "c"], src, tmp_path / f"{i}_{src.stem}.o")


def _disassemble(obj: Path) -> str:
    return subprocess.run(["arm-none-eabi-objdump", "-dr", str(obj)], capture_output=True, text=True, check=True).stdout


def test_the_model_code_runs_on_the_fpu(cross, flags, tree, tmp_path):
    """The float FULLY_CONNECTED kernel TFLM runs (the tree's CMSIS-NN one)
    built as scripts/hil_tflm_lib.py builds it uses VFP instructions; built
    with the builder's -mfloat-abi=soft left in, the same source has none
    (so the check is not vacuous)."""
    kernels = tree.root / "tensorflow" / "lite" / "micro" / "kernels"
    src = kernels / ("cmsis_nn" if tree.has_cmsis_nn else ".") / "fully_connected.cc"
    fw_flags = flags["cc"] + list(tflm.CXX_ONLY_FLAGS) + tree.defines() + [f"-I{d}" for d in tree.include_dirs()]
    hard = _disassemble(_compile(cross, fw_flags, src, tmp_path / "fpu.o"))
    assert len(VFP.findall(hard)) > 0, "no VFP instruction in the float kernel"
    assert re.search(r"\bvmul\.f32\b|\bvfma\.f32\b|\bvdiv\.f32\b", hard) and re.search(r"\bvldr\b", hard)
    soft_flags = [f for f in fw_flags if not f.startswith("-mfloat-abi=")] + ["-mfloat-abi=soft"]
    soft = _disassemble(_compile(cross, soft_flags, src, tmp_path / "soft.o"))
    assert not re.search(r"\bv(add|mul|div|fma|ldr)\.?f?3?2?\b", soft) and "__aeabi_f" in soft
