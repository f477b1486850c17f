"""Shared session fixtures: the two bundled examples, built and converted
once per test session.

Other test modules use these by name (keep names and attributes stable):

- ``gesture_example`` / ``audio_example``: `harness.examples.ExamplePaths`
  (``keras``, ``config``, ``data``, ``class_names``, ``out_dir``).
- ``gesture_model`` / ``audio_model``: `ConvertedModel` with ``tflite``,
  ``npz``, ``keras``, ``config``, ``report`` (Paths) and ``result`` (the
  `harness.convert.ConvertResult`); it is also a tuple whose first two items
  are ``(tflite, npz)``.

Fixtures that only one area needs belong in a conftest.py of a sub-folder,
not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import pytest

# pytester for tests/test_pytest_plugin.py; tinyhil's own plugin for tests/test_hardware.py (by hand
# until tinyhil is installed with its pytest11 entry point, which loads it by itself).
_EP = any(e.name == "tinyhil" for e in __import__("importlib.metadata").metadata.entry_points(group="pytest11"))
pytest_plugins = ["pytester", *([] if _EP else ["harness.pytest_plugin"])]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Small enough to keep the session fast, large enough for stable metrics.
FIXTURE_NUM_SAMPLES = 64
FIXTURE_VALIDATE_SAMPLES = 32


class ConvertedModel(NamedTuple):
    tflite: Path
    npz: Path
    keras: Path
    config: Path
    report: Path
    result: object


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("examples")


def _example(name: str, root: Path):
    from harness.examples import build_example

    return build_example(name, root / name, seed=0)


def _converted(ex, root: Path) -> ConvertedModel:
    from harness.convert import convert

    out = root / "converted" / f"{ex.name}_quantized.tflite"
    report = out.with_name(f"{ex.name}_report.json")
    res = convert(
        ex.keras,
        model_config=ex.config,
        output_path=out,
        data_path_train=ex.data,
        num_samples=FIXTURE_NUM_SAMPLES,
        validate_samples=FIXTURE_VALIDATE_SAMPLES,
        report_json=report,
        seed=0,
    )
    return ConvertedModel(tflite=res.tflite, npz=res.npz, keras=ex.keras, config=ex.config, report=report, result=res)


@pytest.fixture(scope="session")
def gesture_example(examples_dir):
    return _example("gesture", examples_dir)


@pytest.fixture(scope="session")
def audio_example(examples_dir):
    return _example("audio", examples_dir)


@pytest.fixture(scope="session")
def gesture_model(gesture_example, examples_dir) -> ConvertedModel:
    return _converted(gesture_example, examples_dir / "gesture")


@pytest.fixture(scope="session")
def audio_model(audio_example, examples_dir) -> ConvertedModel:
    return _converted(audio_example, examples_dir / "audio")


@pytest.fixture(scope="session", autouse=True)
def _reports_match_their_schema():
    """Every report the suite produces goes through `harness.results.to_json`
    (the one serializer): check each against its JSON Schema file there."""
    import jsonschema

    from harness import results

    plain = results.to_json
    checkers = {n: jsonschema.Draft202012Validator(results.schema(n)) for n in results.SCHEMAS}

    def checked(report):
        d = plain(report)
        checkers["validate" if isinstance(report, results.ValidationReport) else "convert"].validate(d)
        return d

    results.to_json = checked
    yield
    results.to_json = plain
