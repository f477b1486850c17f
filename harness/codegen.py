"""Stage 2, codegen: a `.tflite` becomes the firmware's `model_data.h`,
`model_data.cc` and `model_ops.h`, rendered from `templates/`.

Python only prepares values (identifiers, literals, the hex body of the
array); every line of C++ comes from a template rendered with strict
undefined variables. Nothing is written unless every file rendered, and a
file whose content did not change is not rewritten (its mtime stays, so
builds do not recompile).
"""

from __future__ import annotations

import binascii
import functools
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import __version__, npu
from harness.arena import ArenaProbe, align_up
from harness.boards import load_board
from harness.config import (
    PIPELINE_SUFFIXES,
    find_model_config,  # noqa: F401 - kept importable from here
    read_normalization,
    resolve_model_config,
)
from harness.errors import ConfigError, ModelError
from harness.fileio import OutputSet
from harness.model import DTYPE_CODES, ModelInfo, TensorInfo, inspect_bytes, read_model_bytes
from harness.paths import templates_dir

FORMATS = ("array", "incbin")
DEFAULT_ARENA_MARGIN = "20%"
MAX_DIMS = 6  # TFLM's RuntimeShape keeps up to 6 dims inline
FILES = ("model_data.h", "model_data.cc", "model_ops.h")
INCBIN_COPY = "model_data.tflite"
INCBIN_SECTION = ".rodata.hil_model"
BYTES_PER_LINE = 12  # as `xxd -i`
BOARD_WARN_FRACTION = 0.90

# Stems the pipeline appends to model files; stripped to get a short default name.
_NAME_SUFFIXES = (*PIPELINE_SUFFIXES, "_model", "_tflite")

_CPP_KEYWORDS = frozenset(
    """
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t
char32_t class compl concept const consteval constexpr constinit const_cast continue co_await
co_return co_yield decltype default delete do double dynamic_cast else enum explicit export
extern false float for friend goto if inline int long mutable namespace new noexcept not not_eq
nullptr operator or or_eq private protected public register reinterpret_cast requires return
short signed sizeof static static_assert static_cast struct switch template this thread_local
throw true try typedef typeid typename union unsigned using virtual void volatile wchar_t while
xor xor_eq restrict _Bool _Complex _Imaginary main
""".split()
)


@dataclass(frozen=True)
class Arena:
    measured: int
    recommended: int
    margin_text: str
    how: str


@dataclass
class CodegenResult:
    """What `generate()` did; the CLI reports it."""

    out_dir: Path
    name: str
    data_symbol: str
    format: str
    model: ModelInfo
    arena: Arena
    ops: list[str]
    written: dict[str, bool] = field(default_factory=dict)  # file -> rewritten?
    config_path: Path | None = None
    normalization: bool = False
    warnings: list[str] = field(default_factory=list)
    board_usage: dict | None = None


# --------------------------------------------------------------------------- names


