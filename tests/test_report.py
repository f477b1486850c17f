"""The report writers: JSON schema keys, JUnit XML (one testcase per gate;
drift = failure, could-not-run = error), HTML holding the numbers, the
console summary."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from helpers.fakes import FakeSession

from harness.errors import DeviceError
from harness.report import (
    junit_tree,
    render_html,
    summary,
    svg_histogram,
    svg_scatter,
    write_html,
    write_json,
    write_junit,
)
from harness.testing.models import tiny_models
from harness.validate import SCHEMA, Gates, validate

TOP_KEYS = {
    "schema",
    "tool",
    "status",
    "exit_code",
    "partial",
    "interrupted",
    "error",
    "started",
    "duration_s",
    "settings",
    "model",
    "data",
    "device",
    "samples_planned",
    "samples_done",
    "gates",
    "outputs",
    "triangulation",
    "timing",
    "link",
    "worst_samples",
    "samples",
    "device_logs",
    "notes",
    "localization",
    "profile",
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    m = tiny_models()["float_io"]
    folder = tmp_path_factory.mktemp("rep")
    d = folder / "x.npy"
    np.save(d, np.random.default_rng(3).normal(size=(10, 300)).astype(np.float32))

    def drift(i, outs):
        return [outs[0] + np.float32(3 / 256)] if i == 2 else outs  # one sample 3 LSB off

    out = {
        "pass": validate("fake://", m, d, gates=Gates(min_top1=0.5), session_factory=FakeSession(m)),
        "fail": validate("fake://", m, d, session_factory=FakeSession(m, perturb=drift)),
        "error": validate(
            "fake://",
            m,
            d,
            session_factory=FakeSession(
                m, fail_at=0, fail_with=DeviceError("port /dev/x is busy", "close the other program")
            ),
        ),
        "partial": validate("fake://", m, d, session_factory=FakeSession(m, fail_at=4, fail_with=KeyboardInterrupt())),
    }
    return {k: v.to_dict() for k, v in out.items()}


def test_json_schema_keys(reports, tmp_path):
    for name, r in reports.items():
        p = write_json(r, tmp_path / f"{name}.json")
        back = json.loads(p.read_text())
        assert set(back) == TOP_KEYS, name
        assert back["schema"] == SCHEMA
    r = reports["pass"]
    o = r["outputs"][0]
    assert set(o["float"]) == {"cosine_mean", "cosine_min", "mse", "mae", "pearson_r", "max_abs_error"}
    assert set(o["lsb"]) >= {"scale", "zero_point", "source", "exact", "off_by_one", "over_one", "max_lsb", "histogram"}
    assert o["lsb"]["source"].startswith("dequantize input")
    assert set(r["triangulation"]["kernels"]) == {"tflm", "litert_ref", "litert"}
    assert set(r["samples"][0]) >= {"index", "cosine", "max_lsb", "bit_exact", "invoke_us", "cycles"}
    assert {g["status"] for g in r["gates"]} == {"pass"} and len(r["gates"]) == 3


def _junit(r):
    root = ET.fromstring(ET.tostring(junit_tree(r).getroot()))
    cases = root.findall("./testsuite/testcase")
    return root, cases


def test_junit_one_testcase_per_gate(reports, tmp_path):
    for name, r in reports.items():
        p = write_junit(r, tmp_path / f"{name}.xml")
        root = ET.parse(p).getroot()  # parses
        cases = root.findall("./testsuite/testcase")
        assert len(cases) == len(r["gates"]) and [c.get("name") for c in cases] == [g["name"] for g in r["gates"]]
        assert int(root.get("tests")) == len(cases)
    root, cases = _junit(reports["pass"])
    assert all(c.find("failure") is None and c.find("error") is None for c in cases)


def test_junit_drift_is_failure_and_no_run_is_error(reports):
    root, cases = _junit(reports["fail"])
    by = {c.get("name"): c for c in cases}
    assert by["max_lsb"].find("failure") is not None and by["max_lsb"].find("error") is None
    assert "3" in by["max_lsb"].find("failure").get("message")
    assert root.get("failures") == "1" and root.get("errors") == "0"
    root, cases = _junit(reports["error"])
    assert all(c.find("error") is not None and c.find("failure") is None for c in cases)
    assert "busy" in cases[0].find("error").text and root.get("errors") == str(len(cases))
    root, cases = _junit(reports["partial"])
    assert all(c.find("error") is not None for c in cases)
    assert "4 of 10" in cases[0].find("error").get("message")


def test_html_holds_the_numbers(reports, tmp_path):
    r = reports["fail"]
    p = write_html(r, tmp_path / "r.html")
    text = p.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "http" not in text.split("<svg")[0].lower()
    assert "FAIL" in text and r["model"]["sha256"] in text
    o = r["outputs"][0]
    assert f">{o['lsb']['over_one']}<" in text and f">{o['lsb']['exact']}<" in text
    assert "HOST time" in text  # the fake says invoke_us is host time (flag bit 1)
    assert "sample 2" in text  # the worst sample is named on the plot
    err = render_html(reports["error"])
    assert "busy" in err and "ERROR" in err


def test_plots_are_well_formed_deterministic_svg():
    for s in (
        svg_scatter([1.0, 0.99, None, 0.5], title="a <b>", threshold=0.9),
        svg_scatter([0, 3, 1], title="lsb", threshold=1, integer=True),
        svg_histogram({"-1": 2, "0": 100, ">=16": 1}, title="h"),
        svg_histogram({}, title="empty"),
    ):
        ET.fromstring(s)
    a = svg_scatter([1.0, 0.5, 0.97], title="cos", threshold=0.9)
    assert a == svg_scatter([1.0, 0.5, 0.97], title="cos", threshold=0.9)  # same report, same bytes
    assert "a &lt;b&gt;" in svg_scatter([1.0], title="a <b>")  # text stays text, escaped
    assert "sample 1" in a and "sample 2" not in a  # only samples outside the gate named


def test_console_summary_renders(reports):
    from rich.console import Console

    c = Console(width=100, record=True)
    c.print(summary(reports["fail"]))
    text = c.export_text()
    assert "FAIL" in text and "max_lsb" in text and "triangulation" in text
    c = Console(width=100, record=True)
    c.print(summary(reports["partial"]))
    assert "partial" in c.export_text()


def test_a_dense_scatter_is_a_band_and_the_points_that_matter():
    from harness import report as rp

    rng = np.random.default_rng(0)
    vals = list(1 - np.abs(rng.normal(0, 1e-4, 5000)))
    vals[1234] = 0.5  # the one sample outside the gate
    svg = rp.svg_scatter(vals, title="cosine", threshold=0.99)
    assert "5–95th percentile" in svg and "sample 1234" in svg
    sparse = rp.svg_scatter(vals[: rp.DENSE_POINTS], title="cosine", threshold=0.99)
    assert "percentile" not in sparse
    assert len(svg) < 200_000  # every dot drawn would be ~1 MB
