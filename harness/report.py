"""The drift report of `hil validate` in its four forms: JSON (the schema in
docs/validate.md), JUnit XML (one testcase per gate, for lab CI), a
self-contained HTML page, and a console summary (rich renderables; the CLI
prints them).

Every writer takes the report (`harness.results.ValidationReport`) or its
JSON dict (`to_json`, which is the only serializer) and writes atomically.
In the console a FAIL is also called DRIFT by the CLI; the JSON words are
those of `harness.results.Status`.
"""

from __future__ import annotations

import math
import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.fileio import write_json_atomic, write_text_atomic
from harness.paths import templates_dir


def _as_dict(report) -> dict:
    """Writers take the report object (`harness.results`) or its JSON dict."""
    return report if isinstance(report, dict) else report.to_dict()


SHORT_KERNEL = {"tflm": "TFLM", "litert_ref": "LiteRT reference", "litert": "LiteRT default"}
STATUS_COLOR = {"pass": "green", "fail": "red", "error": "yellow", "skipped": "dim"}


# --------------------------------------------------------------------------- JSON


def write_json(report, path: str | os.PathLike) -> Path:
    write_json_atomic(path, _as_dict(report))
    return Path(path)


# --------------------------------------------------------------------------- JUnit


def _model_stem(report: dict) -> str:
    m = (report.get("settings") or {}).get("model") or "model"
    return Path(m).stem.replace(".", "_") or "model"


def junit_tree(report) -> ET.ElementTree:
    """A JUnit XML document: one <testcase> per gate; drift is <failure>,
    could-not-run is <error>, gates that do not apply are <skipped>."""
    report = _as_dict(report)
    gates = report.get("gates") or []
    counts = {s: sum(1 for g in gates if g["status"] == s) for s in ("fail", "error", "skipped")}
    t = f"{float(report.get('duration_s') or 0.0):.3f}"
    suites = ET.Element(
        "testsuites",
        name="hil validate",
        tests=str(len(gates)),
        failures=str(counts["fail"]),
        errors=str(counts["error"]),
        skipped=str(counts["skipped"]),
        time=t,
    )
    cls = f"hil.validate.{_model_stem(report)}"
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=cls,
        tests=str(len(gates)),
        failures=str(counts["fail"]),
        errors=str(counts["error"]),
        skipped=str(counts["skipped"]),
        time=t,
        timestamp=str(report.get("started") or ""),
        hostname=socket.gethostname(),
    )
    _junit_properties(ET.SubElement(suite, "properties"), report)
    err = report.get("error") or {}
    for g in gates:
        _junit_case(ET.SubElement(suite, "testcase", classname=cls, name=g["name"], time=t), report, g, err)
    ET.indent(suites)
    return ET.ElementTree(suites)


def _junit_properties(props: ET.Element, report: dict) -> None:
    dev = report.get("device") or {}
    model = report.get("model") or {}
    settings = report.get("settings") or {}
    for name, value in (
        ("status", report.get("status")),
        ("port", settings.get("port")),
        ("model", settings.get("model")),
        ("model_sha256", model.get("sha256")),
        ("data", settings.get("data")),
        ("board", dev.get("board")),
        ("firmware", dev.get("firmware")),
        ("samples", f"{report.get('samples_done', 0)}/{report.get('samples_planned', 0)}"),
        ("partial", str(bool(report.get("partial"))).lower()),
        ("verdict", (report.get("triangulation") or {}).get("verdict")),
    ):
        if value is not None:
            ET.SubElement(props, "property", name=name, value=str(value))


def _junit_case(tc: ET.Element, report: dict, g: dict, err: dict) -> None:
    """A gate's testcase: drift is <failure>, could-not-run <error>, not applicable <skipped>."""
    msg = g.get("message") or ""
    if g["status"] == "fail":
        f = ET.SubElement(tc, "failure", message=msg, type="drift")
        f.text = _failure_text(report, g)
    elif g["status"] == "error":
        e = ET.SubElement(tc, "error", message=msg, type=err.get("type") or "Incomplete")
        e.text = " — ".join(x for x in (err.get("message"), err.get("hint")) if x) or msg
    elif g["status"] == "skipped":
        ET.SubElement(tc, "skipped", message=msg)
    out = ET.SubElement(tc, "system-out")
    out.text = f"value={_num(g['value'])} threshold={_num(g['threshold'])} status={g['status']}"


