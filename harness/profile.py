"""On-device profile: where an invoke's time goes, operator by operator.

Each sample runs once with the device's per-operator trace on
(`DeviceSession.trace`); the trace's ticks become microseconds with the
device's tick rate (INFO `tick_hz`, else its `cpu_hz`: on cortex_m_generic
the ticks are DWT cycles). Which clock it is is part of the answer: the
simulated board's ticks are the host's nanoseconds, and QEMU's cycle counts
are the emulator's, not a chip's.

    rep = profile("socket://127.0.0.1:5555", "m.tflite", samples=20)
    rep["ops"][3]["us"]["median"], rep["op_types"][0]["share"]
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness import __version__
from harness.console import NullProgress
from harness.errors import ConfigError, DeviceError
from harness.model import inspect_bytes, read_model_bytes
from harness.paths import templates_dir
from harness.protocol.session import DeviceSession, check_device_matches
from harness.report import _num, svg_profile

SCHEMA = "tinyhil-profile-report/1"
DEFAULT_SAMPLES = 20


def _stats(values) -> dict | None:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return None
    return {
        "min": float(v.min()),
        "median": float(np.median(v)),
        "p99": float(np.percentile(v, 99)),
        "mean": float(v.mean()),
    }


def _board_data(board_id: str) -> dict:
    from harness.boards import boards_dir

    path = boards_dir() / f"{board_id}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def clock_of(info) -> dict:
    """Which clock the trace's ticks count, and how many a second."""
    hz = int(getattr(info, "tick_hz", 0) or 0) or int(getattr(info, "cpu_hz", 0) or 0)
    board = _board_data(getattr(info, "board", ""))
    if getattr(info, "host_time", False):
        kind, note = "host", "HOST time: the simulated board's ticks are this host's nanoseconds, not a device's"
    elif board.get("upload_method") == "native":
        kind, note = "host", "HOST time: the native firmware runs on this host, on its clock, not a device's"
    elif board.get("emulated"):
        kind, note = "qemu", "QEMU time: an emulator's counts, not a chip's (QEMU does not model the core's timing)"
    else:
        kind, note = "device", "the device's own clock"
    if not hz:
        note += "; the device reports no tick rate, so times are in ticks"
    return {"kind": kind, "tick_hz": hz, "note": note, "unit": "us" if hz else "ticks"}


def _inputs(model_info, data, samples: int):
    """The inputs to profile with: the data's (as `hil validate` sends them),
    or seeded random ones (time rarely depends on the values)."""
    if data is not None:
        from harness.valdata import load_data
        from harness.validate import device_inputs

        vd = load_data(data, model_info, samples)
        return [device_inputs(vd, model_info, i) for i in range(vd.samples)], "data"
    rng = np.random.default_rng(0)
    out = []
    for _ in range(samples):
        xs = []
        for t in model_info.inputs:
            dt = t.np_dtype
            if dt.kind in "iu":
                lim = np.iinfo(dt)
                xs.append(rng.integers(lim.min, int(lim.max) + 1, size=t.shape, dtype=dt))
            else:
                xs.append(rng.standard_normal(t.shape).astype(dt))
        out.append(xs)
    return out, "random (seed 0)"


def profile(
    port: str,
    model: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    samples: int = DEFAULT_SAMPLES,
    baud: int = 921600,
    timeout: float = 2.0,
    retries: int = 5,
    progress=None,
    session_factory: Callable | None = None,
) -> dict:
    """Profile the device at `port` holding `model`: the report as a dict
    (`tinyhil-profile-report/1`). Raises a `HilError` when it cannot run."""
    if samples < 1:
        raise ConfigError(f"samples {samples} must be at least 1", "use e.g. --samples 20")
    from harness.localize import model_ops

    mbytes = read_model_bytes(model)
    info = inspect_bytes(mbytes, Path(model))
    ops = model_ops(mbytes)
    inputs, source = _inputs(info, data, samples)
    progress = progress or NullProgress()
    session_factory = session_factory or DeviceSession
    per_sample: list[list[int]] = []
    invoke_us: list[int] = []
    with session_factory(port, baudrate=baud, timeout=timeout, retries=retries) as session:
        dinfo = session.handshake()
        diffs = check_device_matches(dinfo, info)
        if diffs:
            raise DeviceError(
                f"the device at {port} holds another model or tensor layout: " + "; ".join(diffs),
                f"flash {Path(model).name} to it (hil flash), or pass the --model it holds",
            )
        if not dinfo.traces:
            raise DeviceError(
                f"the device at {port} has no per-operator trace (INFO features lack TRACE)",
                "flash firmware built by this tinyhil (hil build), or use the simulated board",
            )
        if dinfo.n_ops != len(ops):
            raise DeviceError(
                f"the device traces {dinfo.n_ops} operators, the model has {len(ops)}",
                "flash this model to it (hil flash)",
            )
        task = progress.task("profile", total=len(inputs))
        for xs in inputs:
            tr = session.trace(xs)
            per_sample.append([int(t) for t in tr.ticks])
            invoke_us.append(int(tr.result.invoke_us))
            task.advance(1)
        task.close()
        clock = clock_of(dinfo)
        device = dinfo.to_dict()
    return _report(ops, per_sample, invoke_us, clock, device, port, model, data, source)


