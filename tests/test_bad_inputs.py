"""The standing bad-input campaign: what tinyhil promises (docs/promises.md).

Every case gives a hostile or nonsensical input to a command and checks the
promise: exit 2 (1 only for an evaluated gate), exactly one line on stderr
naming the problem (no traceback), and every file that existed before --
inputs and earlier outputs -- byte-identical afterwards. Case ids say what
is covered: `<command>-<what is wrong>`.

The signal and child-process tests at the end run `hil` as a subprocess
(signals need a process of their own); the rest run in-process.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main

REFUSED = "socket://127.0.0.1:1"  # nothing listens there


# --------------------------------------------------------------------------- the workspace


@pytest.fixture
def w(tmp_path, gesture_model, monkeypatch):
    """A folder with the inputs (model, data, config, Keras model, training
    data) and earlier outputs (a PASS report set) every case may touch."""
    monkeypatch.delenv("HIL_PORT", raising=False)
    monkeypatch.delenv("HIL_BOARD", raising=False)
    w = tmp_path / "w"
    w.mkdir()
    shutil.copy(gesture_model.tflite, w / "m.tflite")
    shutil.copy(gesture_model.npz, w / "d.npz")
    shutil.copy(gesture_model.config, w / "m_model_config.json")
    shutil.copy(gesture_model.keras, w / "m.keras")
    rng = np.random.default_rng(0)
    (w / "train").mkdir()
    np.save(w / "train" / "X.npy", rng.normal(size=(40, 150)).astype(np.float32))
    np.save(w / "train" / "y.npy", rng.integers(0, 4, 40))
    (w / "old").mkdir()
    for name in ("r.json", "r.xml", "r.html"):
        (w / "old" / name).write_text('{"status": "pass"}  earlier PASS report\n')
    (w / "afile").write_text("a file where a folder is expected\n")
    (w / "adir").mkdir()
    return w


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _npy_header(shape, dtype="<f4") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


# Makers of bad files: each returns the path it made in `w`.
def truncated_npz(w):
    b = (w / "d.npz").read_bytes()
    (w / "trunc.npz").write_bytes(b[: len(b) // 2])
    return w / "trunc.npz"


def crc_damaged_npz(w):
    b = bytearray((w / "d.npz").read_bytes())
    x_at = b.find(b"x.npy")
    body = b.find(b"NUMPY", x_at) + 200  # inside the first array's data
    b[body] ^= 0xFF
    (w / "crc.npz").write_bytes(bytes(b))
    return w / "crc.npz"


def garbage_npz(w):
    (w / "garbage.npz").write_bytes(os.urandom(2048))
    return w / "garbage.npz"


def huge_header_npy(w):
    (w / "huge.npy").write_bytes(_npy_header((10**12, 150)) + b"\0" * 64)
    return w / "huge.npy"


def huge_header_npz(w):
    return _zip(w / "huge.npz", {"x.npy": _npy_header((10**12, 150)) + b"\0" * 64})


def lying_header_npz(w):
    # Not beyond the limit, but beyond what the file can hold.
    return _zip(w / "lying.npz", {"x.npy": _npy_header((100000, 150)) + b"\0" * 64})


def short_npy(w):
    (w / "short.npy").write_bytes(_npy_header((32, 150)) + b"\0" * 100)
    return w / "short.npy"


def object_npz(w):
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    return _zip(w / "obj.npz", {"x.npy": buf.getvalue(), "y.npy": _npy_bytes(np.arange(4))})


def _npy_bytes(a) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def object_train_folder(w):
    import io

    d = w / "objtrain"
    d.mkdir()
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}] * 8, dtype=object), allow_pickle=True)
    (d / "X.npy").write_bytes(buf.getvalue())
    np.save(d / "y.npy", np.arange(8) % 4)
    return d


def huge_train_folder(w):
    d = w / "hugetrain"
    d.mkdir()
    (d / "X.npy").write_bytes(_npy_header((10**11, 150)) + b"\0" * 64)
    np.save(d / "y.npy", np.arange(8) % 4)
    return d


def symlink_to(w, name, target):
    (w / name).symlink_to(target)
    return w / name


def hardlink_to(w, name, target):
    os.link(target, w / name)
    return w / name


def unix_socket(w):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(w / "sock"))
    w.joinpath(".keep").write_text("")  # the socket file stays after close
    s.close()
    return w / "sock"


def nan_mean_config(w):
    cfg = json.loads((w / "m_model_config.json").read_text())
    cfg["normalization"] = {"mean": [float("nan")] * 3, "std": [1.0] * 3}
    (w / "nan_cfg.json").write_text(json.dumps(cfg).replace("NaN", "NaN"))
    return w / "nan_cfg.json"


def zero_std_config(w):
    cfg = json.loads((w / "m_model_config.json").read_text())
    cfg["normalization"] = {"mean": [0.0] * 3, "std": [0.0] * 3}
    (w / "zero_cfg.json").write_text(json.dumps(cfg))
    return w / "zero_cfg.json"


def script_program(w):
    p = w / "notelf"
    p.write_text("#!/bin/sh\necho /dev/pts/0\nsleep 30\n")
    p.chmod(0o755)
    return p


def val(w, *extra, data=None, port=REFUSED):
    return ["validate", "--port", port, "--model", str(w / "m.tflite"), "--data", str(data or w / "d.npz"), *extra]


def conv(w, *extra, data=None):
    return [
        "convert",
        "--checkpoint_path",
        str(w / "m.keras"),
        "--model_config",
        str(w / "m_model_config.json"),
        "--data_path_train",
        str(data or w / "train"),
        "--num_samples",
        "16",
        "--validate_samples",
        "8",
        *extra,
    ]


def cg(w, *extra, model=None, out=None):
    return ["codegen", "--model", str(model or w / "m.tflite"), "--out", str(out or w / "gen"), *extra]


def sim(w, *extra):
    return ["device", "sim", "--model", str(w / "m.tflite"), *extra]


def demo(w, *extra, out=None):
    return ["demo", "--out", str(out or w / "demo"), *extra]


# id -> (argv maker, words the one error line must hold)
CASES = {
    # ---- validate: outputs over inputs, bad report paths
    "validate-report_json_is_the_model": (
        lambda w: val(w, "--report-json", str(w / "m.tflite")),
        ["is the input --model"],
    ),
    "validate-junit_xml_is_the_data": (lambda w: val(w, "--junit-xml", str(w / "d.npz")), ["is the input --data"]),
    "validate-html_is_the_data": (lambda w: val(w, "--html", str(w / "d.npz")), ["is the input --data"]),
    "validate-report_via_dotdot_is_the_model": (
        lambda w: val(w, "--report-json", str(w / "adir" / ".." / "m.tflite")),
        ["is the input --model"],
    ),
    "validate-report_is_the_model_behind_a_symlinked_model": (
        lambda w: [
            "validate",
            "--port",
            REFUSED,
            "--model",
            str(symlink_to(w, "link.tflite", w / "m.tflite")),
            "--data",
            str(w / "d.npz"),
            "--report-json",
            str(w / "m.tflite"),
        ],
        ["is the input --model"],
    ),
    "validate-report_is_a_hard_link_of_the_data": (
        lambda w: val(w, "--html", str(hardlink_to(w, "hl.html", w / "d.npz"))),
        ["is the input --data"],
    ),
    "validate-two_reports_one_path": (
        lambda w: val(w, "--report-json", str(w / "r.out"), "--html", str(w / "r.out")),
        ["is also the output"],
    ),
    "validate-report_parent_is_a_file": (
        lambda w: val(w, "--report-json", str(w / "afile" / "r.json")),
        ["is a file, not a folder"],
    ),
    "validate-report_deeper_below_a_file": (
        lambda w: val(w, "--junit-xml", str(w / "afile" / "sub" / "r.xml")),
        ["is a file, not a folder"],
    ),
    "validate-report_is_a_folder": (lambda w: val(w, "--report-json", str(w / "adir")), ["is a folder"]),
    "validate-report_is_a_socket": (lambda w: val(w, "--report-json", str(unix_socket(w))), ["is a socket"]),
    "validate-report_is_the_port_device": (
        lambda w: val(w, "--report-json", str(w / "afile"), port=str(w / "afile")),
        ["is the input --port"],
    ),
    # ---- validate: nonsense options
    "validate-timeout_nan": (lambda w: val(w, "--timeout", "nan"), ["--timeout", "not a finite number"]),
    "validate-timeout_inf": (lambda w: val(w, "--timeout", "inf"), ["--timeout", "not a finite number"]),
    "validate-timeout_zero": (lambda w: val(w, "--timeout", "0"), ["--timeout", "must be above 0"]),
    "validate-timeout_negative": (lambda w: val(w, "--timeout", "-1"), ["--timeout", "must be above 0"]),
    "validate-timeout_text": (lambda w: val(w, "--timeout", "soon"), ["--timeout", "not a number"]),
    "validate-samples_zero": (lambda w: val(w, "--samples", "0"), ["--samples", "at least 1"]),
    "validate-baud_zero": (lambda w: val(w, "--baud", "0"), ["--baud", "not a baud rate"]),
    "validate-retries_negative": (lambda w: val(w, "--retries", "-1"), ["--retries", "0 or more"]),
    "validate-max_lsb_minus_2": (lambda w: val(w, "--max-lsb", "-2"), ["--max_lsb", "-1 turns the gate off"]),
    "validate-min_cosine_2": (lambda w: val(w, "--min-cosine", "2"), ["--min_cosine", "between -1 and 1"]),
    "validate-min_top1_nan": (lambda w: val(w, "--min-top1", "nan"), ["--min_top1", "not a finite number"]),
    "validate-worst_k_negative": (lambda w: val(w, "--worst-k", "-3"), ["--worst_k", "0 or more"]),
    "validate-no_port": (
        lambda w: ["validate", "--model", str(w / "m.tflite"), "--data", str(w / "d.npz")],
        ["no port given"],
    ),
    "validate-unknown_board": (lambda w: val(w, "--board", "no_such_board"), ["no_such_board"]),
    # ---- validate: hostile data files
    "validate-data_truncated_npz": (lambda w: val(w, data=truncated_npz(w)), ["corrupt", "trunc.npz"]),
    "validate-data_crc_damaged_npz": (lambda w: val(w, data=crc_damaged_npz(w)), ["corrupt", "CRC"]),
    "validate-data_garbage_npz": (lambda w: val(w, data=garbage_npz(w)), ["corrupt", "not a NumPy"]),
    "validate-data_huge_header_npy": (lambda w: val(w, data=huge_header_npy(w)), ["claims shape", "allowed"]),
    "validate-data_huge_header_npz": (lambda w: val(w, data=huge_header_npz(w)), ["claims shape", "allowed"]),
    "validate-data_header_beyond_the_file": (lambda w: val(w, data=lying_header_npz(w)), ["corrupt", "at most"]),
    "validate-data_truncated_npy_body": (lambda w: val(w, data=short_npy(w)), ["corrupt", "at most"]),
    "validate-data_object_array": (lambda w: val(w, data=object_npz(w)), ["Python objects", "never loaded"]),
    "validate-data_missing": (lambda w: val(w, data=w / "nope.npz"), ["does not exist"]),
    "validate-data_is_a_folder": (lambda w: val(w, data=w / "adir"), ["is a folder"]),
    "validate-model_missing": (
        lambda w: ["validate", "--port", REFUSED, "--model", str(w / "nope.tflite"), "--data", str(w / "d.npz")],
        ["nope.tflite"],
    ),
    "validate-model_is_garbage": (
        lambda w: ["validate", "--port", REFUSED, "--model", str(garbage_npz(w)), "--data", str(w / "d.npz")],
        ["garbage.npz"],
    ),
    # ---- validate: ports
    "validate-port_is_a_folder": (lambda w: val(w, port=str(w / "adir")), ["is a folder, not a serial device"]),
    "validate-port_does_not_exist": (lambda w: val(w, port=str(w / "ttyNOPE")), ["does not exist"]),
    "validate-port_refuses_connections": (lambda w: val(w), ["connection refused"]),
    # ---- convert: outputs over inputs (checked before any conversion)
    "convert-report_json_is_the_checkpoint": (
        lambda w: conv(w, "--report-json", str(w / "m.keras")),
        ["is the input --checkpoint_path"],
    ),
    "convert-report_json_is_the_model_config": (
        lambda w: conv(w, "--report-json", str(w / "m_model_config.json")),
        ["is the input --model_config"],
    ),
    "convert-validation_npz_would_replace_the_training_data": (
        lambda w: conv(
            w, "--output_path", str(w / "t.tflite"), data=shutil.copy(w / "d.npz", w / "t_validation_data.npz")
        ),
        ["is the input --data_path_train"],
    ),
    "convert-report_json_over_a_training_file": (
        lambda w: conv(w, "--report-json", str(w / "train" / "X.npy")),
        ["file of the input folder --data_path_train"],
    ),
    "convert-report_json_is_the_output": (
        lambda w: conv(w, "--output_path", str(w / "o.tflite"), "--report-json", str(w / "o.tflite")),
        ["is also the output"],
    ),
    "convert-report_parent_is_a_file": (
        lambda w: conv(w, "--report-json", str(w / "afile" / "r.json")),
        ["is a file, not a folder"],
    ),
    "convert-output_parent_is_a_file": (
        lambda w: conv(w, "--output_path", str(w / "afile" / "o.tflite")),
        ["is a file, not a folder"],
    ),
    # ---- convert: nonsense options
    "convert-batch_validate_zero": (lambda w: conv(w, "--batch_validate", "0"), ["--batch_validate", "at least 1"]),
    "convert-batch_validate_negative": (
        lambda w: conv(w, "--batch-validate", "-2"),
        ["--batch_validate", "at least 1"],
    ),
    "convert-num_samples_zero": (lambda w: conv(w, "--num_samples", "0"), ["--num_samples", "at least 1"]),
    "convert-validate_samples_text": (lambda w: conv(w, "--validate_samples", "many"), ["not a whole number"]),
    "convert-signal_threshold_nan": (lambda w: conv(w, "--signal_threshold", "nan"), ["signal threshold"]),
    "convert-min_cosine_sim_nan": (lambda w: conv(w, "--min_cosine_sim", "nan"), ["not a finite number"]),
    "convert-seed_negative": (lambda w: conv(w, "--seed", "-1"), ["--seed", "0 or more"]),
    # ---- convert: hostile training data (these load the Keras model first)
    "convert-training_object_array": (
        lambda w: conv(w, data=object_train_folder(w)),
        ["Python objects", "never loaded"],
    ),
    "convert-training_huge_header": (lambda w: conv(w, data=huge_train_folder(w)), ["claims shape"]),
    "convert-training_npz_truncated": (lambda w: conv(w, data=truncated_npz(w)), ["corrupt"]),
    # ---- codegen
    "codegen-out_is_a_file": (lambda w: cg(w, out=w / "afile"), ["is a file, not a folder"]),
    "codegen-out_holds_the_model_as_model_data_cc": (
        lambda w: cg(w, model=_into(w, "gen2", "model_data.cc"), out=w / "gen2"),
        ["is the input --model"],
    ),
    "codegen-model_config_would_be_overwritten": (
        lambda w: cg(
            w, "--model_config", str(_into(w, "gen3", "model_data.h", w / "m_model_config.json")), out=w / "gen3"
        ),
        ["is the input --model_config"],
    ),
    "codegen-nan_in_the_mean": (lambda w: cg(w, "--model_config", str(nan_mean_config(w))), ["mean", "non-finite"]),
    "codegen-zero_std": (lambda w: cg(w, "--model_config", str(zero_std_config(w))), ["std", "zero"]),
    "codegen-model_missing": (lambda w: cg(w, model=w / "nope.tflite"), ["nope.tflite"]),
    "codegen-model_is_garbage": (lambda w: cg(w, model=garbage_npz(w)), ["garbage.npz"]),
    "codegen-bad_arena_margin": (lambda w: cg(w, "--arena-margin", "lots"), ["lots"]),
    "codegen-unknown_board": (lambda w: cg(w, "--board", "no_such_board"), ["no_such_board"]),
    # ---- device sim
    "sim-arena_size_minus_1": (lambda w: sim(w, "--arena-size", "-1"), ["--arena_size", "at least 1"]),
    "sim-arena_size_zero": (lambda w: sim(w, "--arena-size", "0"), ["--arena_size", "at least 1"]),
    "sim-latency_nan": (lambda w: sim(w, "--latency-ms", "nan"), ["--latency_ms", "not a finite number"]),
    "sim-latency_inf": (lambda w: sim(w, "--latency-ms", "inf"), ["--latency_ms", "not a finite number"]),
    "sim-latency_negative": (lambda w: sim(w, "--latency-ms", "-1"), ["--latency_ms", "0 or more"]),
    "sim-baud_negative": (lambda w: sim(w, "--baud", "-9600"), ["--baud", "0 or more"]),
    "sim-seed_negative": (lambda w: sim(w, "--seed", "-5"), ["--seed", "0 or more"]),
    "sim-faults_ber_above_1": (lambda w: sim(w, "--faults", "ber=2"), ["ber"]),
    "sim-faults_unknown": (lambda w: sim(w, "--faults", "gremlins=1"), ["gremlins"]),
    "sim-listen_port_out_of_range": (lambda w: sim(w, "--listen", "tcp:99999"), ["tcp:99999"]),
    "sim-model_missing": (lambda w: ["device", "sim", "--model", str(w / "nope.tflite")], ["nope.tflite"]),
    "sim-unknown_board": (lambda w: sim(w, "--board", "no_such_board"), ["no_such_board"]),
    # ---- flash
    "flash-native_elf_is_an_executable_script": (
        lambda w: ["flash", "--board", "native", "--elf", str(script_program(w))],
        ["is not an ELF program"],
    ),
    "flash-qemu_elf_is_not_an_elf": (
        lambda w: ["flash", "--board", "qemu_m55", "--elf", str(w / "m.tflite")],
        ["is not an ELF file"],
    ),
    "flash-native_elf_missing": (
        lambda w: ["flash", "--board", "native", "--elf", str(w / "nope")],
        ["does not exist"],
    ),
    "flash-pid_file_is_the_elf": (
        lambda w: [
            "flash",
            "--board",
            "qemu_m55",
            "--elf",
            str(w / "m.tflite"),
            "--detach",
            "--pid-file",
            str(w / "m.tflite"),
        ],
        ["is the input --elf"],
    ),
    "flash-log_parent_is_a_file": (
        lambda w: ["flash", "--board", "qemu_m55", "--log", str(w / "afile" / "q.log")],
        ["is a file, not a folder"],
    ),
    "flash-tcp_port_out_of_range": (
        lambda w: ["flash", "--board", "qemu_m55", "--tcp-port", "70000"],
        ["not a TCP port"],
    ),
    "flash-unknown_board": (lambda w: ["flash", "--board", "no_such_board"], ["no_such_board"]),
    # ---- demo (refused before any training)
    "demo-out_is_an_existing_file": (lambda w: demo(w, out=w / "afile"), ["is a file, not a folder"]),
    "demo-reports_folder_is_a_file": (
        lambda w: demo(w, out=_file_at(w, "demo4", "reports")),
        ["is a file, not a folder"],
    ),
    "demo-samples_zero": (lambda w: demo(w, "--samples", "0"), ["--samples", "at least 1"]),
    "demo-latency_nan": (lambda w: demo(w, "--latency-ms", "nan"), ["--latency_ms", "not a finite number"]),
    "demo-bad_faults": (lambda w: demo(w, "--faults", "ber=often"), ["ber"]),
    "demo-faults_with_qemu": (lambda w: demo(w, "--board", "qemu_m55", "--faults", "ber=1e-4"), ["--faults"]),
    "demo-unknown_example": (lambda w: demo(w, "--example", "weather"), ["invalid choice"]),
    # ---- build (cheap ones)
    "build-unknown_board": (
        lambda w: ["build", "--board", "no_such_board", "--model", str(w / "m.tflite")],
        ["no_such_board"],
    ),
    "build-no_model": (lambda w: ["build", "--board", "native"], ["--model"]),
}


def _into(w, folder, name, source=None):
    d = w / folder
    d.mkdir()
    shutil.copy(source or w / "m.tflite", d / name)
    return d / name


def _file_at(w, folder, name):
    d = w / folder
    d.mkdir()
    (d / name).write_text("not a folder\n")
    return d


def test_the_campaign_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, w, capsys):
    make, words = CASES[case]
    argv = make(w)
    before = _snapshot(w)
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if os.environ.get("HIL_SHOW_CASES"):
        sys.__stderr__.write(f"\n{case}: {err.strip()}\n")
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error:"), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    after = _snapshot(w)
    changed = [p for p, h in before.items() if after.get(p) != h]
    assert not changed, f"pre-existing files changed or lost: {changed}"
    assert not [p for p in after if p.endswith(".part")], "temporary files left behind"


# --------------------------------------------------------------------------- exit codes by design

# command -> (module attribute that does the work, argv)
COMMAND_ENTRIES = {
    "convert": ("harness.convert.convert", lambda w: conv(w)),
    "codegen": ("harness.codegen.generate", lambda w: cg(w)),
    "validate": ("harness.validate.validate", lambda w: val(w)),
    "demo": ("harness.demo.run_demo", lambda w: demo(w)),
    "build": ("harness.build.build", lambda w: ["build", "--board", "native", "--model", str(w / "m.tflite")]),
    "flash": ("harness.flash.flash", lambda w: ["flash", "--board", "qemu_m55"]),
    "device": ("harness.device.sim.start_sim", lambda w: sim(w)),
    "ports": ("harness.ports.list_ports", lambda w: ["ports"]),
    "boards": ("harness.boards.all_boards", lambda w: ["boards"]),
}


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyError("boom"), MemoryError("boom")], ids=type)
@pytest.mark.parametrize("command", sorted(COMMAND_ENTRIES))
def test_an_unexpected_exception_in_any_command_is_exit_2_one_line(command, exc, w, capsys, monkeypatch):
    target, make = COMMAND_ENTRIES[command]
    mod, attr = target.rsplit(".", 1)

    def explode(*a, **k):
        raise exc

    # The command's module may hold its own reference (`from harness.x import f`): replace that one too
    # (imported first, so that it does not bind the replacement at import).
    cli_mod = importlib.import_module(f"harness.cli.{command}")
    monkeypatch.setattr(f"{mod}.{attr}", explode)
    for name, value in list(vars(cli_mod).items()):
        if getattr(value, "__module__", None) == mod and getattr(value, "__name__", None) == attr:
            monkeypatch.setattr(cli_mod, name, explode)
    rc = main([*make(w), "-q"])  # quiet: progress lines off, errors stay
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"internal error: {type(exc).__name__}" in lines[0] and "--debug" in lines[0], lines[0]


def test_debug_shows_the_traceback(w, monkeypatch):
    monkeypatch.setattr("harness.cli.codegen.generate", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main([*cg(w), "--debug"])


def test_exit_1_needs_a_gate_verdict(w, capsys, monkeypatch):
    """A command returning a bare 1 (no gate was evaluated) exits 2: only a
    `Verdict` may say "drifted"."""
    import harness.cli.codegen as cli_codegen
    from harness.cli._common import Verdict

    monkeypatch.setattr(cli_codegen, "run", lambda args: 1)
    assert main(cg(w)) == 2 and "without a gate verdict" in capsys.readouterr().err
    monkeypatch.setattr(cli_codegen, "run", lambda args: Verdict(1))
    assert main(cg(w)) == 1


# --------------------------------------------------------------------------- signals and children


def _hil(*argv, **kw) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("HIL_PORT", None)
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie not yet reaped by init counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


def _wait_gone(pid: int, limit: float = 15.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def _children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().split(") ")[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "how", [("SIGTERM",), ("SIGHUP",), ("SIGINT", "SIGINT")], ids=["sigterm", "sighup", "double_ctrl_c"]
)
def test_a_cancelled_validate_replaces_an_earlier_pass_report_set_with_the_partial_one(how, gesture_model, tmp_path):
    from harness.device.sim import start_sim

    reports = {"--report-json": tmp_path / "r.json", "--junit-xml": tmp_path / "r.xml", "--html": tmp_path / "r.html"}
    for p in reports.values():
        p.write_text("earlier PASS\n")
    with start_sim(gesture_model.tflite, listen="pty", baud=115200) as sim_:
        p = _hil(
            "validate",
            "--port",
            sim_.url,
            "--model",
            str(gesture_model.tflite),
            "--data",
            str(gesture_model.npz),
            *[x for kv in reports.items() for x in (kv[0], str(kv[1]))],
        )
        deadline = time.monotonic() + 90
        while sim_.device.stats.invokes < 3 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        for sig in how:
            p.send_signal(getattr(signal, sig))
            time.sleep(0.02)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 2, err
    assert "Traceback" not in err, err
    r = json.loads(reports["--report-json"].read_text())
    assert r["status"] == "error" and r["interrupted"] and r["partial"], r["status"]
    assert "earlier PASS" not in reports["--junit-xml"].read_text()
    html = reports["--html"].read_text()
    assert "earlier PASS" not in html and "<html" in html.lower()
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_device_sim_stops_on_every_cancel_signal(sig, gesture_model):
    p = _hil("device", "sim", "--model", str(gesture_model.tflite), "--listen", "tcp:0", "--arena-size", "20000")
    url = p.stdout.readline().strip()
    assert url.startswith("socket://"), p.stderr.read()
    p.send_signal(getattr(signal, sig))
    p.communicate(timeout=30)
    assert p.returncode == 0
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nobody listens any more


def _runner(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "runner.py"
    script.write_text("import sys, time\nfrom harness import procs\nfrom harness.cli import main\n" + body)
    return script


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT", "SIGKILL"])
def test_a_child_process_dies_with_tinyhil(sig, tmp_path):
    """procs.popen children go with their parent on every signal; on SIGKILL
    the kernel's parent-death signal does it."""
    script = _runner(
        tmp_path,
        "p = procs.popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(p.pid, flush=True)\n"
        "with procs.cancel_on_signals():\n"
        "    try:\n"
        "        p.wait()\n"
        "    finally:\n"
        "        procs.stop(p)\n",
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    child = int(parent.stdout.readline())
    assert not _gone(child)
    parent.send_signal(getattr(signal, sig))
    parent.wait(30)
    assert _wait_gone(child), f"child {child} outlived its parent after {sig}"


def _pty_program(tmp_path: Path) -> Path:
    """A stand-in for the native firmware: an ELF that opens a pty, prints
    its path and runs until stopped."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler: apt-get install gcc")
    src = tmp_path / "ptyprog.c"
    src.write_text(
        "#define _XOPEN_SOURCE 600\n#include <stdio.h>\n#include <stdlib.h>\n#include <fcntl.h>\n#include <unistd.h>\n"
        "int main(void) { int m = posix_openpt(O_RDWR | O_NOCTTY); grantpt(m); unlockpt(m);\n"
        '  printf("%s\\n", ptsname(m)); fflush(stdout); for (;;) pause(); }\n'
    )
    exe = tmp_path / "firmware"
    subprocess.run([cc, "-o", str(exe), str(src)], check=True)
    return exe


def _spin_elf(tmp_path: Path) -> Path:
    """A Cortex-M55 ELF that spins forever: enough for QEMU to run, no TFLM needed."""
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        pytest.skip("arm-none-eabi-gcc missing: apt-get install gcc-arm-none-eabi")
    src = tmp_path / "spin.c"
    src.write_text(
        'void spin(void) { for (;;) { __asm__ volatile("nop"); } }\n'
        '__attribute__((section(".vectors"), used)) void (*const vectors[2])(void) = '
        "{(void (*)(void))0x20010000, spin};\n"
    )
    elf = tmp_path / "spin.elf"
    subprocess.run(
        [
            gcc,
            "-mcpu=cortex-m55",
            "-mthumb",
            "-nostdlib",
            "-O1",
            "-Wl,--section-start=.vectors=0x0",
            "-Wl,-Ttext=0x100",
            "-Wl,-e,spin",
            "-o",
            str(elf),
            str(src),
        ],
        check=True,
    )
    return elf


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT", "SIGKILL"])
@pytest.mark.parametrize("board", ["qemu_m55", "native"])
def test_a_foreground_flash_takes_its_emulator_or_firmware_with_it(board, sig, tmp_path):
    if board == "qemu_m55":
        if shutil.which("qemu-system-arm") is None:
            pytest.skip("qemu-system-arm missing: apt-get install qemu-system-arm")
        elf = _spin_elf(tmp_path)
    else:
        elf = _pty_program(tmp_path)
    p = _hil("flash", "--board", board, "--elf", str(elf))
    url = p.stdout.readline().strip()
    assert url, p.stderr.read()
    kids = []
    end = time.monotonic() + 10
    while not kids and time.monotonic() < end:
        kids = _children_of(p.pid)
        time.sleep(0.05)
    assert kids, "the emulator/firmware did not start"
    p.send_signal(getattr(signal, sig))
    p.communicate(timeout=30)
    if sig != "SIGKILL":
        assert p.returncode == 0  # a foreground run is stopped this way
    for k in kids:
        assert _wait_gone(k), f"{board}: pid {k} outlived hil after {sig}"


def test_a_demo_cancelled_before_validation_replaces_an_earlier_pass_report_set(w, capsys, monkeypatch):
    reports = w / "demo" / "reports"
    reports.mkdir(parents=True)
    for name in ("validation.json", "validation.xml", "validation.html"):
        (reports / name).write_text('{"status": "pass"}\n')
    old = time.time() - 60
    for p in reports.iterdir():
        os.utime(p, (old, old))

    def cancelled(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("harness.cli.demo.run_demo", cancelled)
    rc = main(demo(w))
    err = capsys.readouterr().err
    assert rc == 2 and "interrupted" in err and "Traceback" not in err, err
    r = json.loads((reports / "validation.json").read_text())
    assert r["status"] == "error" and r["interrupted"] and r["samples_done"] == 0
    assert '"pass"' not in (reports / "validation.html").read_text()
    assert "<testsuite" in (reports / "validation.xml").read_text()


# --------------------------------------------------------------------------- one host at a time


@pytest.mark.timeout(120)
def test_a_simulated_board_on_tcp_refuses_a_second_host(gesture_model, tmp_path, capsys):
    from harness.device.sim import start_sim
    from harness.protocol.session import DeviceSession

    with start_sim(gesture_model.tflite, listen="tcp:0", arena_size=20000) as sim_:
        first = DeviceSession(sim_.url, timeout=1.0, retries=2)
        try:
            first.handshake()
            before = _snapshot(tmp_path)
            rc = main(
                [
                    "validate",
                    "--port",
                    sim_.url,
                    "--model",
                    str(gesture_model.tflite),
                    "--data",
                    str(gesture_model.npz),
                    "--timeout",
                    "1",
                    "--retries",
                    "2",
                ]
            )
            err = capsys.readouterr().err
            assert rc == 2, err
            lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert len(lines) == 1 and "board busy" in lines[0] and "serving 127.0.0.1:" in lines[0], err
            assert _snapshot(tmp_path) == before
            first.ping() if hasattr(first, "ping") else first.handshake()  # the first host is still served
        finally:
            first.close()
        # Once the first host is gone the board serves the next one.
        again = DeviceSession(sim_.url, timeout=1.0, retries=2)
        try:
            assert again.handshake().board == "sim"
        finally:
            again.close()
