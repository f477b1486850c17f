"""Stage 3, build: codegen + PlatformIO, then what the ELF says.

`build()` runs in phases: resolve the board and paths, prepare the build's
environment (toolchain, TFLM tree, PlatformIO offline), generate the model's
sources, run `pio run -e <env>` on the firmware project, then read the ELF
and check it: flash and RAM used against the board's limits, the model
array's section (it must be read-only, never copied to RAM), the arena
size, and no heap (the firmware must not link an allocator).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import codegen, pio, procs, stm32cube, tflm
from harness.boards import CAPTURE_MAX, Board, FirmwareOptions, load_board
from harness.errors import BuildError, ConfigError, ToolError
from harness.fileio import sha256_file, write_json_atomic
from harness.localize import model_ops
from harness.model import read_model_bytes
from harness.paths import firmware_dir, workspace_dir

OFFLINE_PLATFORM = "hil-offline"
STAMP = ".hil_model.stamp"  # = firmware/scripts/hil_model.py STAMP

# Lines of PlatformIO output that mean "the registry could not be reached".
_REGISTRY_PATTERNS = re.compile(
    r"(HTTPClientError|Could not resolve host|Failed to establish a new connection|"
    r"Max retries exceeded|Name or service not known|Temporary failure in name resolution|"
    r"api\.registry\.platformio\.org|dl\.registry\.platformio\.org|Network is unreachable)",
    re.I,
)
# What a heap-free firmware must not link: C and newlib allocators, sbrk,
# C++ operator new/delete (every overload mangles to these prefixes).
ALLOCATOR = re.compile(
    r"^(malloc|free|calloc|realloc|memalign|aligned_alloc|posix_memalign|valloc|pvalloc|"
    r"_malloc_r|_free_r|_calloc_r|_realloc_r|_memalign_r|_sbrk|_sbrk_r|_Znw\w*|_Zna\w*|_Zdl\w*|_Zda\w*)$"
)


@dataclass
class SectionUse:
    name: str
    address: int
    size: int
    kind: str  # "flash", "ram" or "flash+ram" (initialised data)


@dataclass
class BuildResult:
    board: str
    env: str
    elf: Path
    model: Path
    model_sha256: str
    model_symbol: str
    model_size: int
    model_section: str | None
    model_address: int | None
    model_in_readonly_section: bool
    arena_bytes: int
    arena_symbol_bytes: int | None
    flash_used: int
    flash_limit: int
    ram_used: int
    ram_limit: int
    sections: list[SectionUse] = field(default_factory=list)
    seconds: float = 0.0
    command: list[str] = field(default_factory=list)
    env_vars: dict = field(default_factory=dict)
    log: Path | None = None
    warnings: list[str] = field(default_factory=list)
    allocator_symbols: list[str] = field(default_factory=list)  # empty: "heap: none"
    trace_bytes: int | None = None  # hil_runner's per-operator trace records (None: not in the ELF)
    capture_bytes: int | None = None  # its HIL_CAPTURE_BYTES buffer (None: capture off)
    perturb_op: int | None = None  # a test build whose operator K computes a wrong output (FirmwareOptions)
    perturb_lsb: int | None = None
    model_placement: str = "image"  # "image" or "external flash" (STM32N6: XSPI NOR)
    external_flash_used: int = 0
    external_flash_limit: int = 0

    @property
    def heap(self) -> str:
        return "none" if not self.allocator_symbols else ", ".join(self.allocator_symbols)

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("elf", "model", "log"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d


# --------------------------------------------------------------------------- checks


def is_offline_env(board: Board) -> bool:
    return board.get("platform") == OFFLINE_PLATFORM


def is_cross(board: Board) -> bool:
    return str(board.core).startswith("cortex-m")


def find_tflm_tree(board: Board, tflm_dir: str | os.PathLike | None = None) -> Path:
    """The TFLM tree for a board (harness.tflm.tree_for): `--tflm`, else
    `HIL_TFLM_M55_DIR` for Cortex-M55 boards, else `HIL_TFLM_DIR`."""
    return tflm.tree_for(board.core, tflm_dir, what=f"the offline build of {board.id}").root


def board_core_has_heap(board_id: str) -> bool:
    """True for an Arduino core (mbed OS): its RTOS and USB stack allocate,
    so its ELF links malloc whatever the firmware does."""
    return load_board(board_id).get("framework") == "arduino"


def check_toolchain(board: Board) -> None:
    tools = ["arm-none-eabi-g++", "arm-none-eabi-size"] if is_cross(board) else ["g++"]
    for tool in tools:
        if not shutil.which(tool):
            pkg = "gcc-arm-none-eabi libnewlib-arm-none-eabi" if is_cross(board) else "g++"
            raise ToolError(
                f"{tool} is not installed (needed to build {board.id})",
                f"install it, e.g. `sudo apt-get install {pkg}`",
            )


@contextlib.contextmanager
def _env_lock(env: str):
    folder = workspace_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{env}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def model_stamp(model: Path, board_id: str, config: Path | None) -> dict:
    """What firmware/scripts/hil_model.py compares to decide on codegen."""
    return {
        "model_sha256": sha256_file(model),
        "config_sha256": sha256_file(config) if config else None,
        "board": board_id,
    }


# --------------------------------------------------------------------------- ELF


def _elftools():
    try:
        from elftools.elf.constants import SH_FLAGS
        from elftools.elf.elffile import ELFFile
    except ImportError:
        raise ToolError("pyelftools is not installed", "pip install pyelftools") from None
    return ELFFile, SH_FLAGS


def _alloc_sections(f, sh_flags) -> tuple[list[SectionUse], dict]:
    """The sections that occupy memory, and those by index (for symbols)."""
    sections: list[SectionUse] = []
    by_index = {}
    for i, sec in enumerate(f.iter_sections()):
        flags = sec["sh_flags"]
        if not flags & sh_flags.SHF_ALLOC or sec["sh_size"] == 0:
            continue
        by_index[i] = sec
        writable = bool(flags & sh_flags.SHF_WRITE)
        nobits = sec["sh_type"] == "SHT_NOBITS"
        kind = "ram" if nobits else ("flash+ram" if writable else "flash")
        sections.append(SectionUse(sec.name, sec["sh_addr"], sec["sh_size"], kind))
    return sections, by_index


# hil_runner's trace RAM: g_trace and g_capture in its anonymous namespace
# (mangled ..._GLOBAL__N_17g_traceE), or plain C names.
TRACE_SYMBOLS = {
    "trace_bytes": re.compile(r"(?:^|\d)g_trace(?:E|$)"),
    "capture_bytes": re.compile(r"(?:^|\d)g_capture(?:E|$)"),
}


def _model_and_arena(symtab, by_index, sh_flags, model_symbol: str | None, arena_hint: str) -> dict:
    info = {"model_section": None, "model_address": None, "model_size": None, "model_readonly": False}
    best_arena = None
    for sym in symtab.iter_symbols():
        if sym["st_info"]["type"] != "STT_OBJECT":
            continue
        if model_symbol and sym.name == model_symbol:
            idx = sym["st_shndx"]
            sec = by_index.get(idx) if isinstance(idx, int) else None
            if sec is not None:
                info["model_section"] = sec.name
                info["model_readonly"] = not (sec["sh_flags"] & sh_flags.SHF_WRITE) and sec["sh_type"] != "SHT_NOBITS"
            info["model_address"] = sym["st_value"]
            info["model_size"] = sym["st_size"]
        elif arena_hint in sym.name.lower() and sym["st_size"] >= 16:
            best_arena = max(best_arena or 0, sym["st_size"])
        for key, pat in TRACE_SYMBOLS.items():
            if pat.search(sym.name):
                info[key] = sym["st_size"]
    info["arena_symbol_bytes"] = best_arena
    return info


def _allocators(f) -> list[str]:
    """Allocator symbols the ELF defines or imports (static and dynamic
    symbol tables; a host program's imports carry an @version)."""
    found = set()
    for name in (".symtab", ".dynsym"):
        table = f.get_section_by_name(name)
        if table is None:
            continue
        for sym in table.iter_symbols():
            if sym["st_info"]["type"] in ("STT_FILE", "STT_SECTION"):
                continue
            base = sym.name.split("@", 1)[0]
            if ALLOCATOR.match(base):
                found.add(base)
    return sorted(found)


def allocator_symbols(elf: Path) -> list[str]:
    """Heap allocator symbols linked into `elf` (empty: the firmware has no heap)."""
    elf_file, _ = _elftools()
    with open(elf, "rb") as fh:
        return _allocators(elf_file(fh))


def read_elf(elf: Path, model_symbol: str | None = None, arena_hint: str = "arena") -> dict:
    """Sections, memory use, the model's placement and any allocator, from the ELF."""
    elf_file, sh_flags = _elftools()
    with open(elf, "rb") as fh:
        f = elf_file(fh)
        sections, by_index = _alloc_sections(f, sh_flags)
        symtab = f.get_section_by_name(".symtab")
        if symtab is not None:
            info = _model_and_arena(symtab, by_index, sh_flags, model_symbol, arena_hint)
        else:
            info = _model_and_arena_absent()
        info["allocators"] = _allocators(f)
    info["sections"] = sections
    info["flash_used"] = sum(s.size for s in sections if s.kind in ("flash", "flash+ram"))
    info["ram_used"] = sum(s.size for s in sections if s.kind in ("ram", "flash+ram"))
    return info


def _model_and_arena_absent() -> dict:
    # A stripped ELF: nothing is known about the model's placement.
    return {
        "model_section": None,
        "model_address": None,
        "model_size": None,
        "model_readonly": False,
        "arena_symbol_bytes": None,
    }


# --------------------------------------------------------------------------- build


def _registry_error(board: Board) -> BuildError:
    return BuildError(
        f"PlatformIO's registry is unreachable: env '{board.pio_env}' downloads its platform, toolchain and libraries",
        "build it on a networked machine, or use an offline board (--board qemu_m55, --board native)",
    )


def _classify_failure(board: Board, output: str) -> BuildError:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if _REGISTRY_PATTERNS.search(output) or (
        not is_offline_env(board) and "Installing" in output and "Error" in output
    ):
        return _registry_error(board)
    errors = [
        ln for ln in lines if ln.startswith(("Error:", "*** ")) or ": error:" in ln or "undefined reference" in ln
    ]
    first = errors[0] if errors else (lines[-1] if lines else "no output")
    if first.startswith("Error: "):
        first = first[len("Error: ") :]
    return BuildError(
        f"the {board.id} firmware did not build: {first[:300]}",
        "see the full log (path with -v) or run the pio command shown by -v",
    )


@dataclass(frozen=True)
class _Job:
    """What one build works on, resolved from the caller's arguments."""

    board: Board
    env: str
    model: Path
    out_dir: Path
    project: Path


def _resolve(board_id: str, model: str | os.PathLike, out: str | os.PathLike | None) -> _Job:
    board = load_board(board_id)
    if not board.pio_env:
        raise ConfigError(
            f"board '{board_id}' has no firmware to build (no pio_env)",
            "it is served by `hil device`; pick a board with firmware: hil boards",
        )
    model = Path(model).expanduser().resolve()
    if not model.is_file():
        raise ConfigError(f"model {model} does not exist", "check the path to the .tflite")
    project = firmware_dir()
    if not (project / "platformio.ini").is_file():
        raise ConfigError(f"no PlatformIO project at {project}", "reinstall tinyhil")
    out_dir = (Path(out) if out else Path("build") / board_id).resolve()
    return _Job(board, board.pio_env, model, out_dir, project)


def _prepare_environment(board: Board, tflm_dir: str | os.PathLike | None) -> dict[str, str]:
    """Tools and the TFLM tree for an offline env, or the registry for a
    networked one; then PlatformIO made usable offline. The variables the
    build needs."""
    env_vars: dict[str, str] = {}
    if is_offline_env(board):
        check_toolchain(board)
        env_vars[tflm.ENV_VAR] = str(find_tflm_tree(board, tflm_dir))
        bsp = stm32cube.BOARD_BSP.get(board.id)
        if bsp:  # checked before a long compile, not by the builder after it
            env_vars[stm32cube.ENV_VAR] = str(stm32cube.check_tree(os.environ.get(stm32cube.ENV_VAR), bsp).root)
    else:
        # A registry platform's env (the Nano) builds the same local tree
        # (firmware/scripts/hil_tflm_lib.py), read from the core's variable.
        if not pio.platform_installed(board.get("platform", "")) and not pio.registry_reachable():
            raise _registry_error(board)
        tree = find_tflm_tree(board, tflm_dir)
        env_vars[tflm.CORE_ENV_VARS.get(board.core, tflm.ENV_VAR)] = str(tree)
    pio.ensure_offline_platformio()
    return env_vars


def _generate_sources(job: _Job):
    """Codegen into a stable folder per env (a new folder would change the
    compiler command lines and rebuild), with the stamp the pre-build
    script compares; copied to OUT/model."""
    # codegen pulls in the TFLite converter stack: only when a build runs.

    gen_dir = workspace_dir() / "hil_model" / job.env
    cg = codegen.generate(job.model, gen_dir, board=job.board.id)
    (gen_dir / STAMP).write_text(json.dumps(model_stamp(job.model, job.board.id, cg.config_path)))
    (job.out_dir / "model").mkdir(parents=True, exist_ok=True)
    for name in codegen.FILES:
        shutil.copy2(gen_dir / name, job.out_dir / "model" / name)
    return cg, gen_dir


def _compile(job: _Job, env_vars: dict, clean: bool, jobs: int | None, on_line, timeout: float | None):
    """`pio run` under the env's lock; the ELF (and .bin) copied to OUT.
    Returns (elf, pio args, log path)."""
    args = ["run", "-d", str(job.project), "-e", job.env] + (["-j", str(jobs)] if jobs else [])
    log_path = job.out_dir / "build.log"
    with _env_lock(job.env):
        if clean:
            pio.run_pio(["run", "-d", str(job.project), "-e", job.env, "-t", "clean"], env_extra=env_vars)
        proc = _run_streaming(args, env_vars, on_line, timeout)
        log_path.write_text(proc["output"])
        if proc["returncode"] != 0:
            raise _classify_failure(job.board, proc["output"])
        build_dir = workspace_dir() / "build" / job.env
        # hil-offline names it program(.elf); registry platforms (nordicnrf52) firmware.elf
        names = ("program.elf", "program", "firmware.elf")
        elf_src = next((p for p in (build_dir / n for n in names) if p.is_file()), None)
        if elf_src is None:
            raise BuildError(
                f"PlatformIO reported success but left no program in {build_dir}", "run the build again with --clean"
            )
        elf = job.out_dir / ("firmware.elf" if elf_src.suffix == ".elf" else "firmware")
        shutil.copy2(elf_src, elf)
        for src, name in (("program.bin", "firmware.bin"), ("firmware.map", "firmware.map")):
            if (build_dir / src).is_file():
                shutil.copy2(build_dir / src, job.out_dir / name)
        # The external-flash model of this build, and never a previous one's.
        ext_src, ext = build_dir / "program_extflash.bin", job.out_dir / EXTERNAL_MODEL_FILE
        if env_vars.get("HIL_MODEL_PLACEMENT") == "external" and ext_src.is_file():
            shutil.copy2(ext_src, ext)
        elif ext.is_file():
            ext.unlink()
    return elf, args, log_path


EXTERNAL_MODEL_SECTION = ".hil_model_ext"  # = stm32n6_extflash.ld
EXTERNAL_MODEL_FILE = "firmware-extflash.bin"  # = harness/drivers/stm_programmer.py


def model_placement(board: Board, model: Path) -> str:
    """Where the model goes: a board with external flash for models
    (`model_flash_base`) takes one larger than `image_model_max_bytes`
    there, leaving the image room for code; every other model stays in
    the image."""
    limit = board.get("image_model_max_bytes")
    if board.get("model_flash_base") and limit is not None and model.stat().st_size > int(limit):
        return "external flash"
    return "image"


def _split_external(result: BuildResult, board: Board) -> None:
    """The external-flash model section counts against the board's external
    flash, not against the image."""
    ext = [s for s in result.sections if s.name == EXTERNAL_MODEL_SECTION]
    if not ext:
        return
    result.model_placement = "external flash"
    result.external_flash_used = sum(s.size for s in ext)
    result.external_flash_limit = int(board.get("external_flash_bytes") or 0) - (
        int(str(board.get("model_flash_base")), 0) - int(str(board.get("flash_base", "0x70000000")), 0)
    )
    result.flash_used -= result.external_flash_used


def _check_image(result: BuildResult, info: dict) -> None:
    """The ELF must hold the model read-only, fit the board and not allocate."""
    board, symbol = result.board, result.model_symbol
    if info["model_section"] is None:
        raise BuildError(
            f"the model array {symbol} is not in the ELF {result.elf}",
            "the firmware must reference kHilModelData (see docs/codegen.md)",
        )
    if not info["model_readonly"]:
        raise BuildError(
            f"the model array {symbol} sits in the writable section {info['model_section']}: it would be copied to RAM",
            "keep the generated `const` array; check the linker script",
        )
    if result.external_flash_used > result.external_flash_limit:
        raise BuildError(
            f"the model needs {result.external_flash_used} bytes of external flash; "
            f"{board} has {result.external_flash_limit} from its model_flash_base",
            "use a smaller model",
        )
    if result.flash_used > result.flash_limit:
        raise BuildError(
            f"the firmware needs {result.flash_used} bytes of flash; {board} has {result.flash_limit}",
            "use a smaller model or a board with more flash",
        )
    if result.ram_used > result.ram_limit:
        raise BuildError(
            f"the firmware needs {result.ram_used} bytes of RAM; {board} has {result.ram_limit}",
            "use a model with a smaller arena or a bigger board",
        )
    if result.allocator_symbols and board_core_has_heap(result.board):
        result.warnings.append(
            f"the Arduino core links its own heap ({', '.join(result.allocator_symbols[:4])}); the firmware does not use it"
        )
    elif result.allocator_symbols:
        raise BuildError(
            f"the {board} firmware links a heap allocator ({', '.join(result.allocator_symbols[:6])}); "
            "it must not allocate",
            "find the caller with -Wl,--trace-symbol=NAME or the linker map (firmware.map in the build folder)",
        )


def _check_options(options: FirmwareOptions) -> None:
    cap = options.capture_bytes
    if cap is not None and not 0 <= cap <= CAPTURE_MAX:
        raise ConfigError(f"capture buffer {cap} bytes is outside 0..{CAPTURE_MAX}", "use e.g. --capture-bytes 4096")
    if options.perturb_op is not None and options.perturb_op < 0:
        raise ConfigError(
            f"operator {options.perturb_op} is negative", "operators count from 0 (hil codegen lists them)"
        )
    if options.perturb_op is not None and not (options.perturb_lsb and -127 <= options.perturb_lsb <= 127):
        raise ConfigError(f"perturbation {options.perturb_lsb} LSB is outside ±1..127", "use e.g. --perturb-op 3:+1")


def build(
    board_id: str,
    model: str | os.PathLike,
    *,
    tflm_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    clean: bool = False,
    jobs: int | None = None,
    on_line=None,
    timeout: float | None = None,
    options: FirmwareOptions | None = None,
) -> BuildResult:
    """Build the firmware for `board_id` holding `model`; see the module docstring.

    `on_line(str)` receives PlatformIO's output lines as they come (the CLI
    shows them with -v). `options`: the capture buffer's size (default the
    board's `capture_bytes`) and the test-only operator fault.
    """
    options = options or FirmwareOptions()
    _check_options(options)
    job = _resolve(board_id, model, out)
    if options.perturb_op is not None:
        n_ops = len(model_ops(read_model_bytes(job.model)))
        if options.perturb_op >= n_ops:
            raise ConfigError(
                f"operator {options.perturb_op} is not one of the model's {n_ops} (0..{n_ops - 1})",
                "hil codegen lists the operators",
            )
    env_vars = _prepare_environment(job.board, tflm_dir)
    env_vars.update(options.to_env())
    cg, gen_dir = _generate_sources(job)
    env_vars.update(
        {"HIL_MODEL": str(job.model), "HIL_MODEL_DIR": str(gen_dir), "PLATFORMIO_WORKSPACE_DIR": str(workspace_dir())}
    )
    placement = model_placement(job.board, job.model)
    if placement == "external flash":
        env_vars["HIL_MODEL_PLACEMENT"] = "external"
    t0 = time.monotonic()
    elf, args, log_path = _compile(job, env_vars, clean, jobs, on_line, timeout)
    seconds = time.monotonic() - t0
    info = read_elf(elf, cg.data_symbol)
    result = BuildResult(
        board=board_id,
        env=job.env,
        elf=elf,
        model=job.model,
        model_sha256=cg.model.sha256,
        model_symbol=cg.data_symbol,
        model_size=info["model_size"] or 0,
        model_section=info["model_section"],
        model_address=info["model_address"],
        model_in_readonly_section=info["model_readonly"],
        arena_bytes=cg.arena.recommended,
        arena_symbol_bytes=info["arena_symbol_bytes"],
        trace_bytes=info.get("trace_bytes"),
        capture_bytes=info.get("capture_bytes"),
        flash_used=info["flash_used"],
        flash_limit=job.board.flash_bytes,
        ram_used=info["ram_used"],
        ram_limit=job.board.ram_bytes,
        sections=info["sections"],
        seconds=seconds,
        command=pio.pio_command() + args,
        env_vars=env_vars,
        log=log_path,
        allocator_symbols=info["allocators"],
        perturb_op=options.perturb_op,
        perturb_lsb=options.perturb_lsb if options.perturb_op is not None else None,
    )
    _split_external(result, job.board)
    if result.model_placement != placement:
        raise BuildError(
            f"the model went to the {result.model_placement}, not the {placement}: the linker script did not place it",
            "check the env's custom_hil_ldscript_external (firmware/platformio.ini)",
        )
    _check_image(result, info)
    write_json_atomic(job.out_dir / "build_report.json", result.to_json())
    return result


def _run_streaming(args: list[str], env_extra: dict, on_line, timeout: float | None) -> dict:
    import subprocess

    env = pio.pio_env()
    env.update(env_extra)
    cmd = pio.pio_command() + args
    lines: list[str] = []
    try:
        # PlatformIO and its compilers die with tinyhil (harness/procs.py)
        proc = procs.popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as exc:
        raise ToolError(f"cannot run {cmd[0]}: {exc.strerror}", "pip install platformio") from exc
    deadline = time.monotonic() + timeout if timeout else None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line)
            if on_line:
                on_line(line.rstrip("\n"))
            if deadline and time.monotonic() > deadline:
                raise BuildError(f"the build took longer than {timeout:.0f} s", "run it again with -v")
    except BaseException:
        procs.stop(proc, grace=1.0)
        raise
    rc = proc.wait()
    return {"returncode": rc, "output": "".join(lines)}
