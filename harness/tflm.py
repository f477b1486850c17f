"""A local TensorFlow Lite Micro source tree: what it is made of, and (for
host tests) compiled once and cached.

This module is the one place that knows a tree's layout: how to recognise
one (`check_tree`), which tree a board takes (`tree_for`), its include
folders, its defines, the sources to compile and the platform seams left
out. The hil-offline PlatformIO builder imports these facts from here.

Firmware builds that run here (the `native` host program, QEMU) cannot fetch
TFLM; they use a tree the user already has, made by TFLM's own
`create_tflm_tree.py` (`HIL_TFLM_DIR`). Compiling its ~200 sources takes
minutes on a small machine, so `build_static_lib` does it once per tree,
compiler and flags and keeps the static library under
`~/.cache/tinyhil/tflm/` (or `$HIL_CACHE_DIR/tflm/`); later calls only
recompile sources newer than their objects.

    tree = find_tree()                        # HIL_TFLM_DIR, or a path
    lib = build_static_lib(tree, "g++", ["-O2", "-DTF_LITE_STATIC_MEMORY"])
    includes = tree.include_dirs()

TFLM's own `debug_log.cc` and `micro_time.cc` are left out of the library:
the firmware implements those seams (`DebugLog`, `DebugVsnprintf`, sent as
protocol LOG frames; `GetCurrentTimeTicks` from the board's clock).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, ToolError
from harness.paths import cache_dir as _harness_cache

ENV_VAR = "HIL_TFLM_DIR"
M55_ENV_VAR = "HIL_TFLM_M55_DIR"  # a CMSIS-NN tree for the Cortex-M55 boards
M4_ENV_VAR = "HIL_TFLM_M4_DIR"  # a CMSIS-NN tree for the Cortex-M4F boards (Nano 33 BLE)
# The variable naming each core's own tree, tried before HIL_TFLM_DIR.
CORE_ENV_VARS = {"cortex-m55": M55_ENV_VAR, "cortex-m4": M4_ENV_VAR}
HINT = f"set {ENV_VAR} to a tree made by TFLM's create_tflm_tree.py, see docs/build.md"
# What makes a folder a TFLM tree, and a CMSIS-NN (Cortex-M only) one.
MARKER = "tensorflow/lite/micro/micro_interpreter.h"
CMSIS_NN_KERNELS = "tensorflow/lite/micro/kernels/cmsis_nn"
CMSIS_NN_SOURCES = "third_party/cmsis_nn/Source"

# Include folders a tree may hold, besides its root (create_tflm_tree.py output).
_THIRD_PARTY_INCLUDES = (
    "third_party/flatbuffers/include",
    "third_party/gemmlowp",
    "third_party/ruy",
    "third_party/kissfft",
    "third_party/cmsis_nn",
    "third_party/cmsis_nn/Include",
    "third_party/cmsis/CMSIS/Core/Include",
    "third_party/cmsis/CMSIS/DSP/Include",
)
# The platform seams the firmware implements itself: logging and time.
SEAM_SOURCES = (
    "tensorflow/lite/micro/debug_log.cc",
    "tensorflow/lite/micro/cortex_m_generic/debug_log.cc",
    "tensorflow/lite/micro/micro_time.cc",
    "tensorflow/lite/micro/cortex_m_generic/micro_time.cc",
)
# Flags every build of the tree gets, as TFLM's own Makefile uses them.
DEFAULT_FLAGS = ("-O2", "-DTF_LITE_STATIC_MEMORY")
CXX_ONLY_FLAGS = ("-std=c++17", "-fno-exceptions", "-fno-rtti", "-fno-threadsafe-statics")
C_ONLY_FLAGS = ("-std=c11",)


@dataclass(frozen=True)
class TflmTree:
    """A TFLM source tree (the output of create_tflm_tree.py)."""

    root: Path

    @property
    def has_cmsis_nn(self) -> bool:
        """True for a tree made with OPTIMIZED_KERNEL_DIR=cmsis_nn (Cortex-M only)."""
        return (self.root / CMSIS_NN_KERNELS).is_dir()

    def include_dirs(self) -> list[Path]:
        return [self.root] + [self.root / d for d in _THIRD_PARTY_INCLUDES if (self.root / d).is_dir()]

    def api_include_dirs(self) -> list[Path]:
        """What code calling TFLM needs: `include_dirs` without the tree's
        CMSIS folders, a partial copy that would shadow the CMSIS core a
        framework brings (the Arduino mbed core's device headers)."""
        return [d for d in self.include_dirs() if not d.is_relative_to(self.root / "third_party" / "cmsis")]

    def define_names(self) -> list[str]:
        """Preprocessor macros code compiled against this tree needs."""
        return ["TF_LITE_STATIC_MEMORY"] + (["CMSIS_NN"] if self.has_cmsis_nn else [])

    def defines(self) -> list[str]:
        """`define_names` as compiler flags."""
        return [f"-D{name}" for name in self.define_names()]

    def source_folders(self) -> list[str]:
        """The folders (relative to the root) whose sources make the library."""
        return ["tensorflow"] + ([CMSIS_NN_SOURCES] if self.has_cmsis_nn else [])

    def src_filter(self) -> list[str]:
        """The library's sources as a PlatformIO/SCons source filter."""
        return [f"+<{d}/>" for d in self.source_folders()] + [f"-<{s}>" for s in SEAM_SOURCES]

    def sources(self) -> list[Path]:
        """Every .cc/.c of `source_folders` except the platform seams,
        examples and tests, sorted (what `src_filter` selects)."""
        skip = {self.root / s for s in SEAM_SOURCES}
        found = [p for d in self.source_folders() for ext in ("*.cc", "*.c") for p in (self.root / d).rglob(ext)]
        return sorted(
            p for p in found if p not in skip and "/examples/" not in p.as_posix() and not p.name.endswith("_test.cc")
        )

    def fingerprint(self) -> str:
        """Changes whenever a source or header of the tree changes."""
        h = hashlib.sha256(str(self.root).encode())
        for p in sorted(self.root.rglob("*")):
            if p.suffix in (".cc", ".c", ".h", ".hpp", ".inc") and p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(self.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def check_tree(path: str | os.PathLike, origin: str = ENV_VAR, host: bool = False) -> TflmTree:
    """The tree at `path` (named by `origin` in messages); ConfigError when
    it is not a TFLM tree, or when a `host` build is given a CMSIS-NN one."""
    root = Path(path).expanduser().resolve()
    if not (root / MARKER).is_file():
        raise ConfigError(
            f"{origin}={path} is not a TensorFlow Lite Micro tree (no {MARKER})",
            "point it at the output of TFLM's create_tflm_tree.py (docs/build.md)",
        )
    tree = TflmTree(root)
    if host and tree.has_cmsis_nn:
        raise ConfigError(
            f"{origin}={path} holds CMSIS-NN (Cortex-M) kernels; the host build needs the reference tree",
            "give the reference tree (create_tflm_tree.py without OPTIMIZED_KERNEL_DIR)",
        )
    return tree


def tree_for(core: str, given: str | os.PathLike | None = None, what: str = "the build") -> TflmTree:
    """The tree for firmware on `core`: `given` (--tflm), else the core's
    own CMSIS-NN tree (HIL_TFLM_M55_DIR for Cortex-M55, HIL_TFLM_M4_DIR for
    Cortex-M4), else HIL_TFLM_DIR. A host build (`core` not a Cortex-M)
    never takes a CMSIS-NN tree."""
    host = not core.startswith("cortex-m")
    candidates = [("--tflm", given)]
    if core in CORE_ENV_VARS:
        candidates.append((CORE_ENV_VARS[core], os.environ.get(CORE_ENV_VARS[core])))
    candidates.append((ENV_VAR, os.environ.get(ENV_VAR)))
    for origin, value in candidates:
        if value:
            return check_tree(value, origin, host=host)
    raise ConfigError(
        f"no TensorFlow Lite Micro tree for {what}",
        f"pass --tflm DIR or set {ENV_VAR}=/path/to/tflm_tree (see docs/build.md)",
    )


def find_tree(path: str | os.PathLike | None = None) -> TflmTree:
    """The tree at `path`, else at $HIL_TFLM_DIR; ToolError when neither
    names a TFLM tree."""
    given = path if path is not None else os.environ.get(ENV_VAR)
    if not given:
        raise ToolError("no TensorFlow Lite Micro tree given", HINT)
    try:
        return check_tree(given, "path" if path is not None else ENV_VAR)
    except ConfigError as exc:
        raise ToolError(exc.message, HINT) from None


def cache_dir() -> Path:
    """Where `build_static_lib` keeps its libraries: <harness cache>/tflm."""
    return _harness_cache() / "tflm"


def _c_compiler(cxx: str) -> str:
    """gcc for g++, clang for clang++, arm-none-eabi-gcc for arm-none-eabi-g++."""
    for plus, plain in (("clang++", "clang"), ("g++", "gcc"), ("c++", "cc")):
        if cxx.endswith(plus):
            return cxx[: -len(plus)] + plain
    return cxx


def _tool_version(tool: str) -> str:
    try:
        return subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return ""


@contextlib.contextmanager
def _locked(folder: Path):
    """One builder per cache folder at a time (parallel test runs)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_static_lib(
    tree: TflmTree,
    cxx: str = "g++",
    cflags: Sequence[str] = DEFAULT_FLAGS,
    out_dir: str | os.PathLike | None = None,
    jobs: int = 2,
    cc: str | None = None,
    ar: str | None = None,
) -> Path:
    """Compile `tree` into a static library and return its path.

    `cflags` go to every source (optimisation, -mcpu..., defines); C++ sources
    also get -std=c++17 -fno-exceptions -fno-rtti -fno-threadsafe-statics
    unless `cflags` names a -std. `out_dir` defaults to a cache folder keyed
    by the tree, the compilers and the flags; objects newer than their source
    are reused. Raises ToolError when a compiler is missing or a source does
    not compile.
    """
    cc = cc or _c_compiler(cxx)
    ar = ar or (cxx[: -len("g++")] + "ar" if cxx.endswith("g++") else "ar")
    for tool in (cxx, cc, ar):
        if not shutil.which(tool):
            raise ToolError(f"{tool} is not on PATH", "install the compiler, e.g. apt-get install g++")
    flags = list(cflags)
    has_std = any(f.startswith("-std=") for f in flags)
    cxx_flags = flags + ([] if has_std else list(CXX_ONLY_FLAGS[:1])) + list(CXX_ONLY_FLAGS[1:])
    c_flags = [f for f in flags if not f.startswith("-std=")] + list(C_ONLY_FLAGS)
    out = Path(out_dir) if out_dir is not None else cache_dir() / _cache_key(tree, cxx, cc, cxx_flags, c_flags)
    lib = out / "libtflm.a"
    with _locked(out):
        stamp = out / "tree.fingerprint"
        fingerprint = tree.fingerprint()
        if lib.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
            return lib
        objects = _compile_objects(tree, out, (cxx, cxx_flags), (cc, c_flags), jobs)
        _archive(ar, objects, out, lib)
        stamp.write_text(fingerprint)
    return lib


def _cache_key(tree: TflmTree, cxx: str, cc: str, cxx_flags: list[str], c_flags: list[str]) -> str:
    parts = [str(tree.root), shutil.which(cxx) or cxx, _tool_version(cxx), shutil.which(cc) or cc]
    return hashlib.sha256("\0".join([*parts, *cxx_flags, "|", *c_flags]).encode()).hexdigest()[:16]


def _compile_objects(tree: TflmTree, out: Path, cxx: tuple, cc: tuple, jobs: int) -> list[Path]:
    """Objects of every source, compiling those older than their source.
    `cxx`, `cc`: (compiler, flags)."""
    includes = [f"-I{d}" for d in tree.include_dirs()]
    objects, todo = [], []
    for src in tree.sources():
        obj = out / "obj" / src.relative_to(tree.root).with_suffix(".o")
        objects.append(obj)
        if not obj.is_file() or obj.stat().st_mtime_ns < src.stat().st_mtime_ns:
            todo.append((src, obj))
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []

    def compile_one(item):
        src, obj = item
        obj.parent.mkdir(parents=True, exist_ok=True)
        tool, fl = cxx if src.suffix == ".cc" else cc
        tmp = obj.with_suffix(".o.tmp")
        proc = subprocess.run(
            [*nice, tool, *fl, *includes, "-w", "-c", str(src), "-o", str(tmp)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            first = next((line for line in lines if "error" in line), lines[-1] if lines else "?")
            return f"{src.relative_to(tree.root)}: {first.strip()}"
        os.replace(tmp, obj)
        return None

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        errors = [e for e in pool.map(compile_one, todo) if e]
    if errors:
        raise ToolError(
            f"TFLM tree {tree.root} does not compile with {cxx[0]} {' '.join(cxx[1])}: {errors[0]}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
            "check the tree and the compiler flags",
        )
    return objects


def _archive(ar: str, objects: list[Path], out: Path, lib: Path) -> None:
    fd, tmp_lib = tempfile.mkstemp(dir=out, suffix=".a")
    os.close(fd)
    os.unlink(tmp_lib)
    # Through a response file: the object list is longer than some shells allow.
    rsp = out / "objects.rsp"
    rsp.write_text("\n".join(str(o) for o in objects) + "\n")
    proc = subprocess.run([ar, "rcs", tmp_lib, f"@{rsp}"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"{ar} failed: {proc.stderr.strip()[:300]}", "check the toolchain")
    os.replace(tmp_lib, lib)
