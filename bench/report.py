"""HTML report benchmark: `harness.report.render_html` of a validation report
with N = 10,000 samples, before (every sample an SVG dot: the scatter as it
was) and after (a percentile band and the samples that matter), in one run.

    python bench/report.py            # writes bench/results/report.json

Time is the wall time of one render in a fresh process (the matplotlib
import counted, as a `hil validate` run pays it); size is the HTML's bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
t0 = time.monotonic()
import numpy as np
from harness import report as rp
if sys.argv[2] == "before":
    rp.DENSE_POINTS = 10**9  # every point drawn, as before
n = int(sys.argv[1])
rng = np.random.default_rng(0)
cos = 1 - np.abs(rng.normal(0, 2e-4, n))
cos[rng.choice(n, 25, replace=False)] = 0.98  # a few samples outside the gate
lsb = rng.integers(0, 3, n)
lsb[rng.choice(n, 25, replace=False)] = 9
rep = {
    "status": "drift", "exit_code": 1, "started": "2024-01-01T00:00:00Z", "duration_s": 1.0,
    "samples_planned": n, "samples_done": n, "settings": {"port": "sim", "model": "m.tflite", "data": "d.npz"},
    "gates": [
        {"metric": "cosine_min", "output": 0, "threshold": 0.99, "value": 0.98, "passed": False},
        {"metric": "max_lsb", "output": 0, "threshold": 2, "value": 9, "passed": False},
    ],
    "samples": [{"index": i, "cosine": float(c), "max_lsb": int(v)} for i, (c, v) in enumerate(zip(cos, lsb))],
}
t1 = time.monotonic()
plots = [rp.svg_scatter([s["cosine"] for s in rep["samples"]], title="cosine", threshold=0.99),
         rp.svg_scatter([s["max_lsb"] for s in rep["samples"]], title="lsb", threshold=2, integer=True)]
html = "".join(plots)
t2 = time.monotonic()
print(json.dumps({"seconds_total": round(t2 - t0, 3), "seconds_plots": round(t2 - t1, 3), "bytes": len(html)}))
"""


def run(n: int, which: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), which],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"},
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "report.json"))
    args = ap.parse_args(argv)
    before, after = run(args.n, "before"), run(args.n, "after")
    res = {
        "samples": args.n,
        "before": before,
        "after": after,
        "time_ratio": round(after["seconds_total"] / before["seconds_total"], 3),
        "size_ratio": round(after["bytes"] / before["bytes"], 4),
    }
    from harness.fileio import write_json_atomic

    write_json_atomic(args.out, res)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
