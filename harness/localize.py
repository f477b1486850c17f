"""Per-operator drift localization: the host's reference for every operator's
output (TFLM with all tensors preserved, cross-checked with LiteRT's
reference kernels), an operator-by-operator TFLM executor (the simulated
board's trace and its perturbation fault), and the comparison of a device's
trace and capture with the reference (`localize`).

XNNPACK's intermediates are not a reference (they differ by a few LSB where
the final output agrees), so only TFLM and LiteRT's BUILTIN_REF kernels are
used here.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.errors import ModelError

PRESERVE_ARENA_MIN = 1 << 20


@dataclass(frozen=True)
class OpInfo:
    """One operator of subgraph 0, in execution order."""

    index: int
    op_type: str
    inputs: tuple[int, ...]  # tensor indices (-1: optional input absent)
    outputs: tuple[int, ...]
    output_name: str  # the first output tensor's name
    dtype: str  # the first output's
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    nbytes: int  # the first output's bytes


_NP = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8"}


def model_ops(model: bytes) -> list[OpInfo]:
    """Subgraph 0's operators as TFLM runs them (flatbuffer order)."""
    from ai_edge_litert import schema_py_generated as s

    from harness.model import _opcode_names

    m = s.Model.GetRootAs(model, 0)
    names = _opcode_names()
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        cc = oc.CustomCode()
        codes.append(cc.decode() if code == s.BuiltinOperator.CUSTOM and cc else names.get(code, f"BUILTIN_{code}"))
    g = m.Subgraphs(0)
    ops = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        ins = tuple(int(x) for x in op.InputsAsNumpy()) if op.InputsLength() else ()
        outs = tuple(int(x) for x in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        t = g.Tensors(outs[0])
        dtype = _NP.get(t.Type(), f"type{t.Type()}")
        shape = tuple(int(x) for x in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        q = t.Quantization()
        scale = float(q.ScaleAsNumpy()[0]) if q is not None and q.ScaleLength() else 0.0
        zp = int(q.ZeroPointAsNumpy()[0]) if q is not None and q.ZeroPointLength() else 0
        n = int(np.prod(shape)) if shape else 1
        nbytes = n * (np.dtype(dtype).itemsize if dtype in _NP.values() else 1)
        name = t.Name().decode("utf-8", "replace") if t.Name() else ""
        ops.append(OpInfo(i, codes[op.OpcodeIndex()], ins, outs, name, dtype, shape, scale, zp, nbytes))
    return ops


def output_crc(arrays: Sequence[np.ndarray]) -> int:
    """CRC-32 over an operator's output tensors' bytes in order (the wire's TRACE crc)."""
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
    return crc & 0xFFFFFFFF


# ------------------------------------------------------------------ reference


def reference_outputs(model: bytes, inputs: Sequence[np.ndarray], kernels: str = "tflm") -> list[list[np.ndarray]]:
    """Every operator's output tensors for one sample, from TFLM with all
    tensors preserved (`kernels="tflm"`) or LiteRT's reference kernels
    (`"litert_ref"`, also with all tensors preserved)."""
    ops = model_ops(model)
    try:
        if kernels == "tflm":
            from tflite_micro.python.tflite_micro import runtime as tflm

            from harness.runtime import _quiet_stderr

            with _quiet_stderr():
                ip = tflm.Interpreter.from_bytes(
                    model,
                    arena_size=max(len(model) * 20, PRESERVE_ARENA_MIN),
                    intrepreter_config=tflm.InterpreterConfig.kPreserveAllTensors,
                )
                for i, x in enumerate(inputs):
                    ip.set_input(np.ascontiguousarray(x), i)
                ip.invoke()

            def get(t):
                d = ip.GetTensor(t, 0)
                return np.array(d["tensor_data"], copy=True).reshape(tuple(int(x) for x in d["shape"]))
        else:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            ip = Interpreter(
                model_content=model,
                experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                experimental_preserve_all_tensors=True,
                num_threads=1,
            )
            ip.allocate_tensors()
            for d, x in zip(ip.get_input_details(), inputs):
                ip.set_tensor(d["index"], np.ascontiguousarray(x))
            ip.invoke()

            def get(t):
                return np.array(ip.get_tensor(t), copy=True)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"the {kernels} interpreter cannot trace this model: {exc}".splitlines()[0],
            "check that the .tflite is valid and uses only builtin ops",
        ) from exc
    return [[get(t) for t in op.outputs if t >= 0] for op in ops]


# ------------------------------------------------------------------ operator-by-operator executor


def _single_op_model(model: bytes, k: int) -> tuple[bytes, list[int]]:
    """Operator `k` alone as a model (same tensors and buffers); returns it
    and its non-constant input tensors (the new model's inputs, in order)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    mt = s.ModelT.InitFromPackedBuf(model, 0)
    g = mt.subgraphs[0]
    op = g.operators[k]

    def const(t: int) -> bool:
        b = mt.buffers[g.tensors[t].buffer] if g.tensors[t].buffer < len(mt.buffers) else None
        return b is not None and b.data is not None and len(b.data) > 0

    ins = [int(t) for t in op.inputs if t >= 0 and not const(int(t))]
    g.operators = [op]
    g.inputs = ins
    g.outputs = [int(t) for t in op.outputs if t >= 0]
    mt.subgraphs = [g]
    mt.signatureDefs = []
    b = flatbuffers.Builder(len(model) + 1024)
    b.Finish(mt.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output()), ins


def perturb(a: np.ndarray, lsb: int) -> np.ndarray:
    """`a` moved by `lsb` steps of its type (saturating; floats by ulps)."""
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return np.clip(a.astype(np.int64) + lsb, info.min, info.max).astype(a.dtype)
    if np.issubdtype(a.dtype, np.floating):
        return (a + np.spacing(a) * lsb).astype(a.dtype)
    return a


class OpChain:
    """The model run one operator at a time through TFLM's kernels (each
    operator as a model of its own), so the simulated board can time every
    operator and change one operator's output for the ones after it."""

    def __init__(self, model: bytes):
        from tflite_micro.python.tflite_micro import runtime as tflm

        from harness.model import inspect_bytes
        from harness.runtime import _quiet_stderr

        self.model = bytes(model)
        self.ops = model_ops(self.model)
        from ai_edge_litert import schema_py_generated as s

        g = s.Model.GetRootAs(self.model, 0).Subgraphs(0)
        self._inputs = [int(x) for x in g.InputsAsNumpy()]
        self._outputs = [int(x) for x in g.OutputsAsNumpy()]
        self._n_out = len(inspect_bytes(self.model).outputs)
        self._steps = []
        for op in self.ops:
            sub, ins = _single_op_model(self.model, op.index)
            with _quiet_stderr():
                ip = tflm.Interpreter.from_bytes(sub, arena_size=max(len(sub) * 4, 256 << 10))
            self._steps.append((ip, ins, [t for t in op.outputs if t >= 0]))

    def run(
        self, inputs: Sequence[np.ndarray], perturb_op: int = -1, lsb: int = 0
    ) -> tuple[list[list[np.ndarray]], list[int], list[np.ndarray]]:
        """(every operator's outputs, its host time in ns, the model's outputs)."""
        from harness.runtime import _quiet_stderr

        values: dict[int, np.ndarray] = dict(zip(self._inputs, (np.asarray(x) for x in inputs)))
        per_op, ns = [], []
        for k, (ip, ins, outs) in enumerate(self._steps):
            t0 = time.perf_counter_ns()
            for i, t in enumerate(ins):
                ip.set_input(np.ascontiguousarray(values[t]), i)
            with _quiet_stderr():
                ip.invoke()
            got = [np.array(ip.get_output(i), copy=True) for i in range(len(outs))]
            ns.append(time.perf_counter_ns() - t0)
            if hasattr(ip, "reset"):
                ip.reset()
            if k == perturb_op and lsb:
                got[0] = perturb(got[0], lsb)
            for t, a in zip(outs, got):
                values[t] = a
            per_op.append(got)
        return per_op, ns, [values[t] for t in self._outputs]


