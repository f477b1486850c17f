"""Read what later stages need from a `.tflite` flatbuffer without running it:
SHA-256, input/output tensor descriptors (dtype, shape, quantization) and the
operators it uses.

Parsing uses the schema module that ships with LiteRT, so no TensorFlow
import is needed here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import ModelError
from harness.protocol.codec import DTYPE_CODES as DTYPE_CODES  # re-exported: codegen writes the wire's codes

# TFLite TensorType enum -> (name, numpy dtype)
_TENSOR_TYPES = {
    0: ("float32", np.float32),
    1: ("float16", np.float16),
    2: ("int32", np.int32),
    3: ("uint8", np.uint8),
    4: ("int64", np.int64),
    6: ("bool", np.bool_),
    7: ("int16", np.int16),
    9: ("int8", np.int8),
    10: ("float64", np.float64),
    12: ("uint64", np.uint64),
    15: ("uint32", np.uint32),
    16: ("uint16", np.uint16),
    17: ("int4", np.int8),
}


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output as the device sees it."""

    name: str
    dtype: str  # "float32", "int8", ...
    shape: tuple[int, ...]
    scale: float = 0.0  # per-tensor scale (0.0 when not quantized)
    zero_point: int = 0
    scales: tuple[float, ...] = ()  # all scales (per-channel tensors have many)

    @property
    def np_dtype(self):
        for name, dt in _TENSOR_TYPES.values():
            if name == self.dtype:
                return np.dtype(dt)
        raise ModelError(f"unsupported tensor type {self.dtype}")

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= max(int(d), 1)
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.np_dtype.itemsize

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


@dataclass(frozen=True)
class ModelInfo:
    path: Path | None
    size: int
    sha256: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    builtin_ops: tuple[str, ...]  # sorted unique builtin operator names, e.g. "CONV_2D"
    custom_ops: tuple[str, ...]
    tensor_types: tuple[str, ...] = field(default=())  # dtypes of every tensor in subgraph 0
    per_channel_tensors: int = 0  # tensors with more than one scale
    per_tensor_quantized: int = 0  # quantized tensors with exactly one scale
    subgraphs: int = 1

    @property
    def sha256_bytes(self) -> bytes:
        return bytes.fromhex(self.sha256)


def _opcode_names():
    from ai_edge_litert import schema_py_generated as s

    return {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}


