"""A local TensorFlow Lite Micro source tree, compiled once and cached.

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

from harness.errors import ToolError

ENV_VAR = "HIL_TFLM_DIR"
HINT = f"set {ENV_VAR} to a tree made by TFLM's create_tflm_tree.py, see docs/firmware.md"

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
        return (self.root / "tensorflow/lite/micro/kernels/cmsis_nn").is_dir()

    def include_dirs(self) -> list[Path]:
        return [self.root] + [self.root / d for d in _THIRD_PARTY_INCLUDES if (self.root / d).is_dir()]

    def defines(self) -> list[str]:
        """Preprocessor flags code compiled against this tree needs."""
        return ["-DTF_LITE_STATIC_MEMORY"] + (["-DCMSIS_NN"] if self.has_cmsis_nn else [])

    def sources(self) -> list[Path]:
        """Every .cc/.c of the tree except the platform seams, sorted."""
        skip = {self.root / s for s in SEAM_SOURCES}
        found = [p for ext in ("*.cc", "*.c") for p in self.root.rglob(ext)]
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


def find_tree(path: str | os.PathLike | None = None) -> TflmTree:
    """The tree at `path`, else at $HIL_TFLM_DIR; ToolError when neither
    names a TFLM tree."""
    given = path if path is not None else os.environ.get(ENV_VAR)
    if not given:
        raise ToolError("no TensorFlow Lite Micro tree given", HINT)
    root = Path(given).expanduser().resolve()
    if not (root / "tensorflow/lite/micro/micro_interpreter.h").is_file():
        raise ToolError(f"{root} is not a TFLM tree (no tensorflow/lite/micro/micro_interpreter.h)", HINT)
    return TflmTree(root)


def cache_dir() -> Path:
    base = os.environ.get("HIL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tinyhil")
    return Path(base) / "tflm"


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
    if out_dir is None:
        key = hashlib.sha256(
            "\0".join(
                [
                    str(tree.root),
                    shutil.which(cxx) or cxx,
                    _tool_version(cxx),
                    shutil.which(cc) or cc,
                    *cxx_flags,
                    "|",
                    *c_flags,
                ]
            ).encode()
        ).hexdigest()[:16]
        out = cache_dir() / key
    else:
        out = Path(out_dir)
    lib = out / "libtflm.a"
    includes = [f"-I{d}" for d in tree.include_dirs()]
    with _locked(out):
        stamp = out / "tree.fingerprint"
        fingerprint = tree.fingerprint()
        if lib.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
            return lib
        sources = tree.sources()
        objects = []
        todo = []
        for src in sources:
            rel = src.relative_to(tree.root)
            obj = out / "obj" / rel.with_suffix(".o")
            objects.append(obj)
            if not obj.is_file() or obj.stat().st_mtime_ns < src.stat().st_mtime_ns:
                todo.append((src, obj))
        nice = ["nice", "-n", "10"] if shutil.which("nice") else []

        def compile_one(item):
            src, obj = item
            obj.parent.mkdir(parents=True, exist_ok=True)
            tool, fl = (cxx, cxx_flags) if src.suffix == ".cc" else (cc, c_flags)
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
                f"TFLM tree {tree.root} does not compile with {cxx} {' '.join(flags)}: {errors[0]}"
                + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                "check the tree and the compiler flags",
            )
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
        stamp.write_text(fingerprint)
    return lib
