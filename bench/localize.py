"""Localization benchmark: the per-operator trace on vs off, side by side in
one run, on the native firmware (the real hil_runner + protocol library
built as a host program against a TFLM tree) for the gesture and audio
examples.

    HIL_TFLM_DIR=/path/to/tflm_tree python bench/localize.py [--rounds 300]

Figures per model:
- invoke_us: the firmware's own invoke time (µs, its clock) with the trace
  off and on, rounds interleaved (off, on, off, on ...) so drift of the host
  hits both alike; `overhead` = median(on) / median(off) - 1 (target <= 5 %);
- wire bytes and frames per sample, `infer` (trace off) vs `trace` (INVOKE
  with the trace option, then TRACE_READ): the extra is the TRACE frame pair
  (target: <= one extra frame each way);
- localize: extra invokes to localize one drifting sample on a firmware
  built with HIL_PERTURB_OP=K (target <= 2), counted by the firmware's
  caller (`Localization.invokes`) and, independently, by the simulated
  board's invoke counter for the same fault (`--faults op=K:lsb=+1`).
Writes bench/results/localize.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CAPTURE = "-DHIL_CAPTURE_BYTES=4096"


def converted(name: str, root: Path):
    from harness.convert import convert
    from harness.examples import build_example

    ex = build_example(name, root / name, seed=0)
    res = convert(
        ex.keras,
        model_config=ex.config,
        output_path=root / "converted" / f"{name}_quantized.tflite",
        data_path_train=ex.data,
        num_samples=200,
        validate_samples=64,
        seed=0,
    )
    return res.tflite, res.npz


def native(tree, lib, common, tflite: Path, work: Path, defines=()):
    from helpers import firmware_build as fb

    from harness import codegen

    codegen.generate(tflite, work / "model")
    return fb.build_native(tree, lib, common, work / "model", work / "build", defines=tuple(defines))


def inputs_of(tflite, npz, n):
    from harness.model import inspect_model
    from harness.runtime import prepare_input

    info = inspect_model(tflite)
    x = np.load(npz)["x"]
    return [[prepare_input(x[i % len(x)], info.inputs[0])] for i in range(n)]


def _delta(st, before):
    return {k: getattr(st, k) - v for k, v in before.items()}


def _snap(st):
    return {k: getattr(st, k) for k in ("bytes_sent", "bytes_received", "frames_sent", "frames_received")}


def trace_on_off(exe, tflite, npz, rounds: int) -> dict:
    from test_firmware_native import NativeDevice

    from harness.protocol.session import DeviceSession

    xs = inputs_of(tflite, npz, rounds)
    dev = NativeDevice(exe)
    off_us, on_us, off_wire, on_wire = [], [], [], []
    try:
        with DeviceSession(dev.port, timeout=5.0) as s:
            info = s.handshake()
            for _ in range(5):  # warm caches
                s.infer(xs[0])
                s.trace(xs[0])
            for x in xs:
                b = _snap(s.stats)
                off_us.append(s.infer(x).invoke_us)
                off_wire.append(_delta(s.stats, b))
                b = _snap(s.stats)
                on_us.append(s.trace(x).result.invoke_us)
                on_wire.append(_delta(s.stats, b))
    finally:
        dev.close()

    def med(rows, k):
        return float(np.median([r[k] for r in rows]))

    m_off, m_on = float(np.median(off_us)), float(np.median(on_us))
    wire = {side: {k: med(rows, k) for k in rows[0]} for side, rows in (("trace_off", off_wire), ("trace_on", on_wire))}
    extra = {k: wire["trace_on"][k] - wire["trace_off"][k] for k in wire["trace_off"]}
    return {
        "n_ops": info.n_ops,
        "rounds": rounds,
        "clock": f"the firmware's MicrosNow (native board: host CLOCK_MONOTONIC), tick_hz {info.tick_hz}",
        "invoke_us": {
            "trace_off": {"median": m_off, "mean": float(np.mean(off_us)), "p90": float(np.percentile(off_us, 90))},
            "trace_on": {"median": m_on, "mean": float(np.mean(on_us)), "p90": float(np.percentile(on_us, 90))},
            "overhead": m_on / m_off - 1 if m_off else None,
            "overhead_of_means": float(np.mean(on_us)) / float(np.mean(off_us)) - 1,
        },
        "wire_per_sample": {**wire, "extra": extra, "extra_frames_each_way": max(extra["frames_sent"], 0)},
    }


def localize_cost(exe, tflite, npz, k: int) -> dict:
    from test_firmware_native import NativeDevice

    from harness.device.sim import start_sim
    from harness.localize import localize_on_device
    from harness.protocol.session import DeviceSession

    model = Path(tflite).read_bytes()
    x = inputs_of(tflite, npz, 1)[0]
    dev = NativeDevice(exe)
    try:
        with DeviceSession(dev.port, timeout=5.0) as s:
            loc = localize_on_device(s, model, x)
    finally:
        dev.close()
    with start_sim(model, listen="tcp:0", baud=0, latency_ms=0, faults=f"op={k}:lsb=1") as sim:
        with DeviceSession(sim.url) as s:
            s.handshake()
            n0 = sim.device.stats.invokes
            sloc = localize_on_device(s, model, x)
            counted = sim.device.stats.invokes - n0
    return {
        "perturbed_op": k,
        "native": {"named_op": loc.first_divergence, "extra_invokes": loc.invokes},
        "sim": {"named_op": sloc.first_divergence, "extra_invokes_counted_by_the_board": counted},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "localize.json"))
    args = ap.parse_args()
    if not os.environ.get("HIL_TFLM_DIR"):
        print("set HIL_TFLM_DIR=/path/to/tflm_tree (reference kernels; see docs/build.md)", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from helpers import firmware_build as fb

    from harness import tflm
    from harness.localize import model_ops

    tree = tflm.find_tree()
    lib = tflm.build_static_lib(tree, "g++", list(tflm.DEFAULT_FLAGS))
    results = {"targets": {"invoke_overhead": 0.05, "extra_frames_each_way": 1, "extra_invokes": 2}, "models": {}}
    with tempfile.TemporaryDirectory(prefix="hil-bench-localize-") as tmp:
        root = Path(tmp)
        common = fb.build_native_common(tree, root / "common")
        for name in ("gesture", "audio"):
            tflite, npz = converted(name, root)
            k = len(model_ops(tflite.read_bytes())) // 2
            exe = native(tree, lib, common, tflite, root / f"{name}_fw", [CAPTURE])
            pexe = native(tree, lib, common, tflite, root / f"{name}_fw_k", [CAPTURE, f"-DHIL_PERTURB_OP={k}"])
            r = trace_on_off(exe, tflite, npz, args.rounds)
            r["localize"] = localize_cost(pexe, tflite, npz, k)
            results["models"][name] = r
            iu, w = r["invoke_us"], r["wire_per_sample"]
            print(
                f"{name}: {r['n_ops']} ops; invoke median {iu['trace_off']['median']:.0f} -> "
                f"{iu['trace_on']['median']:.0f} us ({100 * iu['overhead']:+.1f} %; means "
                f"{100 * iu['overhead_of_means']:+.1f} %); wire/sample {w['trace_off']['bytes_sent'] + w['trace_off']['bytes_received']:.0f}"
                f" -> {w['trace_on']['bytes_sent'] + w['trace_on']['bytes_received']:.0f} B, "
                f"+{w['extra']['frames_sent']:.0f}/+{w['extra']['frames_received']:.0f} frames; localize op {k}: "
                f"native names {r['localize']['native']['named_op']} in {r['localize']['native']['extra_invokes']} invokes, "
                f"sim board counted {r['localize']['sim']['extra_invokes_counted_by_the_board']}"
            )
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
