"""A lab's model tests: every model below, on every board of the lab.

Copy this folder into your lab's repository, list your models in MODELS and
run it (docs/pytest.md):

    pytest examples/lab_ci --hil-lab lab.yaml -n 4 --junitxml=hil-junit.xml --hil-out hil-report

Without a board configured every test is skipped with the instruction.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(os.environ.get("HIL_MODELS_DIR", Path(__file__).parent / "models"))

# model -> its validation data (written by `hil convert` next to the .tflite)
MODELS = {
    "kws": (HERE / "kws_quantized.tflite", HERE / "kws_quantized_validation_data.npz"),
    "gesture": (HERE / "gesture_quantized.tflite", HERE / "gesture_quantized_validation_data.npz"),
}


@pytest.fixture(params=sorted(MODELS), ids=str)
def model(request):
    """One model of MODELS (tests then run per board × model)."""
    tflite, data = MODELS[request.param]
    if not tflite.is_file():
        pytest.skip(f"{tflite} is missing: run `hil convert` for it, or set HIL_MODELS_DIR")
    return tflite, data


@pytest.fixture
def flashed(model, hil_flash):
    """The board holding the model. Flashing in a fixture: a board that cannot
    be reached or flashed makes the test an ERROR, not a FAIL."""
    return hil_flash(model[0])


def test_bit_exact_to_tflm(flashed, model, hil_validate):
    """The device computes what TFLM computes on the host, to the last bit."""
    result = hil_validate(*model, max_lsb=0)
    assert result.passed  # on failure: the one-line verdict (gates, whose drift it is)


def test_within_tolerance_with_cmsis_nn(flashed, model, hil_validate):
    """Optimised kernels may differ by a step; cosine and top-1 must hold."""
    result = hil_validate(*model, max_lsb=2, min_cosine=0.995, min_top1=0.99)
    assert result.passed


@pytest.mark.hil(tags=["nightly"])
def test_latency_budget(flashed, model, hil_validate):
    """Only on the boards tagged nightly in lab.yaml: the median inference time."""
    result = hil_validate(*model, samples=32)
    assert result.passed
    median_us = result.timing["invoke_us"]["median"]
    assert median_us < 20_000, f"{result.instance}: median invoke {median_us:.0f} µs"


@pytest.mark.hil(board="nucleo_*")
def test_link_echoes_a_frame(flashed, hil_session):
    """The protocol session, for a check of one's own (here on the STM32N6 boards only)."""
    payload = bytes(range(64))
    assert hil_session.ping(payload) == payload
