"""The main job in one call: a bundled example taken through convert →
codegen → the simulated board on a real pseudo-terminal → validate over the
real serial path → drift reports.

    result = run_demo("gesture", "hil-demo")
    result.report.exit_code, result.reports["html"]

With `board="qemu_m55"` or `board="native"` the device is the real firmware
instead of the simulated board: `hil build` (PlatformIO, a local TFLM tree)
and `hil flash` (QEMU on a TCP socket, or the host program on a pty) take
the place of step 4.

Finished steps are reused when the demo runs again in the same folder: the
example (trained model and data) and the conversion are kept when the files
recorded in `demo_state.json` are still there with the same SHA-256 (and the
same example and seed). `fresh=True` redoes everything. Codegen and
validation always run (codegen rewrites only files that changed).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.boards import load_board
from harness.build import build
from harness.codegen import generate
from harness.convert import convert
from harness.device.link import parse_faults
from harness.drivers import driver_for
from harness.errors import ConfigError
from harness.examples import EXAMPLES, ExamplePaths, build_example
from harness.fileio import OutputSet, sha256_file, write_json_atomic
from harness.flash import flash
from harness.procs import deferred_signals
from harness.report import write_html, write_json, write_junit
from harness.validate import Gates, ValidationReport, validate

STATE_FILE = "demo_state.json"
# Devices the demo can start itself: no hardware needed.
DEMO_BOARDS = ("sim", "qemu_m55", "native")
STATE_FORMAT = "tinyhil-demo-state/1"


@dataclass
class DemoStep:
    name: str
    seconds: float
    reused: bool
    detail: str = ""


@dataclass
class DemoResult:
    out_dir: Path
    example: str
    example_paths: object  # harness.examples.ExamplePaths
    keras: Path
    tflite: Path
    npz: Path
    firmware_src: Path
    port: str
    reports: dict[str, Path]
    report: ValidationReport
    steps: list[DemoStep] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return self.report.exit_code


def _state(out: Path) -> dict:
    try:
        s = json.loads((out / STATE_FILE).read_text())
        return s if s.get("format") == STATE_FORMAT else {}
    except (OSError, ValueError):
        return {}


def _unchanged(files: dict[str, str]) -> bool:
    """True when every recorded file exists with its recorded SHA-256."""
    try:
        return bool(files) and all(sha256_file(p) == sha for p, sha in files.items())
    except OSError:
        return False


def _record(paths) -> dict[str, str]:
    return {str(p): sha256_file(p) for p in paths}


class _Steps:
    """Times the steps and tells `on_step` about each as it ends."""

    def __init__(self, on_step: Callable[[DemoStep], None] | None):
        self.done: list[DemoStep] = []
        self._on_step = on_step
        self.t0 = time.monotonic()

    def start(self) -> None:
        self.t0 = time.monotonic()

    def end(self, name: str, reused: bool, detail: str = "") -> None:
        s = DemoStep(name, round(time.monotonic() - self.t0, 2), reused, detail)
        self.done.append(s)
        if self._on_step:
            self._on_step(s)
        self.t0 = time.monotonic()


def _check_args(example: str, board: str, faults: str | None, baud: int, latency_ms: float) -> None:
    if example not in EXAMPLES:
        raise ConfigError(f"unknown example '{example}'", f"choose one of: {', '.join(EXAMPLES)}")
    if board not in DEMO_BOARDS:
        raise ConfigError(
            f"the demo cannot start board '{board}' itself",
            f"use {', '.join(DEMO_BOARDS)}; for a real board run hil build, hil flash and hil validate (README)",
        )
    if "faults" not in driver_for(load_board(board)).settings and (faults or baud != 921600 or latency_ms != 1.0):
        raise ConfigError(
            "--faults, --baud and --latency_ms shape the simulated board's line", f"leave them out with --board {board}"
        )


def _check_before_training(out: Path, faults: str | None, samples: int | None) -> OutputSet:
    """Cheap checks before minutes of training: the work folder, the report
    set, the options; then the work folder is made. Returns the checked
    report set."""

    report_set = OutputSet([out / "reports" / f"validation.{e}" for e in ("json", "xml", "html")]).check()
    parse_faults(faults)
    if samples is not None and samples < 1:
        raise ConfigError(f"--samples {samples} must be at least 1", "leave it out to use every sample")
    out.mkdir(parents=True, exist_ok=True)
    return report_set


def _save_state(out: Path, state: dict) -> None:
    write_json_atomic(out / STATE_FILE, {"format": STATE_FORMAT, **state})


def _example_step(example: str, out: Path, seed: int, state: dict, steps: _Steps):
    """1. the example: synthetic data and a trained Keras model (reused when unchanged)."""

    st = state.get("example", {})
    if st.get("name") == example and st.get("seed") == seed and _unchanged(st.get("files", {})):
        ex = ExamplePaths(
            name=example,
            out_dir=out / "example",
            keras=Path(st["keras"]),
            config=Path(st["config"]),
            data=Path(st["data"]),
            class_names=tuple(st["class_names"]),
        )
        steps.end("example", True, str(ex.keras))
        return ex
    state.clear()  # everything after depends on it
    ex = build_example(example, out / "example", seed=seed)
    data_files = sorted(p for p in ex.data.rglob("*.npy"))
    state["example"] = {
        "name": example,
        "seed": seed,
        "keras": str(ex.keras),
        "config": str(ex.config),
        "data": str(ex.data),
        "class_names": list(ex.class_names),
        "files": _record([ex.keras, ex.config, *data_files]),
    }
    _save_state(out, state)
    steps.end("example", False, f"trained {ex.keras}")
    return ex


def _convert_step(example: str, ex, out: Path, seed: int, state: dict, steps: _Steps) -> tuple[Path, Path]:
    """2. convert: int8 .tflite + validation data (inputs and host outputs), reused when unchanged."""

    model_dir = out / "model"
    tflite = model_dir / f"{example}_quantized.tflite"
    keras_sha = state["example"]["files"][str(ex.keras)]
    st = state.get("convert", {})
    if st.get("keras_sha256") == keras_sha and _unchanged(st.get("files", {})):
        steps.end("convert", True, str(tflite))
        return tflite, Path(st["npz"])
    res = convert(
        ex.keras,
        model_config=ex.config,
        output_path=tflite,
        data_path_train=ex.data,
        seed=seed,
        report_json=model_dir / "convert_report.json",
    )
    if res.npz is None:  # the bundled examples always have data
        raise ConfigError(f"convert wrote no validation data for {example}", "run `hil convert` by hand to see why")
    state["convert"] = {"keras_sha256": keras_sha, "npz": str(res.npz), "files": _record([tflite, res.npz])}
    _save_state(out, state)
    m = res.metrics or {}
    steps.end(
        "convert",
        False,
        f"{tflite} ({res.tflite_size} bytes; Keras vs TFLite cosine {m.get('cosine_mean', float('nan')):.4f})",
    )
    return tflite, res.npz


def _codegen_step(tflite: Path, config: Path, out: Path, steps: _Steps):
    """3. codegen: the firmware's model sources (the sim runs the .tflite itself)."""

    fw = out / "firmware_src"
    cg = generate(tflite, fw, model_config=config)
    steps.end("codegen", False, f"{fw}/model_data.cc, model_data.h, model_ops.h (arena {cg.arena.recommended} bytes)")
    return fw, cg