def _failure_text(report: dict, g: dict) -> str:
    lines = [g.get("message") or ""]
    tri = report.get("triangulation") or {}
    if tri.get("verdict"):
        lines.append(f"attribution: {tri['verdict']}")
    for w in (report.get("worst_samples") or [])[:5]:
        lines.append(f"sample {w['index']}: cosine {w['cosine']:.6f}, max LSB {w.get('max_lsb')}")
    return "\n".join(lines)


def write_junit(report: dict, path: str | os.PathLike) -> Path:
    tree = junit_tree(report)
    text = ET.tostring(tree.getroot(), encoding="unicode", xml_declaration=False)
    write_text_atomic(path, '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n")
    return Path(path)


def _num(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.6g}"
    return str(v)


# --------------------------------------------------------------------------- plots (matplotlib)


def _svg(fig) -> str:
    """A matplotlib figure as inline SVG: text kept as text, no date, fixed
    ids, so the same report renders the same bytes."""
    import io

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _plot_context():
    import matplotlib

    return matplotlib.rc_context(
        {
            "svg.fonttype": "none",
            "svg.hashsalt": "tinyhil",
            "font.size": 8,
            "axes.titlesize": 9,
            "axes.titleweight": "bold",
        }
    )


DENSE_POINTS = 400  # above this a scatter becomes a percentile band plus the points that matter
MAX_MARKED = 300  # samples outside the gate drawn (the worst first)
WORST_MARKED = 20  # the worst samples within the gate drawn
BAND_BINS = 120


def _band(ax, pts: list[tuple[int, float]]) -> None:
    import numpy as np

    x = np.array([p[0] for p in pts], dtype=float)
    y = np.array([p[1] for p in pts], dtype=float)
    edges = np.linspace(x.min(), x.max() + 1, BAND_BINS + 1)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, BAND_BINS - 1)
    centers, lo, mid, hi = [], [], [], []
    for b in range(BAND_BINS):
        yb = y[idx == b]
        if yb.size:
            centers.append((edges[b] + edges[b + 1]) / 2)
            p5, p50, p95 = np.percentile(yb, [5, 50, 95])
            lo.append(p5)
            mid.append(p50)
            hi.append(p95)
    ax.fill_between(centers, lo, hi, color="#90caf9", alpha=0.6, linewidth=0, label="5–95th percentile")
    ax.plot(centers, mid, color="#1565c0", linewidth=0.8, label="median")


