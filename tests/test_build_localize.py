"""The user's path to a localized drift on the real firmware: `hil build
--perturb-op K` (PlatformIO, the board's capture buffer), `hil flash`, `hil
validate --localize --profile`: operator K is named, with LSB statistics
from the capture, and every operator's time is in the report. On native and
on qemu_m55 (the Cortex-M55 CMSIS-NN kernels).

Needs a TFLM tree: HIL_TFLM_DIR (reference kernels, native) and
HIL_TFLM_M55_DIR (CMSIS-NN for Cortex-M55, qemu_m55) as docs/build.md makes
them, and qemu-system-arm for qemu_m55."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from harness import build as hb
from harness import flash as hf
from harness.boards import load_board
from harness.cli import main
from harness.localize import model_ops

pytestmark = [pytest.mark.tflm, pytest.mark.slow]

BOARDS = [("native", "HIL_TFLM_DIR"), ("qemu_m55", "HIL_TFLM_M55_DIR")]


def _tree(board: str, var: str) -> str:
    tree = os.environ.get(var)
    if not tree:
        pytest.skip(f"set {var}=/path/to/tflm_tree (create_tflm_tree.py output, see docs/build.md) for {board}")
    if board == "qemu_m55" and not shutil.which("qemu-system-arm"):
        pytest.skip("qemu-system-arm is not installed (apt-get install qemu-system-arm)")
    return tree


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("board,var", BOARDS)
def test_perturbed_build_is_localized_through_the_cli(board, var, gesture_model, tmp_path, capsys):
    tree = _tree(board, var)
    ops = model_ops(gesture_model.tflite.read_bytes())
    k = 2
    out = tmp_path / "fw"
    argv = ["build", "--board", board, "--model", str(gesture_model.tflite), "--tflm", tree, "--out", str(out)]
    assert main([*argv, "--perturb-op", f"{k}:+3"]) == 0
    built = json.loads((out / "build_report.json").read_text())
    assert built["perturb_op"] == k and built["perturb_lsb"] == 3
    assert built["capture_bytes"] == load_board(board).get("capture_bytes")  # the board's default
    assert "TEST BUILD: operator 2" in capsys.readouterr().err
    elf = out / ("firmware" if board == "native" else "firmware.elf")
    dev = hf.flash(board, elf=elf)
    try:
        rj = tmp_path / "r.json"
        args = ["validate", "--port", dev.port, "--model", str(gesture_model.tflite), "--data", str(gesture_model.npz)]
        rc = main([*args, "--samples", "6", "--timeout", "5", "--localize", "--profile", "--report-json", str(rj)])
    finally:
        dev.stop()
    err = capsys.readouterr().err
    assert rc in (0, 1), err
    r = json.loads(rj.read_text())
    assert "TEST BUILD: operator 2 perturbed" in r["device"]["firmware"]
    s = r["localization"]["samples"][0]
    assert s["first_divergence"] == k and s["invokes"] == 1  # the capture; the trace came with --profile
    assert s["ops"][k]["captured"] > 0 and s["ops"][k]["max_lsb"] == 3 and s["ops"][k]["differing_pct"] > 0
    assert all(o["crc_match"] for o in s["ops"][:k])
    assert f"first divergence: op {k} {ops[k].op_type}" in err
    p = r["profile"]
    assert p["source"] == "every sample" and p["samples"] == 6 and len(p["ops"]) == len(ops)
    assert p["clock"]["kind"] == ("qemu" if board == "qemu_m55" else "host")  # neither is a chip's clock
    assert sum(o["share"] for o in p["ops"]) == pytest.approx(1.0)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("board,var", BOARDS)
def test_default_build_traces_equal_to_the_host(board, var, audio_model, tmp_path):
    tree = _tree(board, var)
    res = hb.build(board, audio_model.tflite, tflm_dir=tree, out=tmp_path / "fw")
    assert res.perturb_op is None and res.capture_bytes == load_board(board).get("capture_bytes")
    dev = hf.flash(board, elf=res.elf)
    try:
        rj = tmp_path / "r.json"
        args = ["validate", "--port", dev.port, "--model", str(audio_model.tflite), "--data", str(audio_model.npz)]
        rc = main([*args, "--samples", "4", "--timeout", "5", "--localize", "4", "--report-json", str(rj)])
    finally:
        dev.stop()
    r = json.loads(rj.read_text())
    assert rc == 0 and "TEST BUILD" not in r["device"]["firmware"]
    assert [s["first_divergence"] for s in r["localization"]["samples"]] == [None] * 4
    assert r["profile"]["source"] == "the localization traces (4 samples)"
