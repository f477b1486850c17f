"""Host interpreters for a `.tflite`: the references a device is compared with.

Three kernel sets, because host kernels differ among themselves by ±1 LSB
on some int8 models (docs/validate.md, "What is compared"):

- ``tflm``        TensorFlow Lite Micro's kernels (`tflite-micro` package) —
                  what TFLM firmware computes; the oracle.
- ``litert_ref``  LiteRT with its reference kernels.
- ``litert``      LiteRT with its default (optimised) kernels.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence

import numpy as np

from harness.errors import ModelError
from harness.model import TensorInfo, inspect_bytes

KERNELS = ("tflm", "litert_ref", "litert")


def quantize(x: np.ndarray, t: TensorInfo) -> np.ndarray:
    """Float values -> the tensor's integer type with its own scale/zero point."""
    info = np.iinfo(t.np_dtype)
    q = np.round(np.asarray(x, np.float64) / t.scale + t.zero_point)
    return np.clip(q, info.min, info.max).astype(t.np_dtype)


def dequantize(q: np.ndarray, t: TensorInfo) -> np.ndarray:
    if not t.quantized:
        return np.asarray(q, np.float32)
    return ((np.asarray(q, np.float64) - t.zero_point) * t.scale).astype(np.float32)


def prepare_input(x: np.ndarray, t: TensorInfo) -> np.ndarray:
    """Make one sample fit an input tensor: add the batch dim, quantize float
    data for an integer tensor, pass integer data through as it is."""
    x = np.asarray(x)
    want = tuple(t.shape)
    if x.shape != want:
        if (1, *x.shape) == want or x.size == t.size:
            x = x.reshape(want)
        else:
            raise ModelError(
                f"sample of shape {x.shape} does not fit input '{t.name}' of shape {want}",
                "check that the data belongs to this model",
            )
    if t.np_dtype.kind in "iu" and x.dtype.kind == "f":
        return quantize(x, t)
    return x.astype(t.np_dtype, copy=False)


_QUIET_LOCK = threading.Lock()
_quiet = {"depth": 0, "saved": None}


@contextlib.contextmanager
def _quiet_stderr():
    """TFLM's C++ prints allocation chatter on fd 2; keep the console clean.

    fd 2 is the process's, shared by every thread: the first of overlapping
    callers (a lab validating boards in parallel) saves it and the last one
    restores it, so two threads can never leave it on /dev/null."""
    with _QUIET_LOCK:
        if _quiet["depth"] == 0:
            try:
                saved = os.dup(2)
            except OSError:
                saved = None
            if saved is not None:
                with open(os.devnull, "w") as null:
                    os.dup2(null.fileno(), 2)
            _quiet["saved"] = saved
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0 and _quiet["saved"] is not None:
                os.dup2(_quiet["saved"], 2)
                os.close(_quiet["saved"])
                _quiet["saved"] = None


class HostInterpreter:
    """One model on one kernel set; `run(sample_inputs)` -> list of outputs."""

    def __init__(self, model: bytes, kernels: str = "tflm", arena_size: int | None = None):
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}")
        self.kernels = kernels
        self._model = bytes(model)

        info = inspect_bytes(self._model)
        self._n_in, self._n_out = len(info.inputs), len(info.outputs)
        try:
            if kernels == "tflm":
                from tflite_micro.python.tflite_micro import runtime as tflm

                with _quiet_stderr():
                    self._ip = tflm.Interpreter.from_bytes(
                        self._model, arena_size=arena_size or max(len(self._model) * 10, 1 << 20)
                    )
            else:
                from ai_edge_litert.interpreter import Interpreter, OpResolverType

                resolver = OpResolverType.BUILTIN_REF if kernels == "litert_ref" else OpResolverType.AUTO
                self._ip = Interpreter(model_content=self._model, experimental_op_resolver_type=resolver, num_threads=1)
                self._ip.allocate_tensors()
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"the {kernels} interpreter cannot load this model: {exc}".splitlines()[0],
                "check that the .tflite is valid and uses only builtin ops",
            ) from exc

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Inputs must already have the tensors' dtypes and shapes."""
        if self.kernels == "tflm":
            for i, x in enumerate(inputs):
                self._ip.set_input(np.ascontiguousarray(x), i)
            with _quiet_stderr():
                self._ip.invoke()
            outs = [np.array(self._ip.get_output(i), copy=True) for i in range(self._n_out)]
            if hasattr(self._ip, "reset"):
                self._ip.reset()
            return outs
        ins = self._ip.get_input_details()
        for d, x in zip(ins, inputs):
            self._ip.set_tensor(d["index"], np.ascontiguousarray(x))
        self._ip.invoke()
        return [np.array(self._ip.get_tensor(d["index"]), copy=True) for d in self._ip.get_output_details()]
