"""Measure the tensor arena a model needs, with TFLM's own interpreter.

The `tflite-micro` package's interpreter is constructed (which runs TFLM's
`AllocateTensors()`) with shrinking arenas until the smallest size that
allocates is found to 16 bytes, and that size is then checked by one
`Invoke()`. The search runs in a child process: TFLM's Python wrapper
crashes (SIGSEGV) instead of failing when an arena is too small for even its
allocator, or on some malformed models, and a crash must not take the
harness with it.

The figure is the host's (64-bit) need, which is at least the 32-bit
target's: TFLM's per-tensor and per-node structs hold pointers, so they
shrink on Cortex-M; tensor buffers and kernel scratch are the same size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ModelError, ToolError

ALIGN = 16
# Below about 500 bytes the wrapper cannot place its own allocator and
# crashes; 1 KiB is safely above that for every model.
MIN_PROBE = 1024
# Largest arena tried (only touched pages are paid for, so this is cheap).
MAX_PROBE = 256 << 20
_MARKER = "HIL_ARENA_RESULT "


@dataclass(frozen=True)
class ArenaMeasurement:
    """The smallest arena TFLM accepted, and how many probes it took."""

    bytes: int
    probes: int
    at_floor: bool  # True when MIN_PROBE itself was enough (need is <= bytes)


def align_up(n: int, a: int = ALIGN) -> int:
    return (int(n) + a - 1) // a * a


def measure_arena(model_path: str | os.PathLike, timeout: float = 300.0) -> ArenaMeasurement:
    """Run the search in a child process; raise `ModelError` when TFLM cannot
    load or run the model at all."""
    cmd = [sys.executable, "-m", "harness.arena", str(Path(model_path).resolve())]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"measuring the tensor arena took over {timeout:.0f} s",
                        "check the model with `hil validate`'s host run") from exc
    for line in proc.stdout.splitlines():
        if line.startswith(_MARKER):
            res = json.loads(line[len(_MARKER):])
            if "error" in res:
                raise ModelError(f"TFLM cannot run the model: {res['error']}",
                                 "use only operators TFLM supports (see docs/codegen.md)")
            return ArenaMeasurement(res["bytes"], res["probes"], res["at_floor"])
    why = _last_line(proc.stderr) or f"exit status {proc.returncode}"
    raise ModelError(f"TFLM's interpreter crashed while loading the model ({why})",
                     "the .tflite is probably corrupt; re-run `hil convert`")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _search(data: bytes) -> dict:
    """The child's work: returns {"bytes", "probes", "at_floor"} or {"error"}."""
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime as tflm

    from harness.model import inspect_bytes

    n_inputs = len(inspect_bytes(data).inputs)
    probes = 0

    def make(size: int):
        nonlocal probes
        probes += 1
        try:
            return tflm.Interpreter.from_bytes(data, arena_size=size)
        except Exception:
            return None

    def invokes(ip) -> bool:
        try:
            for i in range(n_inputs):
                d = ip.get_input_details(i)
                ip.set_input(np.zeros(d["shape"], d["dtype"]), i)
            ip.invoke()
            return True
        except Exception:
            return False

    if make(MAX_PROBE) is None:
        return {"error": "AllocateTensors() failed even with a 256 MiB arena (unsupported operator or corrupt model)"}

    def smallest(lo_fail: int, hi_ok: int, check) -> int:
        # invariant: lo_fail fails (or is below the floor), hi_ok works
        while hi_ok - lo_fail > ALIGN:
            mid = align_up((lo_fail + hi_ok) // 2)
            if mid >= hi_ok:
                mid = hi_ok - ALIGN
            if check(mid):
                hi_ok = mid
            else:
                lo_fail = mid
        return hi_ok

    def allocates(size: int) -> bool:
        return make(size) is not None

    def runs(size: int) -> bool:
        ip = make(size)
        return ip is not None and invokes(ip)

    if allocates(MIN_PROBE):
        best, at_floor = MIN_PROBE, True
    else:
        lo, hi = MIN_PROBE, 4096
        while hi < MAX_PROBE and not allocates(hi):
            lo, hi = hi, hi * 2
        hi = min(hi, MAX_PROBE)
        best, at_floor = smallest(lo, hi, allocates), False
    if not runs(best):
        # A kernel needed more at Invoke() than AllocateTensors() reserved:
        # search again with invoking as the test.
        if not runs(MAX_PROBE):
            return {"error": "Invoke() failed even with a 256 MiB arena"}
        best, at_floor = smallest(best, MAX_PROBE, runs), False
    return {"bytes": best, "probes": probes, "at_floor": at_floor}


def _main(argv: list[str]) -> int:  # child process entry point
    data = Path(argv[0]).read_bytes()
    # TFLM logs every failed allocation on fd 2; the parent only wants the result.
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)
    try:
        res = _search(data)
    except Exception as exc:  # report, don't traceback: the parent turns it into a ModelError
        res = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    finally:
        os.dup2(saved, 2)
    sys.stdout.write(_MARKER + json.dumps(res) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
