"""`hil demo` end to end: example -> convert -> codegen -> simulated board
on a real pty -> validate -> reports; then a re-run that reuses the
finished steps."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from harness.cli import main
from harness.model import inspect_model


@pytest.mark.slow
def test_demo_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rep = out / "reports" / "validation.json"
    said = cap.out + cap.err
    r = json.loads(rep.read_text())
    assert r["status"] == "pass" and r["samples_done"] > 100 and r["settings"]["port"].startswith("/dev/pts/")
    assert r["triangulation"]["matches"][0] == "tflm"
    # each product is what the next step used, and the run said where it is
    tflite = out / "model" / "gesture_quantized.tflite"
    model = inspect_model(tflite)
    assert str(tflite) in said and model.sha256 == r["model"]["sha256"] == r["device"]["model_sha256"]
    with np.load(out / "model" / "gesture_quantized_validation_data.npz") as z:
        meta = json.loads(str(z["meta"]))
        assert meta["model_sha256"] == model.sha256 and len(z["x"]) == meta["samples"] >= r["samples_done"]
    data_cc = (out / "firmware_src" / "model_data.cc").read_text()
    assert f"sha256 {model.sha256}" in data_cc.splitlines()[0] and "do not edit" in data_cc.splitlines()[0]
    assert f"{out / 'firmware_src'}/model_data.cc" in said
    ops_h = (out / "firmware_src" / "model_ops.h").read_text()
    assert f"constexpr int kHilNumOps = {len(model.builtin_ops)};" in ops_h
    assert all(f'"{op}",' in ops_h for op in model.builtin_ops)
    for p in (rep, out / "reports" / "validation.xml", out / "reports" / "validation.html"):
        assert str(p) in said, p
    assert ET.parse(out / "reports" / "validation.xml").getroot().get("failures") == "0"
    assert "PASS" in (out / "reports" / "validation.html").read_text().upper()
    assert "model_data.cc" in cap.err and "PASS" in cap.err

    # a re-run reuses the trained example and the conversion
    tflite_mtime = (out / "model" / "gesture_quantized.tflite").stat().st_mtime_ns
    rc = main(["demo", "--out", str(out), "--samples", "20"])
    cap = capsys.readouterr()
    assert rc == 0
    assert cap.err.count("reused") == 2
    assert (out / "model" / "gesture_quantized.tflite").stat().st_mtime_ns == tflite_mtime
    assert json.loads(rep.read_text())["samples_done"] == 20

    # -q: the report paths and the verdict, nothing else
    rc = main(["demo", "--out", str(out), "--samples", "5", "-q"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "PASS in" in cap.err and "reused" not in cap.err and "cosine" not in cap.out + cap.err
    assert str(rep) in cap.out


def test_demo_rejects_unknown_example(tmp_path):
    from harness.demo import run_demo
    from harness.errors import ConfigError

    with pytest.raises(ConfigError):
        run_demo("nope", tmp_path)


def test_demo_boards_it_cannot_start_or_line_options_for_firmware(tmp_path, capsys):
    from harness.demo import run_demo
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot start board 'nano33ble'"):
        run_demo("gesture", tmp_path, board="nano33ble")
    rc = main(["demo", "--out", str(tmp_path), "--board", "qemu_m55", "--faults", "ber=1e-4"])
    err = capsys.readouterr().err
    assert rc == 2 and "--faults" in err and "Traceback" not in err


@pytest.mark.tflm
@pytest.mark.parametrize("board,var", [("native", "HIL_TFLM_DIR"), ("qemu_m55", "HIL_TFLM_M55_DIR")])
def test_demo_on_the_real_firmware(board, var, tmp_path, capsys):
    import os
    import shutil

    tree = os.environ.get(var) or (os.environ.get("HIL_TFLM_DIR") if board == "qemu_m55" else None)
    if not tree:
        pytest.skip(f"set {var}=/path/to/tflm_tree (see docs/build.md) to run the demo on the {board} firmware")
    if board == "qemu_m55" and not shutil.which("qemu-system-arm"):
        pytest.skip("qemu-system-arm is not installed (apt-get install qemu-system-arm)")
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--board", board, "--tflm", tree, "--samples", "20"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    r = json.loads((out / "reports" / "validation.json").read_text())
    assert r["device"]["board"] == board and r["samples_done"] == 20
    assert r["outputs"][0]["bit_exact_samples"] == 20 and r["timing"]["clock"] == "device"
    assert f"hil build --board {board}" in cap.err
