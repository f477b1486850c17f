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

from harness.errors import ConfigError
from harness.examples import EXAMPLES
from harness.fileio import sha256_file, write_json_atomic
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
    if example not in EXAMPLES:
        raise ConfigError(f"unknown example '{example}'", f"choose one of: {', '.join(EXAMPLES)}")
    if board not in DEMO_BOARDS:
        raise ConfigError(
            f"the demo cannot start board '{board}' itself",
            f"use {', '.join(DEMO_BOARDS)}; for a real board run hil build, hil flash and hil validate (README)",
        )
    from harness.boards import load_board
    from harness.drivers import driver_for

    if "faults" not in driver_for(load_board(board)).settings and (faults or baud != 921600 or latency_ms != 1.0):
        raise ConfigError(
            "--faults, --baud and --latency_ms shape the simulated board's line", f"leave them out with --board {board}"
        )
    t_all = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {} if fresh else _state(out)
    steps: list[DemoStep] = []

    def step(name, t0, reused, detail=""):
        s = DemoStep(name, round(time.monotonic() - t0, 2), reused, detail)
        steps.append(s)
        if on_step:
            on_step(s)

    # 1. the example: synthetic data and a trained Keras model
    from harness.examples import ExamplePaths, build_example

    t0 = time.monotonic()
    ex_dir = out / "example"
    st = state.get("example", {})
    if st.get("name") == example and st.get("seed") == seed and _unchanged(st.get("files", {})):
        ex = ExamplePaths(
            name=example,
            out_dir=ex_dir,
            keras=Path(st["keras"]),
            config=Path(st["config"]),
            data=Path(st["data"]),
            class_names=tuple(st["class_names"]),
        )
        step("example", t0, True, str(ex.keras))
    else:
        state = {}  # everything after depends on it
        ex = build_example(example, ex_dir, seed=seed)
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
        write_json_atomic(out / STATE_FILE, {"format": STATE_FORMAT, **state})
        step("example", t0, False, f"trained {ex.keras}")

    # 2. convert: int8 .tflite + validation data (inputs and host outputs)
    from harness.convert import convert

    t0 = time.monotonic()
    model_dir = out / "model"
    tflite = model_dir / f"{example}_quantized.tflite"
    keras_sha = state["example"]["files"][str(ex.keras)]
    st = state.get("convert", {})
    if st.get("keras_sha256") == keras_sha and _unchanged(st.get("files", {})):
        npz = Path(st["npz"])
        step("convert", t0, True, str(tflite))
    else:
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
        npz = res.npz
        state["convert"] = {"keras_sha256": keras_sha, "npz": str(npz), "files": _record([tflite, npz])}
        write_json_atomic(out / STATE_FILE, {"format": STATE_FORMAT, **state})
        m = res.metrics or {}
        step(
            "convert",
            t0,
            False,
            f"{tflite} ({res.tflite_size} bytes; Keras vs TFLite cosine {m.get('cosine_mean', float('nan')):.4f})",
        )

    # 3. codegen: the firmware's model sources (the sim runs the .tflite itself)
    from harness.codegen import generate

    t0 = time.monotonic()
    fw = out / "firmware_src"
    cg = generate(tflite, fw, model_config=ex.config)
    step("codegen", t0, False, f"{fw}/model_data.cc, model_data.h, model_ops.h (arena {cg.arena.recommended} bytes)")

    # 4. the device: its driver starts it (the simulated board on a
    # pseudo-terminal, or the built firmware), 5. validate over it
    from harness.flash import flash

    t0 = time.monotonic()
    reports_dir = out / "reports"
    reports = {
        "json": reports_dir / "validation.json",
        "junit": reports_dir / "validation.xml",
        "html": reports_dir / "validation.html",
    }
    elf = None
    if load_board(board).pio_env:  # a firmware to build (the simulated board has none)
        from harness.build import build

        built = build(board, tflite, tflm_dir=tflm_dir, out=out / "build" / board, on_line=on_build_line)
        step("build", t0, False, f"{built.elf} (flash {built.flash_used:,} B, RAM {built.ram_used:,} B)")
        elf, t0 = built.elf, time.monotonic()
    line = {"baud": baud, "latency_ms": latency_ms, "faults": faults, "seed": seed, "arena_size": cg.arena.measured}
    settings = driver_for(load_board(board)).settings
    dev = flash(board, elf=elf, model=tflite, options={k: v for k, v in line.items() if k in settings})
    try:
        port = dev.port
        shaped = f" ({baud} baud, {latency_ms:g} ms latency" + (f", faults {faults}" if faults else "") + ")"
        step("device", t0, False, f"{board} board on {port}" + (shaped if "baud" in settings else ""))
        t0 = time.monotonic()
        rep = validate(
            port, tflite, npz, samples=samples, gates=gates, baud=baud, timeout=timeout, progress=progress, board=board
        )
    finally:
        dev.stop()
    from harness.report import write_html, write_json, write_junit

    d = rep.to_dict()
    write_json(d, reports["json"])
    write_junit(d, reports["junit"])
    write_html(d, reports["html"])
    step("validate", t0, False, f"{rep.status.upper()}, {d['samples_done']} samples")
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
        steps=steps,
        seconds=round(time.monotonic() - t_all, 2),
    )