# ------------------------------------------------------------------ comparison


@dataclass
class OpDiff:
    """How a device's operator output differs from the reference's."""

    index: int
    op_type: str
    name: str
    crc_match: bool
    ticks: int = 0
    captured: int = 0  # elements compared (0: not captured)
    elements: int = 0
    max_lsb: float | None = None
    mean_lsb: float | None = None
    differing_pct: float | None = None
    cosine: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Localization:
    """One sample's answer to "where does it drift"."""

    sample: int
    n_ops: int
    first_divergence: int | None  # operator index, None when every operator agrees
    ops: list[OpDiff] = field(default_factory=list)
    reference_agrees: bool = True  # TFLM's and LiteRT-ref's intermediates are equal
    reference_disagreements: list[int] = field(default_factory=list)
    invokes: int = 0  # extra invokes the localization cost

    @property
    def first(self) -> OpDiff | None:
        return None if self.first_divergence is None else self.ops[self.first_divergence]

    def line(self) -> str:
        f = self.first
        if f is None:
            return f"sample {self.sample}: no divergence (every one of {self.n_ops} operators matches the host)"
        txt = f"sample {self.sample}: first divergence: op {f.index} {f.op_type} '{f.name}'"
        if f.max_lsb is not None:
            txt += f", max {f.max_lsb:g} LSB, {f.differing_pct:.0f} % of elements"
        return txt

    def to_dict(self) -> dict:
        return {
            "sample": self.sample,
            "n_ops": self.n_ops,
            "first_divergence": self.first_divergence,
            "reference_agrees": self.reference_agrees,
            "reference_disagreements": list(self.reference_disagreements),
            "invokes": self.invokes,
            "ops": [o.to_dict() for o in self.ops],
        }