def summarize(ops, per_sample: list[list[int]], invoke_us: list[int], clock: dict) -> dict:
    """Per-operator and per-operator-type time of traced samples: `ticks`
    per sample per operator, turned into µs with `clock` (`clock_of`).
    The part of a profile report that `hil validate` shows too."""
    ticks = np.asarray(per_sample, np.float64).reshape(len(per_sample), len(ops))  # samples x operators
    scale = 1e6 / clock["tick_hz"] if clock["tick_hz"] else 1.0
    t = ticks * scale
    total = t.sum(axis=1)
    share = np.divide(t, total[:, None], out=np.zeros_like(t), where=total[:, None] > 0)
    rows = [
        {
            "index": k,
            "op_type": op.op_type,
            "name": op.output_name,
            "ticks": _stats(ticks[:, k]),
            "time": _stats(t[:, k]),
            "share": float(share[:, k].mean()),
        }
        for k, op in enumerate(ops)
    ]
    types: dict[str, list[int]] = {}
    for k, op in enumerate(ops):
        types.setdefault(op.op_type, []).append(k)
    by_type = [
        {
            "op_type": name,
            "count": len(ks),
            "time": _stats(t[:, ks].sum(axis=1)),
            "share": float(share[:, ks].sum(axis=1).mean()),
        }
        for name, ks in types.items()
    ]
    by_type.sort(key=lambda r: -r["share"])
    return {
        "clock": clock,
        "samples": len(per_sample),
        "operators_total": _stats(total),
        "invoke_us": _stats(invoke_us),
        "ops": rows,
        "op_types": by_type,
    }


def _report(ops, per_sample, invoke_us, clock, device, port, model, data, source) -> dict:
    return {
        "schema": SCHEMA,
        "tool": {"name": "tinyhil", "version": __version__, "command": "profile"},
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"port": port, "model": str(model), "data": None if data is None else str(data)},
        "inputs": source,
        "device": device,
        **summarize(ops, per_sample, invoke_us, clock),
    }


def top_types_line(p: dict, n: int = 3) -> str:
    """One console line: the operators' total and the costliest op types."""
    unit = "µs" if p["clock"]["unit"] == "us" else "ticks"
    tops = ", ".join(f"{r['op_type']} {100 * r['share']:.0f} %" for r in p["op_types"][:n])
    return (
        f"profile ({p['samples']} samples, {p['clock']['kind']} clock): operators median "
        f"{_fmt(p['operators_total']['median'])} {unit}; {tops}"
    )


# ------------------------------------------------------------------ output


def render_html(rep: dict) -> str:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    return env.get_template("profile_report.html.j2").render(r=rep, chart=Markup(svg_profile(rep)))


def summary(rep: dict):
    """The console table (rich)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    unit = "µs" if rep["clock"]["unit"] == "us" else "ticks"
    t = Table(title=f"per operator ({unit}, {rep['samples']} samples)", title_justify="left", show_edge=False)
    for col in ("op", "type", "min", "median", "p99", "% of invoke"):
        t.add_column(col, justify="left" if col == "type" else "right")
    for o in rep["ops"]:
        s = o["time"]
        t.add_row(
            str(o["index"]), o["op_type"], _fmt(s["min"]), _fmt(s["median"]), _fmt(s["p99"]), f"{100 * o['share']:.1f}"
        )
    ty = Table(title="per operator type", title_justify="left", show_edge=False)
    for col in ("type", "ops", "median", "% of invoke"):
        ty.add_column(col, justify="left" if col == "type" else "right")
    for r in rep["op_types"]:
        ty.add_row(r["op_type"], str(r["count"]), _fmt(r["time"]["median"]), f"{100 * r['share']:.1f}")
    tot = rep["operators_total"]
    head = Text(
        f"profile  board {rep['device'].get('board')}  operators total: median {_fmt(tot['median'])} {unit}"
        f" — {rep['clock']['note']}"
    )
    return Group(head, t, ty)


def _fmt(v: float) -> str:
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"
