"""The real firmware (main loop, TFLM runner, protocol library, native board
glue) built as a host program against a local TFLM tree, driven over its
pseudo-terminal by the harness's DeviceSession: outputs must be bit-exact to
TFLM's Python reference, the handshake must describe the model, and TFLM's
logs must arrive as LOG frames, never as raw text.

Needs a TFLM tree: HIL_TFLM_DIR=/path/to/tflm_tree (create_tflm_tree.py
output, reference kernels). The tree is compiled once into
~/.cache/tinyhil/tflm (harness/tflm.py); the first run takes minutes."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from helpers import firmware_build as fb

from harness.testing.models import build_tiny_models, random_inputs

pytestmark = [pytest.mark.tflm, pytest.mark.slow]

N_SAMPLES = 12


@pytest.fixture(scope="session")
def tflm_native(tmp_path_factory):
    if not os.environ.get("HIL_TFLM_DIR"):
        pytest.skip("needs a TFLM tree: set HIL_TFLM_DIR=/path/to/tflm_tree (see docs/build.md)")
    from harness import tflm

    tree = tflm.find_tree()
    if tree.has_cmsis_nn:
        pytest.skip(
            f"HIL_TFLM_DIR={tree.root} holds CMSIS-NN kernels: set it to the reference tree (see docs/build.md)"
        )
    lib = tflm.build_static_lib(tree, "g++", list(tflm.DEFAULT_FLAGS))
    common = fb.build_native_common(tree, tmp_path_factory.mktemp("native_common"))
    return tree, lib, common


@pytest.fixture(scope="session")
def sim_models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("native_models"))


def _model(request, name, sim_models):
    """(tflite path, validation npz or None)."""
    if name in sim_models:
        return sim_models[name], None
    value = request.getfixturevalue(name)
    return value.tflite, value.npz


_built: dict = {}


def build_for(model_path, tflm_native, tmp_path_factory, defines=()):
    """Codegen + build, once per model and defines."""
    key = (str(model_path), defines)
    if key not in _built:
        from harness import codegen

        tree, lib, common = tflm_native
        work = tmp_path_factory.mktemp("native_fw")
        codegen.generate(model_path, work / "model")
        _built[key] = fb.build_native(tree, lib, common, work / "model", work / "build", defines=defines)
    return _built[key]


class NativeDevice:
    def __init__(self, exe, *args):
        self.proc = subprocess.Popen(
            [str(exe), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        line = self.proc.stdout.readline().decode()
        assert line.startswith("HIL_PORT /dev/"), line
        self.port = line.split()[1]

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def random_sample(inputs, rng):
    return random_inputs(inputs, rng)


@pytest.mark.parametrize("name", ["gesture_model", "audio_model", "float_io", "int8_io", "two_outputs"])
def test_native_firmware_is_bit_exact_to_tflm(request, name, tflm_native, sim_models, tmp_path_factory):
    from harness.boards import load_board
    from harness.model import inspect_model, read_model_bytes
    from harness.protocol.session import DeviceSession, check_device_matches
    from harness.runtime import HostInterpreter, prepare_input

    model_path, npz = _model(request, name, sim_models)
    exe = build_for(model_path, tflm_native, tmp_path_factory)
    model = inspect_model(model_path)
    ref = HostInterpreter(read_model_bytes(model_path), "tflm")
    rng = np.random.default_rng(7)
    samples = []
    if npz is not None:  # the example's own validation inputs and TFLM outputs
        data = np.load(npz)
        for i in range(min(N_SAMPLES, len(data["x"]))):
            samples.append(([prepare_input(data["x"][i], model.inputs[0])], data["y_tflm"][i]))
    while len(samples) < N_SAMPLES:
        samples.append((random_sample(model.inputs, rng), None))
    dev = NativeDevice(exe)
    try:
        with DeviceSession(dev.port, timeout=5.0) as s:
            info = s.handshake()
            assert check_device_matches(info, model) == []
            assert info.board == "native" and info.model_size == model_path.stat().st_size
            assert 0 < info.arena_used <= info.arena_size
            board = load_board("native")  # the defines came from its JSON
            assert (info.max_frame, info.rx_window) == (board.max_frame, board.rx_window)
            for x, y_tflm in samples:
                got = s.infer(x)
                want = ref.run(x)
                for g, w in zip(got.outputs, want):
                    assert g.dtype == w.dtype and g.shape == w.shape
                    assert g.tobytes() == w.tobytes(), "device output differs from TFLM's reference"
                if y_tflm is not None:  # and from what convert stored as the oracle
                    assert (
                        got.outputs[0].tobytes()
                        == np.asarray(y_tflm, got.outputs[0].dtype).reshape(got.outputs[0].shape).tobytes()
                    )
            assert s.stats.retransmits == 0
    finally:
        dev.close()


def test_firmware_with_another_model_is_refused(tflm_native, sim_models, tmp_path_factory):
    from harness.model import inspect_model
    from harness.protocol.session import DeviceSession, check_device_matches

    exe = build_for(sim_models["float_io"], tflm_native, tmp_path_factory)
    dev = NativeDevice(exe)
    try:
        with DeviceSession(dev.port, timeout=5.0) as s:
            problems = check_device_matches(s.handshake(), inspect_model(sim_models["int8_io"]))
    finally:
        dev.close()
    assert any("sha256" in p.lower() or "model" in p.lower() for p in problems), problems
    assert any("int8" in p for p in problems), problems


def _frames(data: bytes):
    from harness.protocol import codec as c

    dec = c.FrameDecoder()
    frames = dec.feed(data)
    return [f.message() for f in frames], dec.dropped


def test_tflm_logs_travel_as_log_frames(tflm_native, sim_models, tmp_path_factory):
    """An arena too small for the model: TFLM's own error text and the
    runner's reason arrive as LOG frames, the handshake answers NOT_READY,
    and nothing but valid frames is ever written on the link (--stdio)."""
    from harness.protocol import codec as c

    exe = build_for(sim_models["float_io"], tflm_native, tmp_path_factory, defines=("-DHIL_ARENA_SIZE=256",))
    hello = c.encode_message(c.Hello(1, 1, 5), 1)
    proc = subprocess.run([str(exe), "--stdio"], input=b"\x00" + hello, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    msgs, dropped = _frames(proc.stdout)
    assert dropped == 0 and proc.stdout.endswith(b"\x00"), "raw bytes on the link"
    assert isinstance(msgs[0], c.Boot)
    logs = [m.text for m in msgs if isinstance(m, c.Log)]
    assert any("model not ready" in t and "256-byte arena" in t for t in logs), logs
    assert len(logs) >= 2, "TFLM's own allocation error is missing: " + repr(logs)
    err = msgs[-1]
    assert isinstance(err, c.Error) and err.name == "NOT_READY" and "AllocateTensors" in err.message


def test_stdio_link_and_startup_log(tflm_native, sim_models, tmp_path_factory):
    from harness.protocol import codec as c

    exe = build_for(sim_models["int8_io"], tflm_native, tmp_path_factory)
    stream = b"\x00" + c.encode_message(c.Hello(1, 1, 5), 1) + c.encode_message(c.Ping(b"abc"), 2)
    proc = subprocess.run([str(exe), "--stdio"], input=stream, capture_output=True, timeout=30)
    assert proc.returncode == 0
    msgs, dropped = _frames(proc.stdout)
    assert dropped == 0
    kinds = [type(m).__name__ for m in msgs]
    assert kinds == ["Boot", "Log", "Info", "Pong"], kinds
    assert "ready" in msgs[1].text and msgs[2].board == "native" and msgs[3].data == b"abc"


def test_native_firmware_links_no_allocator(tflm_native, sim_models, tmp_path_factory):
    """What `hil build` checks on every ELF: no malloc/free/new/delete/_sbrk,
    defined or imported from the C library."""
    from harness.build import allocator_symbols

    exe = build_for(sim_models["float_io"], tflm_native, tmp_path_factory)
    assert allocator_symbols(exe) == []
