"""Host builds of the firmware for its tests: the protocol library's
sanitizer test program and libFuzzer target (tests/test_firmware_codec.py),
and the native firmware program (tests/test_firmware_native.py). The
Cortex-M footprint build is product code: `harness.protocol.footprint`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
PROTOCOL_SRC = FIRMWARE / "lib" / "hil_protocol" / "src"
TEST_SRC = FIRMWARE / "test"
SOURCES = sorted(PROTOCOL_SRC.glob("*.cc"))
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
WARN = ["-Wall", "-Wextra", "-Wshadow", "-Werror"]


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")


def build_host_test(out_dir: Path, cxx: str = "g++") -> Path:
    """test_codec built with AddressSanitizer and UBSan."""
    exe = out_dir / "test_codec"
    _run(
        [
            cxx,
            "-std=c++17",
            "-g",
            "-O1",
            *WARN,
            *SANITIZE,
            f"-I{PROTOCOL_SRC}",
            f"-I{TEST_SRC}",
            str(TEST_SRC / "test_codec.cpp"),
            *map(str, SOURCES),
            "-o",
            str(exe),
        ]
    )
    return exe


def fuzzer_unavailable(cxx: str = "clang++") -> str | None:
    """Why the libFuzzer target cannot be built here, or None."""
    if not shutil.which(cxx):
        return f"{cxx} is not installed (apt-get install clang)"
    probe = subprocess.run([cxx, "-print-file-name=libclang_rt.fuzzer-x86_64.a"], capture_output=True, text=True)
    name = probe.stdout.strip()
    if probe.returncode != 0 or not Path(name).is_file():
        return "clang's libFuzzer runtime is missing (apt-get install libclang-rt-14-dev)"
    return None


def build_fuzzer(out_dir: Path, cxx: str = "clang++") -> Path:
    exe = out_dir / "fuzz_frames"
    _run(
        [
            cxx,
            "-std=c++17",
            "-g",
            "-O1",
            "-fsanitize=fuzzer,address,undefined",
            "-fno-sanitize-recover=all",
            f"-I{PROTOCOL_SRC}",
            f"-I{TEST_SRC}",
            str(TEST_SRC / "fuzz_frames.cpp"),
            *map(str, SOURCES),
            "-o",
            str(exe),
        ]
    )
    return exe


# --------------------------------------------------------------------- native program

RUNNER_SRC = FIRMWARE / "lib" / "hil_runner" / "src"
NATIVE_COMMON = [
    FIRMWARE / "src" / "main.cpp",
    FIRMWARE / "src" / "boards" / "native" / "board_native.cc",
    RUNNER_SRC / "hil_format.cc",
    *SOURCES,
]
NATIVE_FLAGS = [
    "-std=c++17",
    "-O2",
    "-g",
    "-fno-exceptions",
    "-fno-rtti",
    "-fno-threadsafe-statics",
    "-Wall",
    "-Wextra",
]


def _board_flags(overrides: tuple[str, ...] = ()) -> list[str]:
    # The native board's facts, as `pio run` gets them (boards/native.json),
    # less those a test build sets itself (`-DNAME=...` in `overrides`).
    from harness.boards import define_flags, load_board

    names = {d[2:].split("=", 1)[0] for d in overrides if d.startswith("-D")}
    return [f for f in define_flags(load_board("native")) if f[2:].split("=", 1)[0] not in names]


def _includes(tree, model_dir: Path | None = None) -> list[str]:
    dirs = [FIRMWARE / "include", PROTOCOL_SRC, RUNNER_SRC]
    if model_dir is not None:
        dirs.insert(0, model_dir)
    # TFLM's headers as system headers: their warnings are not ours.
    return [f"-I{d}" for d in dirs] + [f"-isystem{d}" for d in tree.include_dirs()]


def build_native_common(tree, out_dir: Path, cxx: str = "g++") -> list[Path]:
    """Objects of the native firmware that do not depend on the model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    objs = []
    for src in NATIVE_COMMON:
        obj = out_dir / (src.stem + ".o")
        _run([cxx, *NATIVE_FLAGS, *_board_flags(), *tree.defines(), *_includes(tree), "-c", str(src), "-o", str(obj)])
        objs.append(obj)
    return objs


def build_native(
    tree,
    tflm_lib: Path,
    common: list[Path],
    model_dir: Path,
    out_dir: Path,
    cxx: str = "g++",
    defines: tuple[str, ...] = (),
) -> Path:
    """The native firmware for the model generated into `model_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    objs = list(common)
    for src in (RUNNER_SRC / "hil_runner.cc", model_dir / "model_data.cc"):
        obj = out_dir / (src.stem + ".o")
        _run(
            [
                cxx,
                *NATIVE_FLAGS,
                *_board_flags(defines),
                *defines,
                *tree.defines(),
                *_includes(tree, model_dir),
                "-c",
                str(src),
                "-o",
                str(obj),
            ]
        )
        objs.append(obj)
    exe = out_dir / "firmware"
    _run([cxx, *map(str, objs), str(tflm_lib), "-lm", "-lpthread", "-o", str(exe)])
    return exe
