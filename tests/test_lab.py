"""The lab on simulated boards: lab file, locks, `hil lab run` / `check`,
`hil validate --lab --instance` (real ports, real processes, loopback only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest

from harness.errors import ConfigError
from harness.lab.labfile import load_lab
from harness.lab.lock import BoardBusyError, BoardLock
from harness.lab.run import RunSettings, model_specs, run_lab
from harness.testing.lab import SAMPLES, SimProcess, hil, hil_env, lab_yaml, write_data
from harness.testing.models import tiny_models

pytestmark = pytest.mark.timeout(180)
N_BOARDS = 3


@pytest.fixture(scope="session")
def lab_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("lab-models")
    m = tiny_models()
    fl, i8 = m["float_io"], m["int8_io"]
    return {
        "float_io": (fl, write_data(fl, d / "float_io.npz")),
        "int8_io": (i8, write_data(i8, d / "int8_io.npz", seed=1)),
        "tampered": (fl, write_data(fl, d / "float_io_tampered.npz", tamper=True)),
    }


@pytest.fixture(scope="session")
def shelf(lab_models):
    """Three simulated boards holding float_io, on pseudo-terminals, shared by the session."""
    from harness.device.sim import start_sim

    model = lab_models["float_io"][0]
    sims = [start_sim(model, listen="pty", baud=0, latency_ms=0, arena_size=8192) for _ in range(N_BOARDS)]
    yield sims
    for s in sims:
        s.close()


@pytest.fixture
def lock_dir(tmp_path):
    return tmp_path / "locks"


@pytest.fixture
def lab_file(tmp_path, shelf, lock_dir):
    inst = {f"sim-{i}": {"board": "sim", "port": s.url, "tags": ["shelf"]} for i, s in enumerate(shelf)}
    return lab_yaml(tmp_path / "lab.yaml", inst, lock_dir=lock_dir)


def settings(**kw):
    kw.setdefault("timeout", 0.5)
    kw.setdefault("retries", 2)
    return RunSettings(**kw)


# --------------------------------------------------------------------------- lab file


@pytest.mark.parametrize(
    "text, line, key",
    [
        ("instances:\n  a:\n    board: nosuch\n    port: loop://\n", 3, "instances.a.board"),
        ("instances:\n  a:\n    board: sim\n", 3, "instances.a"),
        ("instances:\n  a:\n    board: sim\n    port: loop://\n    colour: red\n", 5, "instances.a.colour"),
        ("instances:\n  a:\n    board: sim\n    usb: {vid: 2341, pid: zz}\n", 4, "instances.a.usb.pid"),
        ("instances:\n  a:\n    board: sim\n    port: loop://\n    baud: fast\n", 5, "instances.a.baud"),
        ("instances:\n  a:\n    board: sim\n    port: loop://\n    power: {labgrid: true}\n", 5, "power.labgrid"),
        ("instances:\n  a: {board: sim, port: /dev/x}\n  b: {board: sim, port: /dev/x}\n", 3, "instances.b"),
        ("instances:\n  a:\n    board: sim\n   port: x\n", 4, "not valid YAML"),
        ("lock_dir: /tmp\n", 1, "instances"),
    ],
)
def test_lab_file_errors_name_file_line_and_key(tmp_path, text, line, key):
    p = tmp_path / "lab.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_lab(p)
    assert f"{p}:{line}:" in e.value.message
    assert key in e.value.message


def test_lab_file_reads_every_way_of_reaching_a_board(tmp_path):
    p = tmp_path / "lab.yaml"
    p.write_text(
        "instances:\n"
        "  nano-1:\n    board: nano33ble\n    usb: {vid: '2341', pid: 805a, serial: ABC}\n"
        "    power: {command: 'uhubctl -a cycle -p 2'}\n    tags: [ble, nightly]\n"
        "  n6:\n    board: nucleo_n657x0_q\n    port: /dev/ttyACM3\n    flash: {ram: true}\n"
        "  remote:\n    board: nano33ble\n    place: lab-nano-2\n    power: {labgrid: true}\n"
    )
    lab = load_lab(p)
    nano, n6, remote = lab.instances
    assert (nano.usb.vid, nano.usb.pid, nano.usb.serial) == (0x2341, 0x805A, "ABC")
    assert nano.power.command == ("uhubctl", "-a", "cycle", "-p", "2")
    assert n6.flash.ram and remote.place == "lab-nano-2" and remote.power.labgrid
    assert [i.name for i in lab.select(["tag:ble"])] == ["nano-1"]
    assert [i.name for i in lab.select(["n*", "remote"])] == ["nano-1", "n6", "remote"]
    with pytest.raises(ConfigError, match="matches no instance"):
        lab.select(["tag:none"])


# --------------------------------------------------------------------------- lock


def test_lock_is_exclusive_and_names_its_holder(lock_dir):
    a = BoardLock("port:/dev/ttyX", lock_dir=lock_dir, label="board x")
    b = BoardLock("port:/dev/ttyX", lock_dir=lock_dir, label="board x")
    with a:
        assert not b.try_acquire()
        with pytest.raises(BoardBusyError) as e:
            b.acquire()
        assert f"pid {os.getpid()}" in e.value.message and "since" in e.value.message
        assert e.value.exit_code == 2
    assert b.try_acquire()
    b.release()


def test_lock_waits_for_the_holder(lock_dir):
    a = BoardLock("k", lock_dir=lock_dir).acquire()
    now = [0.0]
    sleeps = []

    def sleep(s):  # the holder lets go while the second one waits
        sleeps.append(s)
        now[0] += s
        if len(sleeps) == 3:
            a.release()

    b = BoardLock("k", lock_dir=lock_dir, wait=10, clock=lambda: now[0], sleep=sleep)
    b.acquire()
    assert b.held and len(sleeps) == 3
    b.release()
    c_holder = BoardLock("k", lock_dir=lock_dir).acquire()
    d = BoardLock("k", lock_dir=lock_dir, wait=1, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    with pytest.raises(BoardBusyError, match="after waiting 1 s"):
        d.acquire()
    c_holder.release()


def test_a_sigkilled_holder_leaves_no_lock(lock_dir):
    code = (
        "import sys, time; from harness.lab.lock import BoardLock;"
        f"BoardLock('port:/dev/ttyK', lock_dir={str(lock_dir)!r}).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=hil_env())
    try:
        assert p.stdout.readline().strip() == "locked"
        lock = BoardLock("port:/dev/ttyK", lock_dir=lock_dir)
        assert lock.holder()["pid"] == p.pid
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert lock.holder() is None
        assert lock.try_acquire()
        lock.release()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# --------------------------------------------------------------------------- run


def test_lab_run_passes_on_every_board_in_parallel(lab_file, lab_models, tmp_path):
    lab = load_lab(lab_file)
    barrier = threading.Barrier(N_BOARDS)
    seen = []

    def on_event(kind, **kw):
        seen.append((kind, kw.get("instance")))
        if kind == "locked":
            barrier.wait(timeout=60)  # only passes when every board is held at once

    specs = model_specs(*zip(lab_models["float_io"]))
    res = run_lab(lab, specs, out=tmp_path / "out", settings=settings(samples=SAMPLES), on_event=on_event)
    assert [c.status for c in res.cells] == ["PASS"] * N_BOARDS, [c.error for c in res.cells]
    assert res.exit_code == 0
    assert all(c.headline["samples_done"] == SAMPLES and c.device["board"] == "sim" for c in res.cells)
    assert all((tmp_path / "out" / c.reports["html"]).is_file() for c in res.cells)


def test_cli_lab_run_reports_drift_on_a_tampered_reference(lab_file, lab_models, tmp_path):
    m, good = lab_models["float_io"]
    _, bad = lab_models["tampered"]
    out = tmp_path / "out"
    r = hil(
        "lab",
        "run",
        "--lab",
        lab_file,
        "--model",
        m,
        "--data",
        good,
        "--model",
        m,
        "--data",
        bad,
        "--samples",
        SAMPLES,
        "--timeout",
        0.5,
        "--out",
        out,
    )
    assert r.returncode == 1, r.stderr
    d = json.loads((out / "lab.json").read_text())
    assert d["schema"] == "tinyhil-lab-report/1" and d["exit_code"] == 1
    by = {(c["instance"], c["model"]): c["status"] for c in d["cells"]}
    names = [x["name"] for x in d["models"]]
    assert names == ["float_io", "float_io-2"]
    assert all(by[(f"sim-{i}", "float_io")] == "PASS" for i in range(N_BOARDS))
    assert all(by[(f"sim-{i}", "float_io-2")] == "DRIFT" for i in range(N_BOARDS))
    suites = ET.parse(out / "lab-junit.xml").getroot().findall("testsuite")
    assert len(suites) == 2 * N_BOARDS
    assert {s.get("name") for s in suites} >= {"sim-0.float_io", "sim-2.float_io-2"}
    page = (out / "lab.html").read_text()
    assert 'href="sim-1/float_io/report.html"' in page and "DRIFT" in page and "cos " in page
    assert "DRIFT" in r.stderr


def test_a_board_killed_mid_run_is_error_and_the_others_pass(tmp_path, shelf, lab_models, lock_dir):
    model, data = lab_models["float_io"]
    doomed = SimProcess(model, tmp_path / "doomed.json", baud=115200)
    try:
        inst = {"sim-0": {"board": "sim", "port": shelf[0].url}, "sim-1": {"board": "sim", "port": shelf[1].url}}
        inst["doomed"] = {"board": "sim", "port": doomed.url}
        lab = load_lab(lab_yaml(tmp_path / "lab.yaml", inst, lock_dir=lock_dir))

        def on_event(kind, **kw):
            if kind == "sample" and kw["instance"] == "doomed" and kw["n"] == 2:
                doomed.kill()

        res = run_lab(lab, model_specs([model], [data]), out=tmp_path / "out", settings=settings(), on_event=on_event)
        st = {c.instance: c for c in res.cells}
        assert st["doomed"].status == "ERROR" and st["doomed"].attempts == 1
        assert st["doomed"].headline["samples_done"] >= 2
        assert st["sim-0"].status == st["sim-1"].status == "PASS"
        assert res.exit_code == 2
    finally:
        doomed.stop()


def test_power_control_cycles_an_erroring_board_and_tries_again(tmp_path, lab_models, lock_dir):
    model, data = lab_models["float_io"]
    state = tmp_path / "board.json"
    board = SimProcess(model, state, baud=115200)
    try:
        cmd = [sys.executable, "-m", "harness.testing.lab", "restart-sim", str(state)]
        inst = {"flaky": {"board": "sim", "port": board.url, "power": {"command": cmd}}}
        lab = load_lab(lab_yaml(tmp_path / "lab.yaml", inst, lock_dir=lock_dir))
        events = []

        def on_event(kind, **kw):
            events.append(kind)
            if kind == "sample" and kw["n"] == 2 and "power_cycle" not in events:
                board.kill()  # the board hangs; the power cycle brings it back

        res = run_lab(lab, model_specs([model], [data]), out=tmp_path / "out", settings=settings(), on_event=on_event)
        (c,) = res.cells
        assert c.status == "PASS" and c.power_cycled and c.attempts == 2, c.error
        assert events.index("power_cycle") < len(events) - 1
    finally:
        board.stop()


def test_a_second_run_on_the_same_boards_is_refused(lab_file, lab_models, tmp_path, lock_dir):
    m, d = lab_models["float_io"]
    lab = load_lab(lab_file)
    held = BoardLock(lab.get("sim-1").lock_key, lock_dir=lock_dir).acquire()
    try:
        r = hil("lab", "run", "--lab", lab_file, "--model", m, "--data", d, "--samples", 2, "--out", tmp_path / "o")
        assert r.returncode == 2
        assert f"pid {os.getpid()}" in r.stderr and "sim-1" in r.stderr
        cells = {c["instance"]: c["status"] for c in json.loads((tmp_path / "o" / "lab.json").read_text())["cells"]}
        assert cells == {"sim-0": "PASS", "sim-1": "ERROR", "sim-2": "PASS"}
    finally:
        held.release()


def test_a_second_run_waits_for_the_board_and_then_runs(lab_file, lab_models, tmp_path, lock_dir):
    lab = load_lab(lab_file)
    held = BoardLock(lab.get("sim-0").lock_key, lock_dir=lock_dir).acquire()

    def on_event(kind, **kw):
        if kind == "waiting":
            held.release()  # the first run ends while the second waits

    res = run_lab(
        lab,
        model_specs(*zip(lab_models["float_io"])),
        select=["sim-0"],
        out=tmp_path / "o",
        settings=settings(wait=60, samples=2),
        on_event=on_event,
    )
    assert [c.status for c in res.cells] == ["PASS"]
    assert not held.held


# --------------------------------------------------------------------------- check, validate/flash --instance


def test_lab_check_lists_every_instance_with_what_it_holds(lab_file, lab_models, tmp_path, lock_dir):
    from harness.model import inspect_bytes, read_model_bytes

    lab = load_lab(lab_file)
    held = BoardLock(lab.get("sim-2").lock_key, lock_dir=lock_dir).acquire()
    try:
        r = hil("lab", "check", "--lab", lab_file, "--json", tmp_path / "c.json")
        assert r.returncode == 2  # one is busy
        st = {s["name"]: s for s in json.loads((tmp_path / "c.json").read_text())["instances"]}
        sha = inspect_bytes(read_model_bytes(lab_models["float_io"][0])).sha256
        assert st["sim-0"]["state"] == st["sim-1"]["state"] == "idle"
        assert st["sim-0"]["model_sha256"] == sha and st["sim-0"]["device_board"] == "sim"
        assert st["sim-2"]["state"] == "busy" and f"pid {os.getpid()}" in st["sim-2"]["holder"]
        assert "busy" in r.stdout and "sim-2" in r.stdout
    finally:
        held.release()


def test_validate_with_lab_instance_takes_the_same_lock(lab_file, lab_models, lock_dir):
    m, d = lab_models["float_io"]
    r = hil("validate", "--lab", lab_file, "--instance", "sim-0", "--model", m, "--data", d, "--samples", 2)
    assert r.returncode == 0, r.stderr
    lab = load_lab(lab_file)
    with BoardLock(lab.get("sim-0").lock_key, lock_dir=lock_dir):
        r = hil("validate", "--lab", lab_file, "--instance", "sim-0", "--model", m, "--data", d, "--samples", 2)
        assert r.returncode == 2 and "busy" in r.stderr and f"pid {os.getpid()}" in r.stderr
        r = hil("flash", "--lab", lab_file, "--instance", "sim-0")
        assert r.returncode == 2 and "busy" in r.stderr
    r = hil("validate", "--lab", lab_file, "--instance", "nope", "--model", m, "--data", d)
    assert r.returncode == 2 and "no instance 'nope'" in r.stderr


def test_lab_run_help_has_examples():
    r = hil("lab", "run", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "exit codes" in r.stdout


@pytest.mark.tflm
@pytest.mark.timeout(1200)
def test_lab_run_builds_once_and_validates_native_firmware_instances(gesture_model, tmp_path):
    """Two instances of the real firmware as host programs: one build for the
    board type, each instance started (its port is the pty it prints) and
    validated bit-exact to TFLM, every program stopped afterwards."""
    tree = os.environ.get("HIL_TFLM_DIR")
    if not tree:
        pytest.skip("set HIL_TFLM_DIR=/path/to/tflm_tree (see docs/build.md) to run a lab of native-firmware boards")
    # The port is a placeholder: the native firmware's start prints the real one (a pty).
    inst = {
        name: {"board": "native", "port": f"socket://127.0.0.1:{i + 1}"} for i, name in enumerate(["nat-a", "nat-b"])
    }
    lab = lab_yaml(tmp_path / "lab.yaml", inst, lock_dir=tmp_path / "locks")
    r = hil(
        "lab",
        "run",
        "--lab",
        lab,
        "--model",
        gesture_model.tflite,
        "--data",
        gesture_model.npz,
        "--out",
        tmp_path / "out",
        "--samples",
        8,
        env=hil_env(HIL_TFLM_DIR=tree),
        timeout=1100,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "out" / "lab.json").read_text())
    cells = {c["instance"]: c for c in rep["cells"]}
    assert set(cells) == {"nat-a", "nat-b"} and all(c["status"] == "PASS" for c in cells.values())
    for c in cells.values():
        assert c["port"].startswith("/dev/"), c["port"]  # the pty the started firmware printed
        assert any(st.startswith("flashed native") for st in c["steps"]), c["steps"]