def sanitize_identifier(text: str) -> str:
    """Any string -> a lower-case C/C++ identifier: [a-z0-9_], no leading
    digit, not a keyword, no reserved `__` or `_X` spelling."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    ident = re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_")
    ident = re.sub(r"__+", "_", ident)
    if not ident:
        ident = "model"
    ident = ident.lower()
    # a prefix, not a suffix: g_<name>_model_data must not get a reserved "__"
    if ident[0].isdigit() or ident in _CPP_KEYWORDS:
        ident = "m_" + ident
    return ident


def default_name(model_path: Path) -> str:
    """`gesture_model_quantized.tflite` -> `gesture`; the data array is then
    `g_gesture_model_data`."""
    stem = sanitize_identifier(model_path.stem)
    changed = True
    while changed:
        changed = False
        for suf in _NAME_SUFFIXES:
            if stem.endswith(suf) and len(stem) > len(suf):
                stem, changed = stem[: -len(suf)], True
    return sanitize_identifier(stem)


# --------------------------------------------------------------------------- literals


def c_float(x: float) -> str:
    """A float32 as a C++ literal that reads back to the same float32."""
    x32 = np.float32(x)
    if not math.isfinite(float(x32)):
        raise ModelError(
            f"non-finite constant {x} cannot go into a header",
            "check the model's quantization parameters and the config's mean/std",
        )
    if x32 == 0 or 1e-4 <= abs(float(x32)) < 1e7:
        text = np.format_float_positional(x32, unique=True, trim="0")
    else:
        text = np.format_float_scientific(x32, unique=True, trim="0")
    if "e" not in text and "." not in text:
        text += ".0"
    if text.endswith("."):
        text += "0"
    return text + "f"


def comment_text(text: str) -> str:
    """Text that is safe inside a `//` comment: printable ASCII only, and no
    backslash (one at the end of a line would splice the next line in)."""
    return re.sub(r"[^\x20-\x7e]", "?", text).replace("\\", "/")


def c_string(text: str) -> str:
    """A C/C++ string literal (with quotes) for any text."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7F and ch != "?":  # '?' escaped: no trigraphs
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8"))
    return '"' + "".join(out) + '"'


def _asm_string(text: str) -> str:
    """A GNU as string literal (with quotes)."""
    out = []
    for b in text.encode("utf-8"):
        ch = chr(b)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= b < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def hex_body(data: bytes, per_line: int = BYTES_PER_LINE, indent: str = "  ") -> str:
    """`0x1c, 0x00, ...` lines like `xxd -i`."""
    return str(hex_body_bytes(data, per_line, indent), "ascii")


def hex_body_bytes(data: bytes, per_line: int = BYTES_PER_LINE, indent: str = "  ") -> bytes | memoryview:
    """`hex_body` as ASCII bytes, without a copy. The digits come from
    `binascii.hexlify()` and are scattered into a preformatted grid with
    numpy: 8 MB take about 0.1 s (a Python loop takes seconds)."""
    if not data:
        return b""
    digits = np.frombuffer(binascii.hexlify(data), np.uint8).reshape(-1, 2)
    rows, rest = divmod(len(data), per_line)
    parts: list[np.ndarray] = []
    if rows:
        pattern = (indent + ", ".join(["0x00"] * per_line) + ",\n").encode("ascii")
        grid = np.empty((rows, len(pattern)), np.uint8)
        grid[:] = np.frombuffer(pattern, np.uint8)
        # every byte has a 6-char slot ("0x??, ", the last in a row "0x??,\n");
        # its two digits are copied as one (unaligned) uint16
        slots = np.ndarray(
            shape=(rows, per_line), dtype=np.uint16, buffer=grid, offset=len(indent) + 2, strides=(len(pattern), 6)
        )
        slots[...] = digits[: rows * per_line].reshape(-1).view(np.uint16).reshape(rows, per_line)
        parts.append(grid.reshape(-1))
    if rest:
        tail = digits[rows * per_line :].tobytes().decode("ascii")
        parts.append(
            np.frombuffer(
                (indent + ", ".join("0x" + tail[i : i + 2] for i in range(0, len(tail), 2)) + ",\n").encode("ascii"),
                np.uint8,
            )
        )
    flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return memoryview(flat[:-2])  # no comma after the last byte, no final newline


# --------------------------------------------------------------------------- inputs


def load_model(path: str | Path) -> tuple[bytes, ModelInfo]:
    path = Path(path)
    data = read_model_bytes(path)
    info = inspect_bytes(data, path)
    _check_buffers(data, path)
    return data, info


