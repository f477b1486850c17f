"""Stage 3, build: codegen + PlatformIO, then what the ELF says.

`build()` generates the model's sources, runs `pio run -e <env>` on the
firmware project with the harness's offline PlatformIO set-up
(`harness.pio`), copies the ELF to the output folder and reads it: flash
and RAM used against the board's limits, the model array's section (it must
be read-only, never copied to RAM), the arena size.
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

from harness import codegen, pio, procs
from harness.boards import Board, load_board
from harness.errors import BuildError, ConfigError, ToolError
from harness.fileio import sha256_file, write_json_atomic
from harness.paths import firmware_dir

OFFLINE_PLATFORM = "hil-offline"
STAMP = ".hil_model.stamp"  # = firmware/scripts/hil_model.py STAMP

# Lines of PlatformIO output that mean "the registry could not be reached".
_REGISTRY_PATTERNS = re.compile(
    r"(HTTPClientError|Could not resolve host|Failed to establish a new connection|"
    r"Max retries exceeded|Name or service not known|Temporary failure in name resolution|"
    r"api\.registry\.platformio\.org|dl\.registry\.platformio\.org|Network is unreachable)",
    re.I,
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
    """The TFLM tree for a board: `--tflm`, else `HIL_TFLM_M55_DIR` for
    Cortex-M55 boards (a CMSIS-NN tree), else `HIL_TFLM_DIR`."""
    candidates = [("--tflm", tflm_dir)]
    if board.core == "cortex-m55":
        candidates.append(("HIL_TFLM_M55_DIR", os.environ.get("HIL_TFLM_M55_DIR")))
    candidates.append(("HIL_TFLM_DIR", os.environ.get("HIL_TFLM_DIR")))
    for origin, value in candidates:
        if not value:
            continue
        path = Path(value).expanduser().resolve()
        if not (path / "tensorflow" / "lite" / "micro" / "micro_interpreter.h").is_file():
            raise ConfigError(
                f"{origin}={value} is not a TensorFlow Lite Micro tree",
                "point it at the output of TFLM's create_tflm_tree.py (docs/build.md)",
            )
        cmsis = (path / "tensorflow" / "lite" / "micro" / "kernels" / "cmsis_nn").is_dir()
        if cmsis and not is_cross(board):
            if origin == "HIL_TFLM_M55_DIR":
                continue
            raise ConfigError(
                f"{origin}={value} holds CMSIS-NN (Cortex-M) kernels; board {board.id} runs on the host",
                "give the reference tree (create_tflm_tree.py without OPTIMIZED_KERNEL_DIR)",
            )
        return path
    raise ConfigError(
        f"no TensorFlow Lite Micro tree for the offline build of {board.id}",
        "pass --tflm DIR or set HIL_TFLM_DIR=/path/to/tflm_tree (see docs/build.md)",
    )


def check_toolchain(board: Board) -> None:
    tools = ["arm-none-eabi-g++", "arm-none-eabi-size"] if is_cross(board) else ["g++"]
    for tool in tools:
        if not shutil.which(tool):
            pkg = "gcc-arm-none-eabi libnewlib-arm-none-eabi" if is_cross(board) else "g++"
            raise ToolError(
                f"{tool} is not installed (needed to build {board.id})",
                f"install it, e.g. `sudo apt-get install {pkg}`",
            )


def workspace_dir() -> Path:
    """PlatformIO's working folder for the harness's builds: one per
    firmware project, shared by every model (TFLM is compiled once)."""
    return pio.cache_dir() / "workspace"


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


def read_elf(elf: Path, model_symbol: str | None = None, arena_hint: str = "arena") -> dict:
    """Sections, memory use and the model's placement, from the ELF."""
    try:
        from elftools.elf.constants import SH_FLAGS
        from elftools.elf.elffile import ELFFile
    except ImportError:
        raise ToolError("pyelftools is not installed", "pip install pyelftools") from None
    sections: list[SectionUse] = []
    info = {
        "model_section": None,
        "model_address": None,
        "model_size": None,
        "model_readonly": False,
        "arena_symbol_bytes": None,
    }
    with open(elf, "rb") as fh:
        f = ELFFile(fh)
        by_index = {}
        for i, sec in enumerate(f.iter_sections()):
            flags = sec["sh_flags"]
            if not flags & SH_FLAGS.SHF_ALLOC or sec["sh_size"] == 0:
                continue
            by_index[i] = sec
            name = sec.name
            if name in (".heap",):  # the free gap between bss and stack
                continue
            writable = bool(flags & SH_FLAGS.SHF_WRITE)
            nobits = sec["sh_type"] == "SHT_NOBITS"
            kind = "ram" if nobits else ("flash+ram" if writable else "flash")
            sections.append(SectionUse(name, sec["sh_addr"], sec["sh_size"], kind))
        symtab = f.get_section_by_name(".symtab")
        if symtab is not None:
            best_arena = None
            for sym in symtab.iter_symbols():
                if sym["st_info"]["type"] != "STT_OBJECT":
                    continue
                if model_symbol and sym.name == model_symbol:
                    idx = sym["st_shndx"]
                    sec = by_index.get(idx) if isinstance(idx, int) else None
                    if sec is not None:
                        info["model_section"] = sec.name
                        info["model_readonly"] = (
                            not (sec["sh_flags"] & SH_FLAGS.SHF_WRITE) and sec["sh_type"] != "SHT_NOBITS"
                        )
                    info["model_address"] = sym["st_value"]
                    info["model_size"] = sym["st_size"]
                elif arena_hint in sym.name.lower() and sym["st_size"] >= 16:
                    if best_arena is None or sym["st_size"] > best_arena:
                        best_arena = sym["st_size"]
            info["arena_symbol_bytes"] = best_arena
    info["sections"] = sections
    info["flash_used"] = sum(s.size for s in sections if s.kind in ("flash", "flash+ram"))
    info["ram_used"] = sum(s.size for s in sections if s.kind in ("ram", "flash+ram"))
    return info


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
    errors = [ln for ln in lines if ln.startswith("Error:") or ": error:" in ln or "undefined reference" in ln]
    first = errors[0] if errors else (lines[-1] if lines else "no output")
    if first.startswith("Error: "):
        first = first[len("Error: ") :]
    return BuildError(
        f"the {board.id} firmware did not build: {first[:300]}",
        "see the full log (path with -v) or run the pio command shown by -v",
    )


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
) -> BuildResult:
    """Build the firmware for `board_id` holding `model`; see the module docstring.

    `on_line(str)` receives PlatformIO's output lines as they come (the CLI
    shows them with -v).
    """

    board = load_board(board_id)
    env_name = board.pio_env
    if not env_name:
        raise ConfigError(
            f"board '{board_id}' has no firmware to build (no pio_env)",
            "it is served by `hil device`; pick a board with firmware: hil boards",
        )
    model = Path(model).expanduser().resolve()
    if not model.is_file():
        raise ConfigError(f"model {model} does not exist", "check the path to the .tflite")
    out_dir = Path(out) if out else Path("build") / board_id
    out_dir = out_dir.resolve()
    project = firmware_dir()
    if not (project / "platformio.ini").is_file():
        raise ConfigError(f"no PlatformIO project at {project}", "reinstall tinyhil")

    env_vars: dict[str, str] = {}
    if is_offline_env(board):
        check_toolchain(board)
        env_vars["HIL_TFLM_DIR"] = str(find_tflm_tree(board, tflm_dir))
    elif tflm_dir:
        raise ConfigError(
            f"--tflm does not apply to {board_id}: its TFLM comes from PlatformIO's lib_deps", "leave --tflm out"
        )
    elif not pio.platform_installed(board.get("platform", "")) and not pio.registry_reachable():
        raise _registry_error(board)
    pio.ensure_offline_platformio()

    # Sources go to a stable folder per env (a new folder would change the
    # compiler command lines and rebuild), then are copied to `out`.
    gen_dir = workspace_dir() / "hil_model" / env_name
    cg = codegen.generate(model, gen_dir, board=board_id)
    stamp = model_stamp(model, board_id, cg.config_path)
    (gen_dir / STAMP).write_text(json.dumps(stamp))
    (out_dir / "model").mkdir(parents=True, exist_ok=True)
    for name in codegen.FILES:
        shutil.copy2(gen_dir / name, out_dir / "model" / name)

    env_vars.update(
        {"HIL_MODEL": str(model), "HIL_MODEL_DIR": str(gen_dir), "PLATFORMIO_WORKSPACE_DIR": str(workspace_dir())}
    )
    args = ["run", "-d", str(project), "-e", env_name]
    if jobs:
        args += ["-j", str(jobs)]
    log_path = out_dir / "build.log"
    t0 = time.monotonic()
    with _env_lock(env_name):
        if clean:
            pio.run_pio(["run", "-d", str(project), "-e", env_name, "-t", "clean"], env_extra=env_vars)
        proc = _run_streaming(args, env_vars, on_line, timeout)
        log_path.write_text(proc["output"])
        if proc["returncode"] != 0:
            raise _classify_failure(board, proc["output"])
        build_dir = workspace_dir() / "build" / env_name
        elf_src = next((p for p in (build_dir / "program.elf", build_dir / "program") if p.is_file()), None)
        if elf_src is None:
            raise BuildError(
                f"PlatformIO reported success but left no program in {build_dir}", "run the build again with --clean"
            )
        elf = out_dir / ("firmware.elf" if elf_src.suffix == ".elf" else "firmware")
        shutil.copy2(elf_src, elf)
        binary = build_dir / "program.bin"
        if binary.is_file():
            shutil.copy2(binary, out_dir / "firmware.bin")
    seconds = time.monotonic() - t0

    info = read_elf(elf, cg.data_symbol)
    result = BuildResult(
        board=board_id,
        env=env_name,
        elf=elf,
        model=model,
        model_sha256=cg.model.sha256,
        model_symbol=cg.data_symbol,
        model_size=info["model_size"] or 0,
        model_section=info["model_section"],
        model_address=info["model_address"],
        model_in_readonly_section=info["model_readonly"],
        arena_bytes=cg.arena.recommended,
        arena_symbol_bytes=info["arena_symbol_bytes"],
        flash_used=info["flash_used"],
        flash_limit=board.flash_bytes,
        ram_used=info["ram_used"],
        ram_limit=board.ram_bytes,
        sections=info["sections"],
        seconds=seconds,
        command=pio.pio_command() + args,
        env_vars=env_vars,
        log=log_path,
    )
    if info["model_section"] is None:
        raise BuildError(
            f"the model array {cg.data_symbol} is not in the ELF {elf}",
            "the firmware must reference kHilModelData (see docs/codegen.md)",
        )
    if not info["model_readonly"]:
        raise BuildError(
            f"the model array {cg.data_symbol} sits in the writable section "
            f"{info['model_section']}: it would be copied to RAM",
            "keep the generated `const` array; check the linker script",
        )
    if result.flash_used > result.flash_limit:
        raise BuildError(
            f"the firmware needs {result.flash_used} bytes of flash; {board_id} has {result.flash_limit}",
            "use a smaller model or a board with more flash",
        )
    if result.ram_used > result.ram_limit:
        raise BuildError(
            f"the firmware needs {result.ram_used} bytes of RAM; {board_id} has {result.ram_limit}",
            "use a model with a smaller arena or a bigger board",
        )
    write_json_atomic(out_dir / "build_report.json", result.to_json())
    return result


def _run_streaming(args: list[str], env_extra: dict, on_line, timeout: float | None) -> dict:
    import subprocess

    env = pio.pio_env()
    env.update(env_extra)
    cmd = pio.pio_command() + args
    lines: list[str] = []

    try:
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