def svg_scatter(
    values: list[float | None],
    *,
    title: str,
    threshold: float | None = None,
    y_label: str = "",
    width: int = 640,
    height: int = 180,
    integer: bool = False,
) -> str:
    """Per-sample values as dots, the gate's threshold as a dashed line; the
    samples outside the gate in red, the worst ones labelled. Above
    `DENSE_POINTS` samples: a percentile band, the samples outside the gate
    (the `MAX_MARKED` worst) and the `WORST_MARKED` worst within it."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    pts = [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    with _plot_context():
        fig = Figure(figsize=(width / 100, height / 100), dpi=100)
        ax = fig.add_subplot()
        ax.set_title(title, loc="left")
        ax.set_xlabel("sample")
        if y_label:
            ax.set_ylabel(y_label)
        if integer:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.ticklabel_format(axis="y", useOffset=False)

        def outside(v):
            return threshold is not None and ((v > threshold) if integer else (v < threshold))

        bad = [p for p in pts if outside(p[1])]
        good = [p for p in pts if not outside(p[1])]
        if len(pts) > DENSE_POINTS:
            # Thousands of dots cost seconds and megabytes and show nothing a
            # band does not: the 5-95th percentile (and median) per bin, and as
            # dots only the samples that matter (outside the gate, the worst).
            _band(ax, pts)
            bad = sorted(bad, key=lambda p: p[1], reverse=integer)[:MAX_MARKED]
            good = sorted(good, key=lambda p: p[1], reverse=integer)[:WORST_MARKED]
        if good:
            ax.scatter([i for i, _ in good], [v for _, v in good], s=6, color="#1565c0")
        if bad:
            ax.scatter([i for i, _ in bad], [v for _, v in bad], s=10, color="#c62828")
        if threshold is not None:
            ax.axhline(
                threshold, color="#c62828", linestyle="--", linewidth=0.8, label=f"gate {_tick(threshold, integer)}"
            )
        if threshold is not None or len(pts) > DENSE_POINTS:
            ax.legend(loc="best", frameon=False)
        # name the worst samples outside the gate on the plot
        for i, v in sorted(bad, key=lambda p: p[1], reverse=integer)[:3]:
            ax.annotate(f"sample {i}", (i, v), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if not pts:
            ax.text(0.5, 0.5, "no samples", transform=ax.transAxes, ha="center")
        ax.grid(True, linewidth=0.3, alpha=0.5)
        return _svg(fig)


def svg_histogram(hist: dict[str, int], *, title: str, width: int = 360, height: int = 180) -> str:
    """Bars of the signed LSB-difference histogram (log-scaled counts)."""
    from matplotlib.figure import Figure

    def key(k):
        if k.startswith("<="):
            return -1e9
        if k.startswith(">="):
            return 1e9
        return int(k)

    items = sorted(hist.items(), key=lambda kv: key(kv[0])) or [("0", 0)]
    with _plot_context():
        fig = Figure(figsize=(width / 100, height / 100), dpi=100)
        ax = fig.add_subplot()
        ax.set_title(title, loc="left")
        colors = ["#2e7d32" if k == "0" else "#f9a825" if k in ("1", "-1") else "#c62828" for k, _ in items]
        bars = ax.bar([k for k, _ in items], [c for _, c in items], color=colors)
        ax.bar_label(bars, fontsize=7)
        top = max(c for _, c in items)
        if top > 0:
            ax.set_yscale("log")
            ax.set_ylim(0.7, top * 4)  # room for the count above the tallest bar
        ax.set_xlabel("device − reference (LSB)")
        ax.set_ylabel("values")
        return _svg(fig)


def svg_operators(ops: list[dict], *, title: str, width: int = 560, height: int = 200) -> str:
    """Bars per operator: its max |LSB| difference where captured, the
    matching operators green, the diverging red (hatched when not captured)."""
    from matplotlib.figure import Figure

    with _plot_context():
        fig = Figure(figsize=(width / 100, height / 100), dpi=100)
        ax = fig.add_subplot()
        ax.set_title(title, loc="left")
        xs = [o["index"] for o in ops]
        ys = [0.0 if o["crc_match"] else (o["max_lsb"] if o["max_lsb"] is not None else 1.0) for o in ops]
        colors = ["#2e7d32" if o["crc_match"] else "#c62828" for o in ops]
        bars = ax.bar(xs, [max(y, 0.05) for y in ys], color=colors)
        for b, o in zip(bars, ops):
            if not o["crc_match"] and o["max_lsb"] is None:
                b.set_hatch("//")
                b.set_facecolor("white")
                b.set_edgecolor("#c62828")
        ax.set_xticks(xs, [f"{o['index']}\n{o['op_type'][:10]}" for o in ops], fontsize=6)
        ax.set_xlabel("operator (green: output CRC equals the host's; hatched: differs, not captured)")
        ax.set_ylabel("max |LSB| difference")
        return _svg(fig)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _tick(v: float, integer: bool) -> str:
    if integer:
        return str(int(round(v)))
    return f"{v:.6g}"


# --------------------------------------------------------------------------- HTML


def svg_profile(rep: dict) -> str:
    """Horizontal bars: each operator's median time, p99 as a whisker."""
    import numpy as np
    from matplotlib.figure import Figure

    ops = rep["ops"]
    unit = "µs" if rep["clock"]["unit"] == "us" else "ticks"
    with _plot_context():
        fig = Figure(figsize=(6.4, max(1.6, 0.22 * len(ops) + 0.8)), dpi=100)
        ax = fig.add_subplot()
        ax.set_title(f"time per operator (median, p99 whisker; {rep['clock']['kind']} clock)", loc="left")
        ys = np.arange(len(ops))
        med = [o["time"]["median"] for o in ops]
        p99 = [o["time"]["p99"] - o["time"]["median"] for o in ops]
        ax.barh(ys, med, xerr=[np.zeros(len(ops)), p99], color="#1565c0", ecolor="#90a4ae")
        ax.set_yticks(ys, [f"{o['index']} {o['op_type']}" for o in ops], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        return _svg(fig)


def render_html(report) -> str:
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
    env.filters["pct"] = _pct
    report = _as_dict(report)
    samples = report.get("samples") or []
    gates = {g["metric"]: g for g in report.get("gates") or [] if g.get("output") in (0, None)}
    plots = []
    if samples:
        plots.append(
            Markup(
                svg_scatter(
                    [s["cosine"] for s in samples],
                    title="cosine similarity per sample",
                    threshold=(gates.get("cosine_min") or {}).get("threshold"),
                    y_label="cosine",
                )
            )
        )
        if any(s.get("max_lsb") is not None for s in samples):
            plots.append(
                Markup(
                    svg_scatter(
                        [s.get("max_lsb") for s in samples],
                        title="max |LSB| difference per sample",
                        threshold=(gates.get("max_lsb") or {}).get("threshold"),
                        y_label="LSB",
                        integer=True,
                    )
                )
            )
    hists = [
        Markup(svg_histogram(o["lsb"]["histogram"], title=f"output {o['index']}: device − reference (LSB)"))
        for o in report.get("outputs") or []
        if o.get("lsb")
    ]
    loc_plots = [
        Markup(svg_operators(x["ops"], title=f"sample {x['sample']}: device vs host per operator"))
        for x in (report.get("localization") or {}).get("samples", [])
        if x["ops"]
    ]
    prof = report.get("profile")
    profile_chart = Markup(svg_profile(prof)) if prof and prof.get("ops") else ""
    tmpl = env.get_template("validate_report.html.j2")
    return tmpl.render(
        r=report,
        profile_chart=profile_chart,
        plots=plots,
        hists=hists,
        loc_plots=loc_plots,
        colors=STATUS_COLOR,
        loc=report.get("localization"),
    )


def write_html(report: dict, path: str | os.PathLike) -> Path:
    write_text_atomic(path, render_html(report))
    return Path(path)


# --------------------------------------------------------------------------- console


def _summary_head(report: dict):
    from rich.text import Text

    status = report["status"]
    dev = report.get("device") or {}
    head = Text.assemble(
        ("validate ", "bold"),
        (status.upper(), f"bold {STATUS_COLOR.get(status, 'white')}"),
        f"  {report.get('samples_done', 0)}/{report.get('samples_planned', 0)} samples",
    )
    if report.get("partial"):
        head.append("  (partial)", style="yellow")
    if dev:
        head.append(f"  board {dev.get('board')}, firmware {dev.get('firmware')}", style="dim")
    return head


def _table(title: str):
    from rich.table import Table

    return Table(title=title, title_justify="left", show_edge=False, pad_edge=False)


def _gates_table(report: dict):
    from rich.text import Text

    gt = _table("gates")
    for c in ("gate", "value", "threshold", "result"):
        gt.add_column(c, justify="right" if c in ("value", "threshold") else "left")
    for g in report.get("gates") or []:
        gt.add_row(
            g["name"],
            _num(g["value"]),
            f"{g['op']} {_num(g['threshold'])}",
            Text(g["status"].upper(), style=STATUS_COLOR.get(g["status"], "")),
        )
    return gt


def _metrics_table(report: dict):
    outs = report["outputs"]
    mt = _table(f"device vs host ({(report.get('settings') or {}).get('reference_used', '')} kernels)")
    mt.add_column("metric")
    for o in outs:
        mt.add_column(f"output {o['index']} {o['dtype']}{tuple(o['shape'])}", justify="right")

    def row(label, fn):
        mt.add_row(label, *[fn(o) for o in outs])

    row("cosine (worst / mean)", lambda o: f"{_num(o['float']['cosine_min'])} / {_num(o['float']['cosine_mean'])}")
    row("MSE / MAE", lambda o: f"{_num(o['float']['mse'])} / {_num(o['float']['mae'])}")
    row("max |error| / Pearson r", lambda o: f"{_num(o['float']['max_abs_error'])} / {_num(o['float']['pearson_r'])}")
    row(
        "LSB exact / ±1 / >1",
        lambda o: f"{o['lsb']['exact']} / {o['lsb']['off_by_one']} / {o['lsb']['over_one']}" if o.get("lsb") else "n/a",
    )
    row("max LSB", lambda o: str(o["lsb"]["max_lsb"]) if o.get("lsb") else "n/a")
    row("bit-exact samples", lambda o: f"{o['bit_exact_samples']}/{o['samples']}")
    if any(o.get("classifier") for o in outs):
        row(
            "top-1 agreement / flips",
            lambda o: (
                f"{_num(o['classifier']['top1_agreement'])} / {len(o['classifier']['flips'])}"
                if o.get("classifier")
                else "n/a"
            ),
        )
    return mt


def _triangulation_table(tri: dict):
    tt = _table("triangulation: which host kernels the device matches bit-exactly")
    for c in ("kernels", "source", "bit-exact samples", "max LSB", "host = oracle"):
        tt.add_column(c, justify="left" if c in ("kernels", "source") else "right")
    for k, v in tri["kernels"].items():
        if not v.get("available"):
            tt.add_row(SHORT_KERNEL.get(k, k), "unavailable", "", "", "")
            continue
        mark = " (oracle)" if k == tri["oracle"] else ""
        same = v.get("same_as_oracle_samples")
        tt.add_row(
            SHORT_KERNEL.get(k, k) + mark,
            v.get("source") or "",
            f"{v['bit_exact_samples']}/{tri['samples']}",
            _num(v.get("max_lsb")),
            "" if same is None else f"{same}/{tri['samples']}",
        )
    return tt


def _summary_lines(report: dict) -> list:
    """Timing, link, worst samples and notes, one line each."""
    from rich.text import Text

    parts = []
    tm = report.get("timing")
    if tm and tm.get("invoke_us"):
        u = tm["invoke_us"]
        line = (
            f"invoke: min {u['min']:.0f} µs, median {u['median']:.0f} µs, p99 {u['p99']:.0f} µs "
            f"({'HOST time — simulated board' if tm['clock'] == 'host' else 'device clock'})"
        )
        if tm.get("cycles"):
            line += f"; cycles median {tm['cycles']['median']:.0f}"
        parts.append(Text(line))
    ln = report.get("link")
    if ln and ln.get("elapsed_s"):
        parts.append(
            Text(
                f"link: {ln['bytes_sent'] + ln['bytes_received']} bytes in {ln['elapsed_s']:.2f} s, "
                f"wire efficiency {_pct(ln.get('efficiency'))}, "
                f"{_pct(ln.get('fraction_of_line_rate'))} of the {ln['baud']} baud line, "
                f"{ln.get('retransmits', 0)} retransmits",
                style="dim",
            )
        )
    worst = report.get("worst_samples") or []
    if worst:
        parts.append(
            Text(
                "worst samples: "
                + ", ".join(f"#{w['index']} (cos {w['cosine']:.4f}, {w.get('max_lsb')} LSB)" for w in worst[:5])
            )
        )
    for note in report.get("notes") or []:
        parts.append(Text(f"note: {note}", style="dim"))
    return parts


def summary(report):
    """Rich renderables summarising the report (the CLI prints them)."""
    from rich.console import Group
    from rich.text import Text

    report = _as_dict(report)
    parts = [_summary_head(report), _gates_table(report)]
    if report.get("outputs"):
        parts.append(_metrics_table(report))
    tri = report.get("triangulation")
    if tri:
        parts.append(_triangulation_table(tri))
        parts.append(Text(f"→ {tri['verdict']}", style="italic"))
    prof = report.get("profile")
    if prof and prof.get("ops"):
        parts.append(_slowest_ops_table(prof))
    parts += _summary_lines(report)
    return Group(*parts)


def _slowest_ops_table(p: dict, n: int = 5):
    """The `n` operators that cost the most time (the HTML has them all)."""
    unit = "µs" if p["clock"]["unit"] == "us" else "ticks"
    t = _table(f"slowest operators ({unit}, {p['clock']['kind']} clock, {p['samples']} samples)")
    for col in ("op", "type", "median", "p99", "% of invoke"):
        t.add_column(col, justify="left" if col == "type" else "right")
    for o in sorted(p["ops"], key=lambda o: -o["share"])[:n]:
        s = o["time"]
        t.add_row(str(o["index"]), o["op_type"], f"{s['median']:.1f}", f"{s['p99']:.1f}", f"{100 * o['share']:.1f}")
    return t
