"""Link benchmark: the protocol on the emulated serial line, the version-1
flow (today's settings: fixed 2 s timeout, WRITEs acknowledged before INVOKE,
one sample at a time) side by side with version 2 (overlapped stream,
adaptive timeout, NAK, loss-driven frames), in one run.

    python bench/link.py                 # full run (~5 minutes), writes bench/results/link.json
    python bench/link.py --quick         # fewer samples

The simulated board runs as a separate process (`hil device sim`) on a real
pseudo-terminal with 1 ms one-way latency; the host is `DeviceSession`.
Two float32 models whose work is tiny, so the link, not the model, is
measured (`--invoke-ms` emulates a slower device):
- small: the gesture example's input, (100, 3) float32 = 1200 B -> 4 floats;
- large: (64, 96, 4) float32 = 96 KiB -> 4 floats.

Figures per run: seconds, `line_fraction` = input tensor bytes / wall time /
line rate (baud/10 B/s, 8N1); `exact` = every output equals TFLM's on the
host (the clean run's). Per comparison: the new/baseline ratio. Noise runs
also give `goodput_of_optimum` = line_fraction / the theoretical optimum
max_n n/(n+14) x (1-p)^(8(n+14)) for a bit-error rate p (for drop=d per
byte: (1-d)^(n+14)). Compute-bound runs give `of_ideal` = seconds / (N x
max(transfer, compute)).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BAUD = 921600
LINE = BAUD / 10.0


def build_model(path: Path, shape: tuple) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input(shape, batch_size=1)
    x = tf.keras.layers.Flatten()(inp) if len(shape) == 2 else tf.keras.layers.GlobalAveragePooling2D()(inp)
    out = tf.keras.layers.Dense(4)(x)
    with contextlib.redirect_stdout(sys.stderr):  # the converter chats on stdout
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out)).convert())
    return path


class Sim:
    """`hil device sim` in a child process; the URL is its stdout line."""

    def __init__(self, model: Path, baud: int, latency_ms: float, faults=None, invoke_ms=0.0, seed=0, version=None):
        cmd = [sys.executable, "-m", "harness", "device", "sim", "--model", str(model), "--baud", str(baud)]
        cmd += ["--latency-ms", str(latency_ms), "--seed", str(seed), "-q"]
        if faults:
            cmd += ["--faults", faults]
        if invoke_ms:
            cmd += ["--invoke-ms", str(invoke_ms)]
        if version:
            cmd += ["--protocol-version", str(version)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            raise SystemExit(f"simulator did not start: {self.proc.stderr.read()}")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def optimum(ber: float = 0.0, drop: float = 0.0, overhead: int = 14) -> float:
    """The best goodput fraction any frame size reaches on that line."""
    best = 0.0
    for n in range(1, 65536):
        ok = (1 - ber) ** (8 * (n + overhead)) * (1 - drop) ** (n + overhead)
        best = max(best, n / (n + overhead) * ok)
    return best


def run(model: Path, samples: int, *, new: bool, faults=None, invoke_ms=0.0, sim_version=None, seed=0) -> dict:
    """`samples` samples through a fresh simulator; `new` = version 2 stream
    with the session's defaults, else the version-1 flow of before."""
    from harness.errors import DeviceError
    from harness.model import inspect_model
    from harness.protocol.session import DeviceSession
    from harness.runtime import HostInterpreter

    mi = inspect_model(model)
    host = HostInterpreter(model.read_bytes(), "tflm")
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=mi.inputs[0].shape).astype(np.float32) for _ in range(min(samples, 8))]
    refs = [host.run([x])[0] for x in xs]
    kw = {} if new else {"max_version": 1, "adaptive": False}
    out = {"samples": samples, "faults": faults or "none", "invoke_ms": invoke_ms, "flow": "v2" if new else "v1"}
    with Sim(model, BAUD, 1.0, faults, invoke_ms, seed, sim_version) as sim:
        with DeviceSession(sim.url, baudrate=BAUD, timeout=2.0, **kw) as s:
            s.handshake()
            s.stats.__init__()  # count the streaming only
            t0 = time.monotonic()
            exact = True
            done = 0
            try:
                for i, r in enumerate(s.infer_stream([xs[i % len(xs)]] for i in range(samples))):
                    exact &= bool(np.array_equal(r.outputs[0], refs[i % len(xs)]))
                    done += 1
            except DeviceError as exc:
                out["error"] = str(exc)
            wall = time.monotonic() - t0
            st = s.stats
            out.update(
                protocol_version=s.info.version,
                completed=done,
                exact=exact and done == samples,
                seconds=round(wall, 3),
                chunk_bytes=s.chunk,
                rto_ms=round(s.rto.rto * 1000, 2) if s.adaptive else s.timeout * 1000,
                retransmits=st.retransmits,
                timeouts=st.timeouts,
                naks=st.naks,
                repeats=st.repeats,
                wire_efficiency=round(st.efficiency, 4),
                line_fraction=round(mi.inputs[0].nbytes * done / wall / LINE, 4),
                ms_per_sample=round(1000 * wall / max(done, 1), 3),
            )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "link.json"))
    args = ap.parse_args(argv)
    q = args.quick
    n_small, n_base_noise, n_large = (40, 10, 4) if q else (200, 30, 10)
    res: dict = {"baud": BAUD, "latency_ms": 1.0, "note": "ratios are v2 / v1 unless named otherwise"}
    with tempfile.TemporaryDirectory() as d:
        small = build_model(Path(d) / "gesture_in.tflite", (100, 3))
        large = build_model(Path(d) / "link96k.tflite", (64, 96, 4))

        def pair(name, model, n, n_base, **kw):
            print(f"{name}: v1 flow, {n_base} samples ...", flush=True)
            b = run(model, n_base, new=False, **kw)
            print(f"{name}: v2 stream, {n} samples ...", flush=True)
            v = run(model, n, new=True, **kw)
            res[name] = {
                "baseline_v1": b,
                "v2": v,
                "throughput_ratio": round(v["line_fraction"] / b["line_fraction"], 2),
            }
            return b, v

        b, v = pair("small_clean", small, n_small, n_small)
        clean_fraction = v["line_fraction"]
        transfer_ms = 1000 * 1200 / LINE
        for ms in (5, 20):
            b, v = pair(f"small_invoke_{ms}ms", small, n_small // 2, n_small // 2, invoke_ms=ms)
            ideal = max(transfer_ms, ms)
            for r in (b, v):
                r["of_ideal"] = round(r["ms_per_sample"] / ideal, 3)
            res[f"small_invoke_{ms}ms"]["ideal_ms_per_sample"] = round(ideal, 3)
        for faults, ber, drop in (("ber=1e-5", 1e-5, 0), ("ber=1e-4", 1e-4, 0), ("drop=1e-3", 0, 1e-3)):
            name = "small_" + faults.replace("=", "_")
            b, v = pair(name, small, n_small, n_base_noise, faults=faults, seed=3)
            opt = optimum(ber, drop)
            res[name]["optimum"] = round(opt, 4)
            for r in (b, v):
                r["goodput_of_optimum"] = round(r["line_fraction"] / opt, 3)
                r["of_clean_v2"] = round(r["line_fraction"] / clean_fraction, 3)
        print("small_ber_1e-3: v2 stream with defaults ...", flush=True)
        v = run(small, n_small // 2, new=True, faults="ber=1e-3", seed=5)
        print("small_ber_1e-3: v1 flow ...", flush=True)
        b = run(small, 3, new=False, faults="ber=1e-3", seed=5)
        res["small_ber_1e-3"] = {"baseline_v1": b, "v2": v, "optimum": round(optimum(1e-3), 4)}
        b, v = pair("large_clean", large, n_large, n_large)
        print("v1-only board, v2 host defaults ...", flush=True)
        res["v1_board_v2_host"] = run(small, n_small // 4, new=True, sim_version=1)
    res["summary"] = {
        "small_clean_line_fraction": res["small_clean"]["v2"]["line_fraction"],
        "small_clean_line_fraction_v1": res["small_clean"]["baseline_v1"]["line_fraction"],
        "invoke_5ms_of_ideal": res["small_invoke_5ms"]["v2"]["of_ideal"],
        "invoke_20ms_of_ideal": res["small_invoke_20ms"]["v2"]["of_ideal"],
        "ber_1e-5_of_clean": res["small_ber_1e-5"]["v2"]["of_clean_v2"],
        "ber_1e-4_goodput_of_optimum": res["small_ber_1e-4"]["v2"]["goodput_of_optimum"],
        "drop_1e-3_goodput_of_optimum": res["small_drop_1e-3"]["v2"]["goodput_of_optimum"],
        "ber_1e-3_completes_exact": res["small_ber_1e-3"]["v2"]["exact"],
        "large_line_fraction": res["large_clean"]["v2"]["line_fraction"],
        "v1_board_exact": res["v1_board_v2_host"]["exact"] and res["v1_board_v2_host"]["protocol_version"] == 1,
        "all_exact": all(
            r.get("exact", True) for k, p in res.items() if isinstance(p, dict) and "v2" in p for r in (p["v2"],)
        ),
    }
    from harness.fileio import write_json_atomic

    write_json_atomic(args.out, res)
    for k, val in res["summary"].items():
        print(f"{k:<34}{val}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
