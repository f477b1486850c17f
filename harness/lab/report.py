"""The report set of `hil lab run`: a matrix of boards × models (PASS /
DRIFT / ERROR with the headline figure) as HTML linking each board's own
validate report, JSON (schema `tinyhil-lab-report/1`, documented in
docs/lab.md), and JUnit XML with one testsuite per board × model.
"""

from __future__ import annotations

import html
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from harness import __version__
from harness.fileio import write_json_atomic, write_text_atomic

SCHEMA = "tinyhil-lab-report/1"
COLORS = {"PASS": "#1a7f37", "DRIFT": "#cf222e", "ERROR": "#9a6700"}


def to_dict(run) -> dict:
    return {
        "schema": SCHEMA,
        "tool": {"name": "tinyhil", "version": __version__, "command": "lab run"},
        "lab": run.lab,
        "started": run.started,
        "duration_s": run.duration_s,
        "interrupted": run.interrupted,
        "exit_code": run.exit_code,
        "counts": run.counts(),
        "instances": sorted({c.instance for c in run.cells}, key=[c.instance for c in run.cells].index),
        "models": [{"name": s.name, "model": str(s.model), "data": str(s.data)} for s in run.models],
        "cells": [c.to_dict() for c in run.cells],
        "notes": list(run.notes),
    }


def _figure(c: dict) -> str:
    h = c.get("headline") or {}
    if c["status"] == "ERROR" and not h.get("samples_done"):
        return c.get("error") or "could not run"
    parts = []
    if h.get("cosine_min") is not None:
        parts.append(f"cos {h['cosine_min']:.4f}")
    if h.get("max_lsb") is not None:
        parts.append(f"max {h['max_lsb']} LSB")
    if h.get("samples_planned"):
        parts.append(f"{h.get('samples_done', 0)}/{h['samples_planned']} samples")
    if c["status"] == "ERROR" and c.get("error"):
        parts.append(c["error"])
    return ", ".join(parts)


def render_html(d: dict) -> str:
    e = html.escape
    models = [m["name"] for m in d["models"]]
    cells = {(c["instance"], c["model"]): c for c in d["cells"]}
    boards = {c["instance"]: c["board"] for c in d["cells"]}
    rows = []
    for inst in d["instances"]:
        tds = [f"<th>{e(inst)}<br><small>{e(boards.get(inst, ''))}</small></th>"]
        for m in models:
            c = cells.get((inst, m))
            if c is None:
                tds.append("<td></td>")
                continue
            label = f'<b style="color:{COLORS[c["status"]]}">{c["status"]}</b>'
            link = c.get("reports", {}).get("html")
            if link:
                label = f'<a href="{e(link)}">{label}</a>'
            extra = " · power-cycled" if c.get("power_cycled") else ""
            tds.append(f"<td>{label}<br><small>{e(_figure(c))}{extra}</small></td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    counts = ", ".join(f"{n} {s}" for s, n in d["counts"].items())
    head = "".join(f"<th>{e(m)}</th>" for m in models)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tinyhil lab run</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#1f2328}}
table{{border-collapse:collapse}} td,th{{border:1px solid #d0d7de;padding:.5em .8em;text-align:left;vertical-align:top}}
small{{color:#57606a}}
</style></head><body>
<h1>tinyhil lab run</h1>
<p>{e(d["lab"])} · started {e(d["started"])} · {d["duration_s"]:.1f} s · {e(counts)}
{" · <b>interrupted</b>" if d["interrupted"] else ""} · exit code {d["exit_code"]}</p>
<table><tr><th>board \\ model</th>{head}</tr>
{"".join(rows)}
</table>
<p><small>PASS: every gate within tolerance. DRIFT: a gate was evaluated and failed.
ERROR: could not run (lock, flash, port, device). Each cell links the board's own validate report.</small></p>
</body></html>
"""


def junit_tree(d: dict) -> ET.ElementTree:
    """One testsuite per board × model; its testcases are the gates of that
    board's validate run (drift = failure), or one errored testcase when the
    cell could not run."""
    root = ET.Element("testsuites", name="hil lab run")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for c in d["cells"]:
        rep = None
        path = (c.get("reports") or {}).get("json")
        if path and d.get("_out"):
            import json

            try:
                rep = json.loads((Path(d["_out"]) / path).read_text())
            except (OSError, ValueError):
                rep = None
        gates = (rep or {}).get("gates") or []
        suite = ET.SubElement(
            root, "testsuite", name=f"{c['instance']}.{c['model']}", time=f"{float(c.get('duration_s') or 0):.3f}"
        )
        ET.SubElement(ET.SubElement(suite, "properties"), "property", name="board", value=c["board"])
        n = fails = errs = 0
        cls = f"hil.lab.{c['instance']}.{c['model']}"
        if c["status"] == "ERROR" and not gates:
            gates = [{"name": "run", "status": "error"}]
        for g in gates:
            tc = ET.SubElement(suite, "testcase", classname=cls, name=g["name"])
            n += 1
            if g["status"] == "fail":
                fails += 1
                ET.SubElement(
                    tc, "failure", message=f"{g['name']}: {g.get('value')} {g.get('op', '')} {g.get('threshold')}"
                )
            elif g["status"] == "error":
                errs += 1
                ET.SubElement(tc, "error", message=c.get("error") or "could not run").text = c.get("hint") or ""
            elif g["status"] == "skipped":
                ET.SubElement(tc, "skipped", message=g.get("skip_reason") or "does not apply")
        if c["status"] == "ERROR" and errs == 0:  # gates decided on a partial run: the run itself errored
            tc = ET.SubElement(suite, "testcase", classname=cls, name="run")
            ET.SubElement(tc, "error", message=c.get("error") or "could not run")
            n, errs = n + 1, errs + 1
        suite.set("tests", str(n))
        suite.set("failures", str(fails))
        suite.set("errors", str(errs))
        totals["tests"] += n
        totals["failures"] += fails
        totals["errors"] += errs
    for k, v in totals.items():
        root.set(k, str(v))
    return ET.ElementTree(root)


def write_reports(run, out: str | os.PathLike | None = None) -> dict[str, Path]:
    """lab.json, lab.html, lab-junit.xml in the run's folder."""
    out = Path(out or run.out)
    d = to_dict(run)
    paths = {"json": out / "lab.json", "html": out / "lab.html", "junit": out / "lab-junit.xml"}
    write_json_atomic(paths["json"], d)
    write_text_atomic(paths["html"], render_html(d))
    tree = junit_tree({**d, "_out": str(out)})
    text = ET.tostring(tree.getroot(), encoding="unicode")
    write_text_atomic(paths["junit"], '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n")
    return paths


def summary_table(run):
    """A rich table of the matrix for the console."""
    from rich.table import Table
    from rich.text import Text

    d = to_dict(run)
    t = Table(title="lab run: boards × models", title_justify="left")
    t.add_column("board")
    for m in d["models"]:
        t.add_column(m["name"])
    cells = {(c["instance"], c["model"]): c for c in d["cells"]}
    style = {"PASS": "bold green", "DRIFT": "bold red", "ERROR": "bold yellow"}
    for inst in d["instances"]:
        row = [inst]
        for m in d["models"]:
            c = cells.get((inst, m["name"]))
            row.append(Text.assemble((c["status"], style[c["status"]]), "  ", _figure(c)) if c else Text(""))
        t.add_row(*row)
    return t