def compare_capture(op: OpInfo, device: bytes, ref: np.ndarray) -> dict:
    """LSB statistics and cosine of a captured prefix of `op`'s first output."""
    dt = np.dtype(op.dtype).newbyteorder("<")
    n = len(device) // dt.itemsize
    d = np.frombuffer(device[: n * dt.itemsize], dt).astype(np.float64)
    r = np.ascontiguousarray(ref).reshape(-1)[:n].astype(np.float64)
    diff = np.abs(d - r)
    if np.issubdtype(dt, np.floating) and op.scale:
        diff = diff / op.scale
    deq = (lambda v: (v - op.zero_point) * op.scale) if op.scale else (lambda v: v)
    a, b = deq(d), deq(r)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    cos = float(np.dot(a, b) / (na * nb)) if na and nb else (1.0 if na == nb else 0.0)
    return {
        "captured": int(n),
        "max_lsb": float(diff.max()) if n else 0.0,
        "mean_lsb": float(diff.mean()) if n else 0.0,
        "differing_pct": float(100.0 * np.count_nonzero(diff) / n) if n else 0.0,
        "cosine": cos,
    }


def split_capture(ops: Sequence[OpInfo], first_op: int, n_ops: int, data: bytes) -> dict[int, bytes]:
    """A capture's bytes per operator (back to back, the last one perhaps cut)."""
    out, pos = {}, 0
    for k in range(first_op, min(first_op + n_ops, len(ops))):
        out[k] = data[pos : pos + ops[k].nbytes]
        pos += ops[k].nbytes
    return out


def localize(
    model: bytes,
    inputs: Sequence[np.ndarray],
    crcs: Sequence[int],
    ticks: Sequence[int] = (),
    capture: tuple[int, int, bytes] | None = None,
    sample: int = 0,
    cross_check: bool = True,
    reference: list[list[np.ndarray]] | None = None,
) -> Localization:
    """Compare a device's per-operator CRCs (and a capture `(first_op, n_ops,
    bytes)`) with the host's TFLM run of the same inputs."""
    ops = model_ops(model)
    ref = reference if reference is not None else reference_outputs(model, inputs, "tflm")
    disagree: list[int] = []
    if cross_check:
        other = reference_outputs(model, inputs, "litert_ref")
        disagree = [k for k in range(len(ops)) if output_crc(ref[k]) != output_crc(other[k])]
    diffs, first = [], None
    for k, op in enumerate(ops):
        ok = k < len(crcs) and int(crcs[k]) == output_crc(ref[k])
        if not ok and first is None:
            first = k
        diffs.append(OpDiff(k, op.op_type, op.output_name, ok, int(ticks[k]) if k < len(ticks) else 0))
        diffs[-1].elements = int(np.prod(op.shape)) if op.shape else 1
    if capture is not None:
        first_op, n_ops, data = capture
        for k, b in split_capture(ops, first_op, n_ops, data).items():
            for key, v in compare_capture(ops[k], b, ref[k][0]).items():
                setattr(diffs[k], key, v)
    return Localization(sample, len(ops), first, diffs, not disagree, disagree)


# ------------------------------------------------------------------ on the device


def localize_on_device(
    session, model: bytes, inputs: Sequence[np.ndarray], sample: int = 0, trace=None
) -> Localization:
    """Trace one sample on the device (or take `trace`, a `TraceResult` of
    these inputs the caller already has); when an operator diverges, run it
    once more capturing from that operator. At most 2 extra invokes."""
    invokes = 0
    if trace is None:
        trace = session.trace(inputs)
        invokes += 1
    loc = localize(model, inputs, trace.crcs, trace.ticks, sample=sample)
    if loc.first_divergence is not None and session.info.capture_bytes:
        tr2 = session.trace(inputs, capture_op=loc.first_divergence)
        invokes += 1
        loc = localize(model, inputs, tr2.crcs, tr2.ticks, tr2.capture, sample=sample)
    loc.invokes = invokes
    return loc
