"""Measure the tensor arena a model needs, with TFLM's own interpreter.

The `tflite-micro` package's interpreter is constructed (which runs TFLM's
`AllocateTensors()`) with arenas of different sizes until the smallest that
allocates is found to 16 bytes, and that size is then checked by one
`Invoke()`. TFLM's Python wrapper does not always fail cleanly on a
too-small arena: on some sizes a kernel's `Prepare()` dereferences a failed
allocation and the process dies (SIGSEGV). So the search runs in a child
process, and every probe in a process forked from it; a crash is a failed
probe, never a crashed harness.

The figure is the host's (64-bit, reference kernels) need. For the same
kernels a 32-bit target needs less (TFLM's per-tensor and per-node structs
hold pointers); optimized kernels (CMSIS-NN) may ask for scratch buffers the
reference kernels do not, which is what the codegen margin is for.
"""

from __future__ import annotations

import faulthandler
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import procs
from harness.errors import ModelError, ToolError
from harness.model import inspect_bytes

ALIGN = 16
# Smallest arena tried (probes are crash-isolated, so any floor is safe).
MIN_PROBE = ALIGN
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


class ArenaProbe:
    """A measurement running in a child process; `result()` waits for it.
    Started early, it runs while the caller renders (2 cores: ~free)."""

    def __init__(self, model_path: str | os.PathLike, timeout: float = 300.0):
        self.timeout = timeout
        cmd = [sys.executable, "-m", "harness.arena", str(Path(model_path).resolve())]
        # the child must find this package even when it is not installed;
        # one BLAS thread: the child forks, and forking with threads is fragile
        pkg_root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p)
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="3",
            PYTHONPATH=path,
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )
        try:
            self._proc = procs.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        except OSError as exc:
            raise ToolError(
                f"cannot start {sys.executable} to measure the arena: {exc.strerror}", "check the Python installation"
            ) from exc

    def cancel(self) -> None:
        if self._proc.returncode is None:
            self._proc.kill()
            self._proc.communicate()

    def result(self) -> ArenaMeasurement:
        """Raise `ModelError` when TFLM cannot load or run the model at all."""
        try:
            stdout, stderr = self._proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            self.cancel()
            raise ToolError(
                f"measuring the tensor arena took over {self.timeout:.0f} s",
                "check the model with a host run of `hil validate`",
            ) from exc
        for line in stdout.splitlines():
            if line.startswith(_MARKER):
                res = json.loads(line[len(_MARKER) :])
                if "error" in res:
                    raise ModelError(
                        f"TFLM cannot run the model: {res['error']}",
                        "use only operators TFLM supports (see docs/codegen.md)",
                    )
                return ArenaMeasurement(res["bytes"], res["probes"], res["at_floor"])
        why = _last_line(stderr) or f"exit status {self._proc.returncode}"
        raise ModelError(
            f"TFLM's interpreter crashed while loading the model ({why})",
            "the .tflite is probably corrupt; re-run `hil convert`",
        )


def measure_arena(model_path: str | os.PathLike, timeout: float = 300.0) -> ArenaMeasurement:
    """Measure and wait (see `ArenaProbe`)."""
    return ArenaProbe(model_path, timeout).result()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _attempt(data: bytes, size: int, invoke: bool, n_inputs: int) -> bool:
    """Whether TFLM allocates (and, with `invoke`, runs) the model in `size` bytes."""
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime as tflm

    try:
        ip = tflm.Interpreter.from_bytes(data, arena_size=size)
        if invoke:
            for i in range(n_inputs):
                d = ip.get_input_details(i)
                ip.set_input(np.zeros(d["shape"], d["dtype"]), i)
            ip.invoke()
        return True
    except Exception:
        return False


class _Prober:
    """Tries arena sizes, each in a forked process: on some too-small arenas
    TFLM dereferences a failed allocation and crashes, which counts as a fail."""

    def __init__(self, data: bytes):

        self.data = data
        self.n_inputs = len(inspect_bytes(data).inputs)
        self.probes = 0

    def probe(self, size: int, invoke: bool = False) -> bool:
        self.probes += 1
        if not hasattr(os, "fork"):  # pragma: no cover - Windows: no isolation
            return _attempt(self.data, size, invoke, self.n_inputs)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked child
            # A crash here is an expected answer ("too small"), not news: no fault dump on stderr.
            faulthandler.disable()
            os._exit(0 if _attempt(self.data, size, invoke, self.n_inputs) else 1)
        _, status = os.waitpid(pid, 0)
        return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

    def allocates(self, size: int) -> bool:
        return self.probe(size)

    def runs(self, size: int) -> bool:
        return self.probe(size, invoke=True)


def _smallest(lo_fail: int, hi_ok: int, check) -> int:
    """Bisection on 16-byte steps; invariant: lo_fail fails (or is below the floor), hi_ok works."""
    while hi_ok - lo_fail > ALIGN:
        mid = align_up((lo_fail + hi_ok) // 2)
        if mid >= hi_ok:
            mid = hi_ok - ALIGN
        if check(mid):
            hi_ok = mid
        else:
            lo_fail = mid
    return hi_ok


def _smallest_allocating(p: _Prober) -> tuple[int, bool]:
    """The smallest arena AllocateTensors() accepts, and whether that is the search floor."""
    if p.allocates(MIN_PROBE):
        return MIN_PROBE, True
    lo, hi = MIN_PROBE, 4096
    while hi < MAX_PROBE and not p.allocates(hi):
        lo, hi = hi, hi * 2
    return _smallest(lo, min(hi, MAX_PROBE), p.allocates), False


def _search(data: bytes) -> dict:
    """The child's work: returns {"bytes", "probes", "at_floor"} or {"error"}."""
    p = _Prober(data)
    if not p.probe(MAX_PROBE):
        return {"error": "AllocateTensors() failed even with a 256 MiB arena (unsupported operator or corrupt model)"}
    # TFLM's recording allocator reports what it took; when that figure is
    # the smallest arena that allocates and runs (checked: it does, 16 bytes
    # less does not), three probes replace the whole search.
    hint = _reported_total(data)
    if hint and hint > MIN_PROBE:
        if p.runs(hint) and not p.probe(hint - ALIGN):
            return {"bytes": hint, "probes": p.probes + 1, "at_floor": False}
    best, at_floor = _smallest_allocating(p)
    if not p.runs(best):
        # A kernel needed more at Invoke() than AllocateTensors() reserved:
        # search again with invoking as the test.
        if not p.runs(MAX_PROBE):
            return {"error": "Invoke() failed even with a 256 MiB arena"}
        best, at_floor = _smallest(best, MAX_PROBE, p.runs), False
    return {"bytes": best, "probes": p.probes, "at_floor": at_floor}


_TOTAL = re.compile(rb"Arena allocation total (\d+) bytes")


def _reported_total(data: bytes) -> int | None:
    """The arena total TFLM's RecordingMicroAllocator prints for `data`
    (print_allocations, TFLM's log), read in a forked process; None when it
    cannot be had."""
    if not hasattr(os, "fork"):  # pragma: no cover
        return None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        try:
            from tflite_micro.python.tflite_micro import runtime as tflm

            os.dup2(w, 1)
            os.dup2(w, 2)  # TFLM's log (MicroPrintf) goes to stderr
            tflm.Interpreter.from_bytes(data, arena_size=MAX_PROBE).print_allocations()
            import ctypes

            ctypes.CDLL(None).fflush(None)  # C stdio buffers; _exit skips them
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        text = f.read()
    os.waitpid(pid, 0)
    m = _TOTAL.search(text)
    return align_up(int(m.group(1))) if m else None


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