def _check_buffers(data: bytes, path: Path) -> None:
    """A truncated file can still parse (flatbuffers are read lazily), and
    TFLM would then read past the end. Check every buffer lies inside the file."""
    from ai_edge_litert import schema_py_generated as s

    try:
        m = s.Model.GetRootAs(data, 0)
        for i in range(m.BuffersLength()):
            b = m.Buffers(i)
            n = b.DataLength()
            if n:
                start = b._tab.Vector(b._tab.Offset(4))
                if start + n > len(data):
                    raise ValueError("buffer past the end")
            off, size = int(b.Offset()), int(b.Size())
            if off > 1 and off + size > len(data):
                raise ValueError("external buffer past the end")
        for gi in range(m.SubgraphsLength()):
            g = m.Subgraphs(gi)
            for ti in range(g.TensorsLength()):
                t = g.Tensors(ti)
                if t.Buffer() >= max(m.BuffersLength(), 1):
                    raise ValueError("tensor refers to a missing buffer")
    except Exception as exc:
        raise ModelError(
            f"{path} is truncated or corrupt ({exc})", "re-run `hil convert` to produce the .tflite"
        ) from exc


def load_op_table() -> dict:
    with open(templates_dir() / "tflm_ops.json", encoding="utf-8") as f:
        return json.load(f)


def resolve_ops(info: ModelInfo, table: dict | None = None) -> list[tuple[str, str]]:
    """[(op name, MicroMutableOpResolver method)] for the model, or
    `ModelError` naming every operator TFLM cannot run."""
    table = table or load_op_table()
    ops, bad = [], []
    for name in info.builtin_ops:
        call = table["builtin"].get(name)
        (ops.append((name, call)) if call else bad.append(name))
    for name in info.custom_ops:
        call = table["custom"].get(name)
        (ops.append((name, call)) if call else bad.append(f"custom '{name}'"))
    if bad:
        raise ModelError(
            f"TFLM cannot run operator(s): {', '.join(bad)}",
            "rebuild the model from TFLM-supported builtin ops (see docs/codegen.md)",
        )
    if not ops:
        raise ModelError(f"{info.path} has no operators", "re-convert the model")
    return sorted(ops)


def parse_margin(spec: str | int) -> tuple[float, int]:
    """'20%' -> (0.20, 0); '2048' -> (0.0, 2048); '10%+512' -> (0.10, 512)."""
    frac, extra = 0.0, 0
    for part in str(spec).replace(" ", "").split("+"):
        try:
            if part.endswith("%"):
                frac += float(part[:-1]) / 100.0
            elif part:
                extra += int(part)
        except ValueError:
            raise ConfigError(f"bad arena margin '{spec}'", "write e.g. 20%, 2048 (bytes) or 10%+512") from None
    if frac < 0 or extra < 0:
        raise ConfigError(f"bad arena margin '{spec}'", "the margin cannot be negative")
    return frac, extra


# --------------------------------------------------------------------------- rendering


@functools.cache
def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _tensor_ctx(t: TensorInfo, where: str) -> dict:
    if t.dtype not in DTYPE_CODES:
        raise ModelError(
            f"{where} tensor '{t.name}' has type {t.dtype}, which the protocol cannot carry",
            "convert with int8 or float32 inputs and outputs",
        )
    if len(t.shape) > MAX_DIMS:
        raise ModelError(
            f"{where} tensor '{t.name}' has {len(t.shape)} dims (at most {MAX_DIMS})",
            "reshape the model's inputs/outputs",
        )
    dims = [int(d) for d in t.shape] + [0] * (MAX_DIMS - len(t.shape))
    quant = f"scale {t.scale:.9g}, zero point {t.zero_point}" if t.quantized else "not quantized"
    return {
        "dtype_const": "kHilDtype" + t.dtype.capitalize(),
        "ndims": len(t.shape),
        "dims": ", ".join(str(d) for d in dims),
        "scale": c_float(t.scale),
        "zero_point": int(t.zero_point),
        "nbytes": t.nbytes,
        "name": c_string(t.name),
        "comment": comment_text(f"{t.name or '?'}: {t.dtype}[{', '.join(str(d) for d in t.shape)}], {quant}"),
    }


