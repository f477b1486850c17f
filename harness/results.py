"""The typed results of the stages: a status as Zephyr twister keeps them
apart, and the reports of `convert` and `validate` as dataclasses.

`to_json(report)` is the one serializer: it turns a report into the JSON
object of its documented schema (harness/schemas/*.schema.json; the fields
in docs/convert.md and docs/validate.md). `harness.report` renders reports;
`schema(name)` loads a schema file.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from harness.errors import HilError


class Status(str, enum.Enum):
    """PASS: the thing is right. FAIL: it is wrong (a validation shows it to
    the user as DRIFT). ERROR: it could not be decided (config, build, flash,
    link). SKIPPED: the check does not apply. Values are the JSON words."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value

    @property
    def exit_code(self) -> int:
        """0 pass, 1 only for a failed gate, 2 for everything else."""
        return {Status.PASS: 0, Status.FAIL: 1}.get(self, 2)


# --------------------------------------------------------------------------- validate


@dataclass
class ErrorInfo:
    """Why a run could not finish: the `HilError` class (or "Interrupted"),
    its message and hint."""

    type: str
    message: str
    hint: str | None = None

    @classmethod
    def of(cls, exc: HilError) -> ErrorInfo:
        return cls(type(exc).__name__, exc.message, exc.hint)


@dataclass
class GateResult:
    """One tolerance checked on one output."""

    name: str
    metric: str
    output: int | None
    op: str  # ">=" | "<="
    threshold: float | int
    value: float | int | None
    status: Status = Status.ERROR
    message: str = ""


def _no_json(**kw):
    return field(metadata={"json": False}, **kw)


@dataclass
class ValidationReport:
    """The outcome of `validate`; `to_dict()` (= `to_json`) is the JSON
    report `tinyhil-validate-report/1` (docs/validate.md). The sections that
    are plain dicts are specified by the schema file."""

    schema: str
    tool: dict
    settings: dict
    started: str
    status: Status = Status.ERROR
    partial: bool = False
    interrupted: bool = False
    error_info: ErrorInfo | None = field(default=None, metadata={"key": "error"})
    duration_s: float | None = None
    model: dict | None = None
    data: dict | None = None
    device: dict | None = None
    samples_planned: int = 0
    samples_done: int = 0
    gates: list[GateResult] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    triangulation: dict | None = None
    timing: dict | None = None
    link: dict | None = None
    worst_samples: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    device_logs: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    localization: dict | None = None  # per-operator drift localization (harness.localize), when it ran
    profile: dict | None = None  # per-operator time of the traced samples (harness.profile.summarize)
    # The exception that ended the run (the CLI raises it for its one line).
    error: HilError | None = _no_json(default=None, repr=False, compare=False)

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    def to_dict(self) -> dict:
        return to_json(self)


# --------------------------------------------------------------------------- convert


@dataclass
class ConvertReport:
    """The outcome of `convert`: `tinyhil-convert-report/1` (docs/convert.md).
    `status` is PASS or FAIL (the similarity gate); a conversion that cannot
    run raises instead of reporting."""

    schema: str
    tool: dict
    status: Status
    settings: dict
    outputs: dict
    model: dict
    sizes: dict
    data: dict | None
    float_baseline: dict | None
    metrics: dict | None
    host_kernels: dict
    gate: dict
    rounds: list[dict]
    timing_s: dict
    notes: list[str]

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    def to_dict(self) -> dict:
        return to_json(self)


# --------------------------------------------------------------------------- serialization


def _plain(v):
    """JSON-ready value: enums as their words, dataclasses as objects, NumPy
    scalars and arrays as numbers and lists."""
    if isinstance(v, enum.Enum):
        return v.value
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    return v


def to_json(report: ValidationReport | ConvertReport) -> dict:
    """The report as the JSON object of its schema — the only serializer."""
    out: dict = {}
    for f in dataclasses.fields(report):
        if not f.metadata.get("json", True):
            continue
        out[f.metadata.get("key", f.name)] = _plain(getattr(report, f.name))
        if f.name == "status":
            if isinstance(report, ValidationReport):
                out["exit_code"] = report.exit_code
            else:
                out["passed"] = report.passed
    return out


SCHEMAS = {"validate": "validate_report.schema.json", "convert": "convert_report.schema.json"}


def schema(name: str) -> dict:
    """The JSON Schema of a report ("validate" or "convert")."""
    text = resources.files("harness").joinpath("schemas", SCHEMAS[name]).read_text(encoding="utf-8")
    return json.loads(text)
