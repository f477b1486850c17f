"""The STM32N6 NPU's channel rule: which layers of a model it would leave to
software.

ST's Neural-ART accelerator runs a convolution, pooling or dense layer on
the NPU when its channel counts are multiples of 8 (ST Edge AI Core
documentation, "STM32N6 NPU: supported operators and limitations"); any
other layer falls back to the Cortex-M55. `hil convert` and `hil codegen`
with an STM32N6 `--board` report those layers, one warning each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.boards import Board

CHANNEL_MULTIPLE = 8
# Layers whose channels are the last axis (NHWC) of their input and output.
CHANNEL_OPS = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "TRANSPOSE_CONV",
    "FULLY_CONNECTED",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
}


@dataclass(frozen=True)
class ChannelIssue:
    index: int  # operator index in the subgraph
    op: str
    tensor: str  # "input" or "output"
    name: str  # the tensor's name
    channels: int

    def message(self) -> str:
        return (
            f"layer {self.index} {self.op} ({self.name}): {self.tensor} has {self.channels} channels, "
            f"not a multiple of {CHANNEL_MULTIPLE} -- the STM32N6 NPU would run it in software"
        )


def applies_to(board: Board | None) -> bool:
    return board is not None and str(board.get("mcu", "")).upper().startswith("STM32N6")


def channel_issues(data: bytes) -> list[ChannelIssue]:
    """Every layer of the model's main subgraph whose input or output
    channel count is not a multiple of 8."""
    from ai_edge_litert import schema_py_generated as s

    from harness.model import _opcode_names, inspect_bytes

    inspect_bytes(data)  # a clear ModelError for what is not a .tflite
    m = s.Model.GetRootAs(data, 0)
    names = _opcode_names()
    codes = [
        max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        for oc in map(m.OperatorCodes, range(m.OperatorCodesLength()))
    ]
    g = m.Subgraphs(0)
    issues = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        name = names.get(codes[op.OpcodeIndex()], "")
        if name not in CHANNEL_OPS:
            continue
        # The data input only (weights and bias follow it).
        ends = [("input", op.Inputs(0))] if op.InputsLength() else []
        ends += [("output", op.Outputs(j)) for j in range(op.OutputsLength())]
        for role, t_index in ends:
            if t_index < 0:
                continue
            t = g.Tensors(t_index)
            if not t.ShapeLength():
                continue
            channels = int(t.ShapeAsNumpy()[-1])
            if channels % CHANNEL_MULTIPLE:
                tname = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor {t_index}"
                issues.append(ChannelIssue(i, name, role, tname, channels))
    return issues


def npu_warnings(model: str | Path | bytes, board: Board | None) -> list[str]:
    """The per-layer warnings for `board` (none for a board without the NPU)."""
    if not applies_to(board):
        return []
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    return [issue.message() for issue in channel_issues(data)]