def _dtype_codes_ctx() -> list[tuple[str, int]]:
    return [(n.capitalize(), c) for n, c in sorted(DTYPE_CODES.items(), key=lambda kv: kv[1])]


def _context(
    info: ModelInfo,
    data: bytes,
    *,
    name: str,
    model_file: str,
    ops: list[tuple[str, str]],
    normalization: tuple[list[float], list[float]] | None,
    config_name: str | None,
) -> dict:
    """The template variables shared by every file."""
    data_symbol = f"g_{name}_model_data"
    if normalization:
        mean, std = normalization
        norm = {
            "present": True,
            "size": len(mean),
            "mean": ", ".join(c_float(v) for v in mean),
            "std": ", ".join(c_float(v) for v in std),
            "source": comment_text(f"From {config_name}."),
        }
    else:
        norm = {
            "present": False,
            "size": 1,
            "mean": "0.0f",
            "std": "1.0f",
            "source": "No model config with mean/std was given: identity (mean 0, std 1).",
        }
    return {
        "banner": f"generated from {comment_text(model_file)} sha256 {info.sha256} by tinyhil {__version__}; do not edit",
        "name": name,
        "data_symbol": data_symbol,
        "len_symbol": f"{data_symbol}_len",
        "model_size": len(data),
        "sha256": info.sha256,
        "sha256_bytes": hex_body(info.sha256_bytes, per_line=16, indent="    "),
        "dtype_codes": _dtype_codes_ctx(),
        "max_dims": MAX_DIMS,
        "inputs": [_tensor_ctx(t, "input") for t in info.inputs],
        "outputs": [_tensor_ctx(t, "output") for t in info.outputs],
        "normalization": norm,
        "ops": [{"name": n, "call": c} for n, c in ops],
    }


def render_header(ctx: dict, arena: Arena) -> bytes:
    return (
        _env()
        .get_template("model_data.h.j2")
        .render(ctx, arena=arena, guard=f"HIL_{ctx['name'].upper()}_MODEL_DATA_H_")
        .encode("utf-8")
    )


_DATA_MARKER = "@@HIL_MODEL_DATA_HEX@@"


def render_source(ctx: dict, data: bytes, fmt: str, incbin_path: str | None = None) -> bytes:
    if fmt == "array":
        # The template renders around a marker and the bytes' hex (tens of MB
        # for a big model) goes in as bytes: no str copy, no re-encoding.
        text = _env().get_template("model_data.cc.j2").render(ctx, data_hex=_DATA_MARKER).encode("ascii")
        head, marker, tail = text.partition(_DATA_MARKER.encode("ascii"))
        if not marker or _DATA_MARKER.encode("ascii") in tail:
            raise RuntimeError("model_data.cc.j2 must place data_hex exactly once")
        return b"".join((head, hex_body_bytes(data), tail))
    if fmt == "incbin":
        return (
            _env()
            .get_template("model_data_incbin.cc.j2")
            .render(
                ctx,
                section=f"{INCBIN_SECTION}.{ctx['data_symbol']}",
                incbin_file=INCBIN_COPY,
                incbin_path_asm=c_string(_asm_string(incbin_path or INCBIN_COPY))[1:-1],
            )
            .encode("utf-8")
        )
    raise ConfigError(f"unknown format '{fmt}'", f"choose one of {', '.join(FORMATS)}")


def render_ops(ctx: dict) -> bytes:
    return (
        _env()
        .get_template("model_ops.h.j2")
        .render(ctx, guard=f"HIL_{ctx['name'].upper()}_MODEL_OPS_H_")
        .encode("utf-8")
    )


# --------------------------------------------------------------------------- checks


