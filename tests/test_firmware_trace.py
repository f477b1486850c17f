"""The real firmware's per-operator trace (hil_runner's profiler), built
natively against a TFLM tree: the unperturbed firmware's trace equals the
host's on every operator, and a firmware built with HIL_PERTURB_OP=K is
localized to operator K.

Needs a TFLM tree: HIL_TFLM_DIR=/path/to/tflm_tree (reference kernels), as
tests/test_firmware_native.py."""

from __future__ import annotations

import numpy as np
import pytest
from test_firmware_native import NativeDevice, build_for, tflm_native  # noqa: F401 - the fixture

from harness.localize import localize_on_device, model_ops, output_crc, reference_outputs
from harness.model import inspect_model
from harness.protocol.session import DeviceSession
from harness.runtime import prepare_input

pytestmark = [pytest.mark.tflm, pytest.mark.slow]

CAPTURE = "-DHIL_CAPTURE_BYTES=4096"


def _inputs(m, n=3):
    info = inspect_model(m.tflite)
    x = np.load(m.npz)["x"]
    return [[prepare_input(x[i], info.inputs[0])] for i in range(n)]


@pytest.mark.parametrize("which", ["gesture_model", "audio_model"])
def test_native_trace_equals_the_host_on_every_operator(which, request, tflm_native, tmp_path_factory):  # noqa: F811
    m = request.getfixturevalue(which)
    model = m.tflite.read_bytes()
    exe = build_for(m.tflite, tflm_native, tmp_path_factory, defines=(CAPTURE,))
    from harness.build import read_elf

    elf = read_elf(exe)  # what `hil build` reports: 8 bytes per operator, the capture buffer
    assert elf["trace_bytes"] == 8 * len(model_ops(model)) and elf["capture_bytes"] == 4096
    dev = NativeDevice(exe)
    try:
        with DeviceSession(dev.port, timeout=5.0) as s:
            info = s.handshake()
            assert info.traces and info.n_ops == len(model_ops(model)) and info.capture_bytes == 4096
            assert info.tick_hz > 0
            for ins in _inputs(m):
                tr = s.trace(ins)
                want = [output_crc(o) for o in reference_outputs(model, ins)]
                assert tr.crcs == want
                loc = localize_on_device(s, model, ins)
                assert loc.first_divergence is None and loc.invokes == 1
    finally:
        dev.close()


@pytest.mark.timeout(600)
def test_native_perturbed_operator_is_localized(gesture_model, tflm_native, tmp_path_factory, tmp_path, capsys):  # noqa: F811
    import json

    from harness.cli import main

    model = gesture_model.tflite.read_bytes()
    k = 2
    exe = build_for(gesture_model.tflite, tflm_native, tmp_path_factory, defines=(CAPTURE, f"-DHIL_PERTURB_OP={k}"))
    dev = NativeDevice(exe)
    try:
        rj = tmp_path / "r.json"
        argv = ["validate", "--port", dev.port, "--model", str(gesture_model.tflite), "--data", str(gesture_model.npz)]
        rc = main([*argv, "--samples", "8", "--timeout", "5", "--localize", "--report-json", str(rj)])
    finally:
        dev.close()
    assert rc in (0, 1)
    s = json.loads(rj.read_text())["localization"]["samples"][0]
    ops = model_ops(model)
    assert s["first_divergence"] == k and s["ops"][k]["op_type"] == ops[k].op_type
    assert s["ops"][k]["captured"] > 0 and s["ops"][k]["max_lsb"] == 1
    assert f"first divergence: op {k} {ops[k].op_type}" in capsys.readouterr().err