def _validate_on_device(
    board,
    tflite,
    npz,
    cg,
    out: Path,
    steps: _Steps,
    *,
    line: dict,
    tflm_dir,
    on_build_line,
    **validate_kw,
):
    """4. the device, started by its driver (the simulated board on a
    pseudo-terminal, or the built firmware: QEMU or the host program),
    5. validate over it. `line` is the simulated line's shape: baud,
    latency_ms, faults, seed."""

    baud, latency_ms, faults = line["baud"], line["latency_ms"], line["faults"]
    elf = None
    if load_board(board).pio_env:  # a firmware to build (the simulated board has none)
        built = build(board, tflite, tflm_dir=tflm_dir, out=out / "build" / board, on_line=on_build_line)
        steps.end("build", False, f"{built.elf} (flash {built.flash_used:,} B, RAM {built.ram_used:,} B)")
        elf = built.elf
    line = {**line, "arena_size": cg.arena.measured}
    settings = driver_for(load_board(board)).settings
    dev = flash(board, elf=elf, model=tflite, options={k: v for k, v in line.items() if k in settings})
    try:
        port = dev.port
        shaped = f" ({baud} baud, {latency_ms:g} ms latency" + (f", faults {faults}" if faults else "") + ")"
        steps.end("device", False, f"{board} board on {port}" + (shaped if "baud" in settings else ""))
        return port, validate(port, tflite, npz, baud=baud, board=board, **validate_kw)
    finally:
        dev.stop()


def _write_reports(rep: ValidationReport, out: Path, report_set: OutputSet) -> dict[str, Path]:
    """The drift report as JSON, JUnit XML and HTML under out/reports, replaced
    as a set (never old and new mixed), with signals held while it is."""

    reports_dir = out / "reports"
    reports = {
        "json": reports_dir / "validation.json",
        "junit": reports_dir / "validation.xml",
        "html": reports_dir / "validation.html",
    }
    d = rep.to_dict()
    with deferred_signals(), report_set.staged() as st:
        write_json(d, st.path(reports["json"]))
        write_junit(d, st.path(reports["junit"]))
        write_html(d, st.path(reports["html"]))
    return reports


def run_demo(
    example: str = "gesture",
    out: str | os.PathLike = "hil-demo",
    *,
    fresh: bool = False,
    seed: int = 0,
    samples: int | None = None,
    baud: int = 921600,
    latency_ms: float = 1.0,
    faults: str | None = None,
    gates: Gates = Gates(),
    timeout: float = 2.0,
    progress=None,
    on_step: Callable[[DemoStep], None] | None = None,
    board: str = "sim",
    tflm_dir: str | os.PathLike | None = None,
    on_build_line: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the whole path; see the module docstring. Raises a `HilError`
    when a step before validation fails; validation's own outcome (pass,
    drift, error) is in `result.report`."""
    _check_args(example, board, faults, baud, latency_ms)
    t_all = time.monotonic()
    out = Path(out)
    report_set = _check_before_training(out, faults, samples)
    state = {} if fresh else _state(out)
    steps = _Steps(on_step)
    ex = _example_step(example, out, seed, state, steps)
    tflite, npz = _convert_step(example, ex, out, seed, state, steps)
    fw, cg = _codegen_step(tflite, ex.config, out, steps)
    validate_kw = {"samples": samples, "gates": gates, "timeout": timeout, "progress": progress}
    port, rep = _validate_on_device(
        board,
        tflite,
        npz,
        cg,
        out,
        steps,
        line={"baud": baud, "latency_ms": latency_ms, "faults": faults, "seed": seed},
        tflm_dir=tflm_dir,
        on_build_line=on_build_line,
        **validate_kw,
    )
    reports = _write_reports(rep, out, report_set)
    steps.end("validate", False, f"{rep.status.upper()}, {rep.samples_done} samples")
    return DemoResult(
        out_dir=out,
        example=example,
        example_paths=ex,
        keras=ex.keras,
        tflite=tflite,
        npz=npz,
        firmware_src=fw,
        port=port,
        reports=reports,
        report=rep,
        steps=steps.done,
        seconds=round(time.monotonic() - t_all, 2),
    )