def check_board(board_id: str, model_size: int, arena_bytes: int) -> tuple[dict, list[str]]:
    """Model size vs flash, arena vs RAM: `ConfigError` when it cannot fit,
    warnings above 90 %."""

    board = load_board(board_id)
    model_flash = board.flash_bytes
    if board.get("model_flash_base") and model_size > int(board.get("image_model_max_bytes") or 0):
        # The STM32N6 firmware links such a model into the external NOR flash.
        model_flash = int(board.get("external_flash_bytes") or 0)
    usage = {
        "board": board.id,
        "flash_bytes": model_flash,
        "ram_bytes": board.ram_bytes,
        "model_bytes": model_size,
        "arena_bytes": arena_bytes,
        "flash_fraction": model_size / model_flash if model_flash else math.inf,
        "ram_fraction": arena_bytes / board.ram_bytes if board.ram_bytes else math.inf,
    }
    problems, warnings = [], []
    for what, need, have, frac in (
        ("model", model_size, model_flash, usage["flash_fraction"]),
        ("tensor arena", arena_bytes, board.ram_bytes, usage["ram_fraction"]),
    ):
        mem = "flash" if what == "model" else "RAM"
        if need > have:
            problems.append(f"the {what} needs {need:,} bytes but {board.id} has {have:,} bytes of {mem}")
        elif frac > BOARD_WARN_FRACTION:
            warnings.append(
                f"the {what} takes {frac:.0%} of {board.id}'s {mem} ({need:,} of {have:,} bytes);"
                " firmware and stack need room too"
            )
    if problems:
        raise ConfigError("; ".join(problems), "use a smaller model or a board with more memory")
    return usage, warnings


# --------------------------------------------------------------------------- writing


