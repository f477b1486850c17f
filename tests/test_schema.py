"""The report schemas (harness/schemas/*.schema.json): valid JSON Schema,
met by reports of every status, and able to fail. (Every report the rest of
the suite produces is checked too, by a fixture in conftest.py.)"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from helpers.fakes import FakeSession

from harness import results
from harness.errors import DeviceError
from harness.results import Status, schema, to_json
from harness.testing.models import tiny_models
from harness.validate import Gates, validate


def _check(report: dict, name: str) -> None:
    jsonschema.Draft202012Validator(schema(name)).validate(report)


@pytest.mark.parametrize("name", sorted(results.SCHEMAS))
def test_schema_files_are_valid_json_schema(name):
    jsonschema.Draft202012Validator.check_schema(schema(name))


def _drift(i, outs):
    return [outs[0] + np.float32(3 / 256)] if i == 2 else outs


@pytest.fixture(scope="module")
def validate_reports(tmp_path_factory):
    m = tiny_models()["float_io"]
    d = tmp_path_factory.mktemp("schema") / "x.npy"
    np.save(d, np.random.default_rng(3).normal(size=(8, 300)).astype(np.float32))
    busy = DeviceError("port /dev/x is busy", "close the other program")
    return {
        "pass": validate("fake://", m, d, gates=Gates(min_top1=0.5), session_factory=FakeSession(m)),
        "fail": validate("fake://", m, d, session_factory=FakeSession(m, perturb=_drift)),
        "error": validate("fake://", m, d, session_factory=FakeSession(m, fail_at=0, fail_with=busy)),
        "partial": validate("fake://", m, d, session_factory=FakeSession(m, fail_at=4, fail_with=KeyboardInterrupt())),
        "no_model": validate("fake://", d.with_name("none.tflite"), d, session_factory=FakeSession(m)),
    }


@pytest.mark.parametrize("case", ["pass", "fail", "error", "partial", "no_model"])
def test_every_validate_status_meets_the_schema(validate_reports, case):
    rep = validate_reports[case]
    d = to_json(rep)
    _check(json.loads(json.dumps(d)), "validate")
    want = {"pass": Status.PASS, "fail": Status.FAIL}.get(case, Status.ERROR)
    assert rep.status is want and d["status"] == want.value and d["exit_code"] == want.exit_code


def test_gate_statuses_are_the_four_words(validate_reports):
    seen = {g["status"] for r in validate_reports.values() for g in to_json(r)["gates"]}
    assert seen <= {s.value for s in Status} and {"pass", "fail", "error"} <= seen


def test_a_broken_validate_report_fails_the_schema(validate_reports):
    d = to_json(validate_reports["pass"])
    for broken in ({**d, "status": "drift"}, {**d, "exit_code": 3}, {k: v for k, v in d.items() if k != "gates"}):
        with pytest.raises(jsonschema.ValidationError):
            _check(broken, "validate")
    gates = [{**d["gates"][0], "status": "ok"}]
    with pytest.raises(jsonschema.ValidationError):
        _check({**d, "gates": gates}, "validate")


def test_the_suite_checks_what_to_json_produces(validate_reports):
    """The conftest fixture is active: a report that breaks its schema fails
    where it is serialized."""
    rep = validate_reports["pass"]
    saved = rep.samples_done
    rep.samples_done = "all"
    try:
        with pytest.raises(jsonschema.ValidationError):
            rep.to_dict()
    finally:
        rep.samples_done = saved


def test_convert_reports_meet_the_schema(gesture_model):
    on_disk = json.loads(gesture_model.report.read_text())
    _check(on_disk, "convert")
    assert on_disk["status"] == "pass" and on_disk["passed"] is True
    assert gesture_model.result.convert_report.status is Status.PASS
    assert to_json(gesture_model.result.convert_report) == gesture_model.result.report
    with pytest.raises(jsonschema.ValidationError):
        _check({**on_disk, "status": "error"}, "convert")


def test_status_exit_codes():
    assert [s.exit_code for s in Status] == [0, 1, 2, 2]
    assert str(Status.FAIL) == "fail" and Status("skipped") is Status.SKIPPED
