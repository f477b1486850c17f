"""A fake device session for validate's tests: answers like a device running
TFLM, without a link."""

from __future__ import annotations

import numpy as np

from harness.model import inspect_model
from harness.protocol.codec import TensorDescriptor
from harness.protocol.session import DeviceInfo, InferenceResult, LinkStats
from harness.runtime import HostInterpreter


class FakeSession:
    """Answers like a device running TFLM; `perturb(i, outputs)` may change
    the outputs of sample i; `fail_at` raises there."""

    instances: list = []

    def __init__(self, model_path, perturb=None, fail_at=None, fail_with=None, other_model=False):
        self.model = model_path.read_bytes()
        self.info_model = inspect_model(model_path)
        self.ip = HostInterpreter(self.model, "tflm")
        self.perturb, self.fail_at, self.fail_with = perturb, fail_at, fail_with
        self.other_model = other_model
        self.stats = LinkStats()
        self.received = []
        self.logs = [(2, "fake board up")]
        self.closed = False

    def __call__(self, url, **kw):  # used as the session factory
        self.url, self.kw = url, kw
        FakeSession.instances.append(self)
        return self

    def handshake(self):
        d = lambda t: TensorDescriptor(t.dtype, tuple(t.shape), t.scale, t.zero_point, t.nbytes)  # noqa: E731
        sha = ("00" * 32) if self.other_model else self.info_model.sha256
        return DeviceInfo(
            1,
            2,
            4096,
            4,
            100000,
            5000,
            len(self.model),
            sha,
            0,
            "fake 1.0",
            "fake",
            [d(t) for t in self.info_model.inputs],
            [d(t) for t in self.info_model.outputs],
        )

    def infer(self, inputs):
        i = len(self.received)
        if self.fail_at is not None and i == self.fail_at:
            raise self.fail_with
        self.received.append([np.array(x) for x in inputs])
        outs = self.ip.run(inputs)
        if self.perturb:
            outs = self.perturb(i, outs)
        self.stats.bytes_sent += sum(x.nbytes for x in inputs) + 40
        self.stats.bytes_received += sum(o.nbytes for o in outs) + 40
        self.stats.elapsed += 0.001
        return InferenceResult(outputs=outs, invoke_us=100 + i, cycles=0, status=0)

    def close(self):
        self.closed = True