def _write_all(out_dir: Path, files: dict[str, bytes]) -> dict[str, bool]:
    """Write the changed files; either all changed files are replaced or none."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output {out_dir} is a file, not a folder", "pass a folder with --out")
    changed = {}
    for fname, blob in files.items():
        try:
            changed[fname] = (out_dir / fname).read_bytes() != blob
        except FileNotFoundError:
            changed[fname] = True
        except OSError as exc:
            raise ConfigError(f"cannot write to {out_dir}: {exc.strerror}", "choose a writable output folder") from exc
    with OutputSet([out_dir / f for f, c in changed.items() if c]).staged() as stack:
        for fname, blob in files.items():
            if changed[fname]:
                tmp = stack.path(out_dir / fname)
                try:
                    tmp.write_bytes(blob)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot write {out_dir / fname}: {exc.strerror}", "choose a writable output folder"
                    ) from exc
        # leaving the block renames every temporary file over its target, or rolls all back
    return changed


# --------------------------------------------------------------------------- the stage


def _model_and_ops(model: Path) -> tuple[bytes, ModelInfo, list[tuple[str, str]]]:
    data, info = load_model(model)
    if not info.inputs or not info.outputs:
        raise ModelError(f"{model} has no inputs or no outputs", "re-convert the model")
    return data, info, resolve_ops(info)


def _identifier(name: str | None, model: Path) -> str:
    if name is None:
        return default_name(model)
    ident = sanitize_identifier(name)
    if not name.strip():
        raise ConfigError("--name is empty", "pass a name like gesture")
    return ident


def _arena(measured: int, how: str, margin_frac: float, margin_extra: int) -> Arena:
    """The recommended arena: the measurement plus the margin, 16-byte aligned."""

    recommended = align_up(measured * (1.0 + margin_frac) + margin_extra)
    parts = (f"{margin_frac:.0%}" if margin_frac else "", f"{margin_extra} bytes" if margin_extra else "")
    margin_text = " + ".join(p for p in parts if p) or "none"
    return Arena(measured=measured, recommended=recommended, margin_text=margin_text, how=how)


def _render_and_measure(
    model: Path, data: bytes, fmt: str, out_dir: Path, ctx: dict, arena_bytes: int | None
) -> tuple[dict[str, bytes], int, str]:
    """The sources that do not depend on the arena, rendered while TFLM
    measures the arena in a child process; returns them, the arena bytes and
    how they were found."""
    probe = None
    if arena_bytes is None:
        probe = ArenaProbe(model)  # runs in a child process while we render
    try:
        files = {}
        incbin_path = None
        if fmt == "incbin":
            # The assembler resolves .incbin against its working directory, not
            # the source's folder, so the copy beside the sources is named by
            # its absolute path: compiling from any directory works.
            incbin_path = str((out_dir / INCBIN_COPY).resolve())
            files[INCBIN_COPY] = data
        files["model_data.cc"] = render_source(ctx, data, fmt, incbin_path)
        files["model_ops.h"] = render_ops(ctx)
        if probe is None:
            return files, int(arena_bytes), "given by the caller, not measured"
        m = probe.result()
        probe = None
        how = f"smallest arena that allocated and invoked, {m.probes} probes" + (
            "; the search floor was already enough" if m.at_floor else ""
        )
        return files, m.bytes, how
    finally:
        if probe is not None:
            probe.cancel()


def _normalization_warnings(normalization, config_path: Path | None, info: ModelInfo) -> list[str]:
    if not normalization:
        return []
    n, shape = len(normalization[0]), info.inputs[0].shape
    if n in {1, info.inputs[0].size, int(shape[-1]) if shape else 1}:
        return []
    return [
        f"{config_path.name} has {n} mean/std values, but input '{info.inputs[0].name}' "
        f"has shape {list(shape)}; check the model config belongs to this model"
    ]


def _outputs(out_dir: Path, fmt: str, model: Path, config_path: Path | None) -> OutputSet:
    return OutputSet(
        outputs=[out_dir / f for f in ([INCBIN_COPY] if fmt == "incbin" else []) + list(FILES)],
        inputs={"--model": model, "--model_config": config_path},
    )


def generate(
    model: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    model_config: str | Path | None = None,
    fmt: str = "array",
    board: str | None = None,
    arena_margin: str | int = DEFAULT_ARENA_MARGIN,
    arena_bytes: int | None = None,
) -> CodegenResult:
    """Generate the firmware sources for `model` into the folder `out`.

    `arena_bytes` skips the TFLM measurement (tests of rendering only); the
    CLI always measures.
    """
    model = Path(model)
    out_dir = Path(out)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format '{fmt}'", f"choose one of {', '.join(FORMATS)}")
    margin_frac, margin_extra = parse_margin(arena_margin)
    data, info, ops = _model_and_ops(model)
    ident = _identifier(name, model)
    config_path = resolve_model_config(model_config, model)
    _outputs(out_dir, fmt, model, config_path).check()  # an unwritable --out, or one holding the model, fails now
    normalization = read_normalization(config_path) if config_path else None
    if board:
        load_board(board)  # an unknown board fails before the measurement starts
    ctx = _context(
        info,
        data,
        name=ident,
        model_file=model.name,
        normalization=normalization,
        config_name=config_path.name if config_path else None,
        ops=ops,
    )
    from harness.localize import model_ops

    ctx["n_operators"] = len(model_ops(data))  # the trace's records (hil_runner's profiler)
    files, measured, how = _render_and_measure(model, data, fmt, out_dir, ctx, arena_bytes)
    arena = _arena(measured, how, margin_frac, margin_extra)
    usage, warnings = check_board(board, len(data), arena.recommended) if board else (None, [])
    if board:
        warnings += npu.npu_warnings(data, load_board(board))
    warnings += _normalization_warnings(normalization, config_path, info)
    files["model_data.h"] = render_header(ctx, arena)
    files = {k: files[k] for k in ([INCBIN_COPY] if fmt == "incbin" else []) + list(FILES)}
    written = _write_all(out_dir, files)
    return CodegenResult(
        out_dir=out_dir,
        name=ident,
        data_symbol=f"g_{ident}_model_data",
        format=fmt,
        model=info,
        arena=arena,
        ops=[n for n, _ in ops],
        written=written,
        config_path=config_path,
        normalization=normalization is not None,
        warnings=warnings,
        board_usage=usage,
    )
