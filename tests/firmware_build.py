"""Builds of the firmware's protocol library for its host tests and bench:
the sanitizer test program, the libFuzzer target, and the Cortex-M cross
build whose link is checked for heap use and whose static RAM is measured.
Used by tests/test_firmware_codec.py and bench/firmware_protocol.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
PROTOCOL_SRC = FIRMWARE / "lib" / "hil_protocol" / "src"
TEST_SRC = FIRMWARE / "test"
SOURCES = sorted(PROTOCOL_SRC.glob("*.cc"))
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
WARN = ["-Wall", "-Wextra", "-Wshadow", "-Werror"]
CROSS_FLAGS = [
    "-mthumb",
    "-O2",
    "-fno-exceptions",
    "-fno-rtti",
    "-fno-threadsafe-statics",
    "-ffunction-sections",
    "-fdata-sections",
]
# What a heap-free, exception-free link must not reference.
FORBIDDEN = re.compile(
    r"^(malloc|free|calloc|realloc|_malloc_r|_free_r|_calloc_r|_realloc_r|"
    r"_Znwj|_Znaj|_Znwm|_Znam|_ZdlPv\w*|_ZdaPv\w*|__cxa_allocate_exception|__cxa_throw)$"
)


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


def forbidden_symbols(elf: Path, prefix: str = "arm-none-eabi-") -> list[str]:
    nm = subprocess.run([prefix + "nm", str(elf)], capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[-1] for line in nm.splitlines() if line.strip()} & _all_forbidden(nm))


def _all_forbidden(nm_text: str) -> set[str]:
    return {line.split()[-1] for line in nm_text.splitlines() if line.strip() and FORBIDDEN.match(line.split()[-1])}


def cross_build(cpu: str, out_dir: Path, prefix: str = "arm-none-eabi-") -> dict:
    """Compiles the library for `cpu`, links it with a probe program that
    holds one static Dispatcher (over the fake backend), and reports: the
    library's own .text/.data/.bss, the Dispatcher object's size, the
    image's .data+.bss, and every heap/exception symbol the link pulled in."""
    out = out_dir / cpu
    out.mkdir(parents=True, exist_ok=True)
    cxx = prefix + "g++"
    flags = ["-std=c++17", f"-mcpu={cpu}", *CROSS_FLAGS, *WARN]
    objects = []
    for src in SOURCES:
        obj = out / (src.stem + ".o")
        _run([cxx, *flags, f"-I{PROTOCOL_SRC}", "-c", str(src), "-o", str(obj)])
        objects.append(obj)
    elf = out / "probe.elf"
    _run(
        [
            cxx,
            *flags,
            f"-I{PROTOCOL_SRC}",
            f"-I{TEST_SRC}",
            str(TEST_SRC / "link_probe.cpp"),
            *map(str, objects),
            "--specs=nano.specs",
            "--specs=nosys.specs",
            "-Wl,--gc-sections",
            "-o",
            str(elf),
        ]
    )

    def sections(path: Path) -> dict[str, int]:
        text = subprocess.run(
            [prefix + "size", "-A", "-d", str(path)], capture_output=True, text=True, check=True
        ).stdout
        totals = {"text": 0, "data": 0, "bss": 0}
        for line in text.splitlines():
            m = re.match(r"^\.(text|data|bss)\S*\s+(\d+)", line)
            if m:
                totals[m.group(1)] += int(m.group(2))
        return totals

    lib = {"text": 0, "data": 0, "bss": 0}
    for obj in objects:
        for k, v in sections(obj).items():
            lib[k] += v
    nm = subprocess.run([prefix + "nm", "-S", str(elf)], capture_output=True, text=True, check=True).stdout
    dispatcher = 0
    for line in nm.splitlines():
        parts = line.split()
        if "g_dispatcher" in parts[-1] and len(parts) == 4:
            dispatcher = int(parts[1], 16)

    def names(*args: str) -> set[str]:
        text = subprocess.run(
            [prefix + "nm", *args, *map(str, objects)], capture_output=True, text=True, check=True
        ).stdout
        return {line.split()[-1] for line in text.splitlines() if line.strip() and not line.endswith(":")}

    imports = names("-u") - names("-g", "--defined-only")
    return {
        "cpu": cpu,
        "library": lib,
        "library_static_ram": lib["data"] + lib["bss"],
        "dispatcher_bytes": dispatcher,
        "image": sections(elf),
        "forbidden": forbidden_symbols(elf, prefix),
        "library_imports": sorted(imports),
    }


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


def _board_flags() -> list[str]:
    # The native board's facts, as `pio run` gets them (boards/native.json).
    from harness.boards import define_flags, load_board

    return define_flags(load_board("native"))


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
                *_board_flags(),
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
