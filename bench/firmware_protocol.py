"""Sizes of the firmware's protocol library on Cortex-M (docs/firmware.md):
code, static RAM, and one Dispatcher, built with arm-none-eabi-g++ -O2 and
linked into a probe program that must not reference the heap.

    python bench/firmware_protocol.py      # prints a table, writes bench/results/firmware_protocol.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's harness, as bench/link.py

from harness.protocol import footprint  # noqa: E402


def main() -> int:
    version = subprocess.run(["arm-none-eabi-g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cpu in ("cortex-m4", "cortex-m55"):
            rows.append(footprint.cross_build(cpu, Path(tmp)))
    print(f"{'cpu':<12} {'.text':>7} {'static RAM':>11} {'Dispatcher':>11}  heap symbols")
    for r in rows:
        print(
            f"{r['cpu']:<12} {r['library']['text']:>7} {r['library_static_ram']:>11} {r['dispatcher_bytes']:>11}  "
            f"{', '.join(r['forbidden']) or 'none'}"
        )
    out = HERE / "results" / "firmware_protocol.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"compiler": version, "flags": footprint.CROSS_FLAGS, "results": rows}, indent=2) + "\n")
    return 1 if any(r["forbidden"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
