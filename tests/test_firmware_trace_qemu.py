"""The real firmware's per-operator trace on the emulated Cortex-M55 (QEMU
mps3-an547, CMSIS-NN kernels): the unperturbed firmware's CRCs equal the
host's TFLM reference on every operator, for both examples and MLPerf Tiny's
four reference architectures.

Needs a CMSIS-NN Cortex-M55 TFLM tree (HIL_TFLM_M55_DIR=/path/to/tflm_tree,
see docs/build.md) and qemu-system-arm. The first build compiles the tree
(minutes on two cores); the others reuse it."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from harness.build import build
from harness.flash import flash
from harness.localize import model_ops, output_crc, reference_outputs
from harness.model import inspect_model
from harness.protocol.session import DeviceSession
from harness.runtime import prepare_input
from harness.testing.mlperf_tiny import ARCHITECTURES, mlperf_tiny_models
from harness.valdata import npz_path_for

pytestmark = [pytest.mark.tflm, pytest.mark.qemu, pytest.mark.slow]


@pytest.fixture(scope="session")
def m55_tree():
    tree = os.environ.get("HIL_TFLM_M55_DIR")
    if not tree:
        pytest.skip(
            "needs a CMSIS-NN Cortex-M55 TFLM tree: set HIL_TFLM_M55_DIR=/path/to/tflm_tree (see docs/build.md)"
        )
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm is not installed (apt-get install qemu-system-arm)")
    return tree


def _model(request, name):
    """(tflite, validation npz) of an example fixture or an MLPerf Tiny model."""
    if name in ARCHITECTURES:
        tflite = mlperf_tiny_models([name])[name]
        return tflite, npz_path_for(tflite)
    m = request.getfixturevalue(name)
    return m.tflite, m.npz


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", ["gesture_model", "audio_model", *ARCHITECTURES])
def test_qemu_trace_equals_the_host_on_every_operator(name, request, m55_tree, tmp_path_factory):
    tflite, npz = _model(request, name)
    model = tflite.read_bytes()
    ops = model_ops(model)
    res = build("qemu_m55", tflite, tflm_dir=m55_tree, out=tmp_path_factory.mktemp(f"qemu_{name}"))
    assert res.trace_bytes == 8 * len(ops)
    info = inspect_model(tflite)
    x = np.load(npz)["x"]
    dev = flash("qemu_m55", elf=res.elf)
    try:
        with DeviceSession(dev.port, timeout=5.0) as s:
            assert s.handshake().n_ops == len(ops)
            for i in range(2):
                ins = [prepare_input(x[i], info.inputs[0])]
                ref = reference_outputs(model, ins)
                tr = s.trace(ins)
                differ = [(k, ops[k].op_type) for k, o in enumerate(ref) if tr.crcs[k] != output_crc(o)]
                assert len(tr.crcs) == len(ops) and differ == []
                assert tr.result.outputs[0].tobytes() == ref[-1][0].tobytes()
    finally:
        dev.stop()
