"""Link benchmark: the protocol on the emulated serial line.

    python bench/link.py                 # full run (~4 minutes), writes bench/results/link.json
    python bench/link.py --quick         # fewer samples

A float32 model whose input is 64x96x4 (96 KiB, 24576 floats) and whose work
is tiny (MEAN + FULLY_CONNECTED), so the link, not the model, is measured.
The simulated board runs as a separate process (`hil device sim`) on a real
pseudo-terminal with 1 ms one-way latency; the host is `DeviceSession`.

Figures:
- wire efficiency: tensor bytes delivered (both directions) / all bytes on
  the wire (both directions: frames, COBS, headers, CRCs, ACKs, DATA);
- throughput: input tensor bytes per second / line rate (baud/10 bytes/s,
  8N1), over the whole run ("incl. device time"), and with the device's
  reported inference time (host time on the simulator) subtracted
  ("excl. device time");
- the same input streamed stop-and-wait (window 1, 32-byte chunks, as older
  validation tools do), and the pipelined/stop-and-wait throughput ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_model(path: Path) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((64, 96, 4), batch_size=1)
    x = tf.keras.layers.GlobalAveragePooling2D()(inp)
    out = tf.keras.layers.Dense(4)(x)
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # the converter chats on stdout
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out)).convert())
    return path


class Sim:
    """`hil device sim` in a child process; the URL is its stdout line."""

    def __init__(self, model: Path, baud: int, latency_ms: float):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harness",
                "device",
                "sim",
                "--model",
                str(model),
                "--baud",
                str(baud),
                "--latency-ms",
                str(latency_ms),
                "-q",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
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


def run(model: Path, baud: int, samples: int, latency_ms: float = 1.0, window=None, chunk=None) -> dict:
    from harness.model import inspect_model
    from harness.protocol.session import DeviceSession
    from harness.runtime import HostInterpreter

    mi = inspect_model(model)
    host = HostInterpreter(model.read_bytes(), "tflm")
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=mi.inputs[0].shape).astype(np.float32) for _ in range(min(samples, 4))]
    refs = [host.run([x])[0] for x in xs]
    with Sim(model, baud, latency_ms) as sim:
        with DeviceSession(sim.url, baudrate=baud, timeout=2.0, window=window, chunk_size=chunk) as s:
            s.handshake()
            s.stats.__init__()  # count the streaming only
            invoke_us = 0
            t0 = time.monotonic()
            for i in range(samples):
                r = s.infer([xs[i % len(xs)]])
                assert np.array_equal(r.outputs[0], refs[i % len(xs)]), "wrong output"
                invoke_us += r.invoke_us
            wall = time.monotonic() - t0
            st = s.stats
            line = baud / 10.0
            dev_s = invoke_us / 1e6
            return {
                "baud": baud,
                "latency_ms": latency_ms,
                "samples": samples,
                "window": s.window,
                "chunk_bytes": s.chunk,
                "input_bytes_per_sample": mi.inputs[0].nbytes,
                "seconds": round(wall, 3),
                "device_invoke_seconds_host_time": round(dev_s, 4),
                "wire_bytes_sent": st.bytes_sent,
                "wire_bytes_received": st.bytes_received,
                "payload_bytes_sent": st.payload_bytes_sent,
                "payload_bytes_received": st.payload_bytes_received,
                "retransmits": st.retransmits,
                "wire_efficiency": round(st.efficiency, 4),
                "wire_efficiency_host_to_device": round(st.payload_bytes_sent / st.bytes_sent, 4),
                "throughput_fraction_incl_device_time": round(st.payload_bytes_sent / wall / line, 4),
                "throughput_fraction_excl_device_time": round(st.payload_bytes_sent / (wall - dev_s) / line, 4),
                "line_busy_fraction_host_to_device": round(st.bytes_sent / wall / line, 4),
                "payload_bytes_per_s": round(st.payload_bytes_sent / wall, 1),
            }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    ap.add_argument(
        "--slow_samples",
        "--slow-samples",
        type=int,
        default=None,
        metavar="N",
        help="samples at 115200 baud (default 5; 100 as in the 921600 run takes ~15 minutes)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "link.json"))
    args = ap.parse_args(argv)
    n_fast = 10 if args.quick else 100
    n_slow = args.slow_samples or (2 if args.quick else 5)
    n_base = 1 if args.quick else 3
    with tempfile.TemporaryDirectory() as d:
        model = build_model(Path(d) / "link96k.tflite")
        results = {}
        print(f"pipelined, 921600 baud, 1 ms latency, {n_fast} samples of 96 KiB ...", flush=True)
        results["pipelined_921600"] = run(model, 921600, n_fast)
        print(
            f"pipelined, 115200 baud, 1 ms latency, {n_slow} samples (~{n_slow * 98304 / 11520 / 60:.0f} minutes) ...",
            flush=True,
        )
        results["pipelined_115200"] = run(model, 115200, n_slow)
        print(f"stop-and-wait baseline (window 1, 32-byte chunks), 921600 baud, {n_base} samples ...", flush=True)
        results["stop_and_wait_921600"] = run(model, 921600, n_base, window=1, chunk=32)
    p, b = results["pipelined_921600"], results["stop_and_wait_921600"]
    results["speedup_vs_stop_and_wait_921600"] = round(p["payload_bytes_per_s"] / b["payload_bytes_per_s"], 2)
    from harness.fileio import write_json_atomic

    write_json_atomic(args.out, results)
    print()
    print(f"{'run':<24}{'samples':>8}{'efficiency':>12}{'tput incl dev':>15}{'tput excl dev':>15}{'KiB/s':>9}")
    for k in ("pipelined_921600", "pipelined_115200", "stop_and_wait_921600"):
        r = results[k]
        print(
            f"{k:<24}{r['samples']:>8}{r['wire_efficiency']:>12.4f}{r['throughput_fraction_incl_device_time']:>15.4f}"
            f"{r['throughput_fraction_excl_device_time']:>15.4f}{r['payload_bytes_per_s'] / 1024:>9.1f}"
        )
    print(f"pipelined / stop-and-wait throughput at 921600 baud: {results['speedup_vs_stop_and_wait_921600']}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
