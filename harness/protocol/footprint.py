"""The C++ half of the protocol (firmware/lib/hil_protocol) on Cortex-M: the
library compiled with arm-none-eabi-g++ and linked into a probe program
(firmware/test/link_probe.cpp, one static Dispatcher), to show the link
needs no heap or exception support and to measure code and static RAM.
bench/firmware_protocol.py reports it; tests/test_firmware_codec.py holds
it to zero heap symbols and zero static RAM of its own."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from harness.errors import ToolError
from harness.paths import firmware_dir

PROTOCOL_SRC = firmware_dir() / "lib" / "hil_protocol" / "src"
PROBE_SRC = firmware_dir() / "test"
CROSS_FLAGS = [
    "-mthumb",
    "-O2",
    "-fno-exceptions",
    "-fno-rtti",
    "-fno-threadsafe-statics",
    "-ffunction-sections",
    "-fdata-sections",
]
WARN = ["-Wall", "-Wextra", "-Wshadow", "-Werror"]
# What a heap-free, exception-free link must not reference.
FORBIDDEN = re.compile(
    r"^(malloc|free|calloc|realloc|_malloc_r|_free_r|_calloc_r|_realloc_r|"
    r"_Znwj|_Znaj|_Znwm|_Znam|_ZdlPv\w*|_ZdaPv\w*|__cxa_allocate_exception|__cxa_throw)$"
)


def _run(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ToolError(
            f"{cmd[0]} is not installed", "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
        ) from exc
    if proc.returncode != 0:
        first = (proc.stderr or proc.stdout).strip().splitlines()
        raise ToolError(f"{Path(cmd[0]).name} failed: {first[0] if first else proc.returncode}", " ".join(cmd))
    return proc.stdout


def forbidden_symbols(elf: Path, prefix: str = "arm-none-eabi-") -> list[str]:
    """Heap and exception symbols `elf` defines or references."""
    nm = _run([prefix + "nm", str(elf)])
    return sorted({line.split()[-1] for line in nm.splitlines() if line.strip() and FORBIDDEN.match(line.split()[-1])})


def _sections(path: Path, prefix: str) -> dict[str, int]:
    totals = {"text": 0, "data": 0, "bss": 0}
    for line in _run([prefix + "size", "-A", "-d", str(path)]).splitlines():
        m = re.match(r"^\.(text|data|bss)\S*\s+(\d+)", line)
        if m:
            totals[m.group(1)] += int(m.group(2))
    return totals


def _symbol_size(elf: Path, name: str, prefix: str) -> int:
    for line in _run([prefix + "nm", "-S", str(elf)]).splitlines():
        parts = line.split()
        if len(parts) == 4 and name in parts[-1]:
            return int(parts[1], 16)
    return 0


def _imports(objects: list[Path], prefix: str) -> list[str]:
    """Symbols the library needs from outside itself (libc, the runtime)."""

    def names(*args: str) -> set[str]:
        text = _run([prefix + "nm", *args, *map(str, objects)])
        return {line.split()[-1] for line in text.splitlines() if line.strip() and not line.endswith(":")}

    return sorted(names("-u") - names("-g", "--defined-only"))


def cross_build(cpu: str, out_dir: Path, prefix: str = "arm-none-eabi-") -> dict:
    """Compiles the library for `cpu`, links it with the probe program, and
    reports: the library's own .text/.data/.bss, the Dispatcher object's
    size, the image's sections, every heap/exception symbol the link pulled
    in, and what the library imports."""
    out = Path(out_dir) / cpu
    out.mkdir(parents=True, exist_ok=True)
    cxx = prefix + "g++"
    flags = ["-std=c++17", f"-mcpu={cpu}", *CROSS_FLAGS, *WARN]
    objects = []
    for src in sorted(PROTOCOL_SRC.glob("*.cc")):
        obj = out / (src.stem + ".o")
        _run([cxx, *flags, f"-I{PROTOCOL_SRC}", "-c", str(src), "-o", str(obj)])
        objects.append(obj)
    elf = out / "probe.elf"
    _run(
        [
            cxx,
            *flags,
            f"-I{PROTOCOL_SRC}",
            f"-I{PROBE_SRC}",
            str(PROBE_SRC / "link_probe.cpp"),
            *map(str, objects),
            "--specs=nano.specs",
            "--specs=nosys.specs",
            "-Wl,--gc-sections",
            "-o",
            str(elf),
        ]
    )
    lib = {"text": 0, "data": 0, "bss": 0}
    for obj in objects:
        for k, v in _sections(obj, prefix).items():
            lib[k] += v
    return {
        "cpu": cpu,
        "library": lib,
        "library_static_ram": lib["data"] + lib["bss"],
        "dispatcher_bytes": _symbol_size(elf, "g_dispatcher", prefix),
        "image": _sections(elf, prefix),
        "forbidden": forbidden_symbols(elf, prefix),
        "library_imports": _imports(objects, prefix),
    }