def _tensor(s, t) -> TensorInfo:
    name = t.Name().decode("utf-8", "replace") if t.Name() else ""
    ttype = _TENSOR_TYPES.get(t.Type(), (f"type{t.Type()}", None))[0]
    shape = tuple(int(x) for x in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    scales: tuple[float, ...] = ()
    zp = 0
    q = t.Quantization()
    if q is not None and q.ScaleLength():
        scales = tuple(float(x) for x in q.ScaleAsNumpy())
        if q.ZeroPointLength():
            zp = int(q.ZeroPointAsNumpy()[0])
    return TensorInfo(
        name=name, dtype=ttype, shape=shape, scale=scales[0] if scales else 0.0, zero_point=zp, scales=scales
    )


def _ops_used(s, m, g) -> tuple[set[str], set[str]]:
    """The builtin and custom operator names subgraph `g` of model `m` runs."""
    names = _opcode_names()
    builtin, custom = set(), set()
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        codes.append(code)
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        idx = op.OpcodeIndex()
        code = codes[idx]
        if code == s.BuiltinOperator.CUSTOM:
            cc = m.OperatorCodes(idx).CustomCode()
            custom.add(cc.decode() if cc else "?")
        else:
            builtin.add(names.get(code, f"BUILTIN_{code}"))
    return builtin, custom


def _tensor_types_and_quantization(tensors) -> tuple[list[str], int, int]:
    """Each tensor's type name, and how many tensors are quantized per channel / per tensor."""
    ttypes, per_ch, per_t = [], 0, 0
    for t in tensors:
        ttypes.append(_TENSOR_TYPES.get(t.Type(), (f"type{t.Type()}", None))[0])
        q = t.Quantization()
        n = q.ScaleLength() if q is not None else 0
        if n > 1:
            per_ch += 1
        elif n == 1:
            per_t += 1
    return ttypes, per_ch, per_t


def inspect_bytes(data: bytes, path: Path | None = None) -> ModelInfo:
    """Parse a TFLite flatbuffer; raise `ModelError` if it is not one."""
    from ai_edge_litert import schema_py_generated as s

    where = str(path) if path else "model"
    if len(data) == 0:
        raise ModelError(f"{where} is empty", "re-run `hil convert` to produce the .tflite")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(
            f"{where} is not a TFLite flatbuffer (no TFL3 identifier)",
            "pass the .tflite written by `hil convert`, not a .keras/.h5/.onnx file",
        )
    try:
        m = s.Model.GetRootAs(data, 0)
        if m.SubgraphsLength() < 1:
            raise ModelError(f"{where} has no subgraph", "re-convert the model")
        g = m.Subgraphs(0)
        builtin, custom = _ops_used(s, m, g)
        tensors = [g.Tensors(i) for i in range(g.TensorsLength())]
        inputs = tuple(_tensor(s, tensors[i]) for i in g.InputsAsNumpy()) if g.InputsLength() else ()
        outputs = tuple(_tensor(s, tensors[i]) for i in g.OutputsAsNumpy()) if g.OutputsLength() else ()
        ttypes, per_ch, per_t = _tensor_types_and_quantization(tensors)
        nsub = m.SubgraphsLength()
    except ModelError:
        raise
    except Exception as exc:  # flatbuffers raises assorted errors on garbage
        raise ModelError(
            f"{where} is truncated or corrupt ({type(exc).__name__})", "re-run `hil convert` to produce the .tflite"
        ) from exc
    return ModelInfo(
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        inputs=inputs,
        outputs=outputs,
        builtin_ops=tuple(sorted(builtin)),
        custom_ops=tuple(sorted(custom)),
        tensor_types=tuple(ttypes),
        per_channel_tensors=per_ch,
        per_tensor_quantized=per_t,
        subgraphs=nsub,
    )


def read_model_bytes(path: str | Path) -> bytes:
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model {path} does not exist", "check the path, or run `hil convert` first")
    if path.is_dir():
        raise ModelError(f"model {path} is a folder, not a .tflite file", "pass the .tflite file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror}", "check the file's permissions") from exc


def inspect_model(path: str | Path) -> ModelInfo:
    path = Path(path)
    return inspect_bytes(read_model_bytes(path), path)


def dequantize_sources(data: bytes) -> tuple[TensorInfo | None, ...]:
    """For each model output: the quantized tensor a final DEQUANTIZE op
    reads, or None when the output is not produced by one.

    A float32-I/O int8 model computes in int8 and dequantizes at the end, so
    its float outputs still move in steps of that tensor's scale (one LSB);
    `validate` counts differences in those steps.
    """
    from ai_edge_litert import schema_py_generated as s

    inspect_bytes(data)  # raises ModelError on garbage
    m = s.Model.GetRootAs(data, 0)
    g = m.Subgraphs(0)
    producer: dict[int, tuple[int, int]] = {}  # tensor index -> (builtin code, first input tensor)
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        oc = m.OperatorCodes(op.OpcodeIndex())
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        first_in = int(op.InputsAsNumpy()[0]) if op.InputsLength() else -1
        for t in op.OutputsAsNumpy() if op.OutputsLength() else ():
            producer[int(t)] = (code, first_in)
    out = []
    for idx in g.OutputsAsNumpy() if g.OutputsLength() else ():
        code, src = producer.get(int(idx), (None, -1))
        if code == s.BuiltinOperator.DEQUANTIZE and src >= 0:
            t = _tensor(s, g.Tensors(src))
            out.append(t if t.quantized else None)
        else:
            out.append(None)
    return tuple(out)
