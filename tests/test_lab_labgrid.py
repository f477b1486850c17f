"""The lab across "two hosts": a real labgrid coordinator and two exporters
on 127.0.0.1 exporting simulated boards' pseudo-terminals through ser2net
(RFC 2217). Skips with an instruction when labgrid or ser2net is missing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from harness.testing.lab import ROOT, SAMPLES, LabgridLab, hil, lab_yaml, write_data
from harness.testing.models import tiny_models

pytestmark = pytest.mark.timeout(240)

if shutil.which("labgrid-coordinator") is None or shutil.which("labgrid-exporter") is None:
    pytest.skip("labgrid is not installed: pip install 'tinyhil[labgrid]' (or run .ci/setup)", allow_module_level=True)
SER2NET = shutil.which("ser2net") or ("/usr/sbin/ser2net" if os.path.exists("/usr/sbin/ser2net") else None)
if SER2NET is None:
    pytest.skip("ser2net is not installed: apt-get install ser2net (or run .ci/setup)", allow_module_level=True)


@pytest.fixture(scope="module")
def lg_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("lg-models")
    m = tiny_models()["float_io"]
    return m, write_data(m, d / "float_io.npz")


@pytest.fixture(scope="module")
def lg_lab(tmp_path_factory, lg_models):
    from harness.device.sim import start_sim

    root = tmp_path_factory.mktemp("labgrid")
    sims = [start_sim(lg_models[0], listen="pty", baud=0, latency_ms=0, arena_size=8192) for _ in range(2)]
    lab = LabgridLab(root, SER2NET)
    try:
        lab.start(["labgrid-coordinator", "--listen", lab.address], root)
        lab.wait_port(lab.port, lab.procs[0], "labgrid-coordinator")
        for i, host in enumerate(("host-a", "host-b")):
            cfg = root / f"{host}.yaml"
            cfg.write_text(f"board:\n  RawSerialPort:\n    port: {sims[i].url}\n    speed: 115200\n")
            lab.start(["labgrid-exporter", "-c", lab.address, "-n", host, "--hostname", "127.0.0.1", str(cfg)], root)
        for host in ("host-a", "host-b"):
            place = f"sim-{host}"
            lab.client("-p", place, "create")
            lab.client("-p", place, "add-match", f"{host}/board/NetworkSerialPort/*")
        for _ in range(100):  # the exporters register their resources
            out = lab.client("resources", check=False).stdout
            if "host-a/board" in out and "host-b/board" in out:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("the exporters did not register")
        inst = {f"remote-{h}": {"board": "sim", "place": f"sim-{h}"} for h in ("host-a", "host-b")}
        lab.file = lab_yaml(root / "lab.yaml", inst, lock_dir=root / "locks", coordinator=lab.address)
        yield lab
    finally:
        lab.stop()
        for s in sims:
            s.close()


def listening_sockets() -> list[str]:
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    return [line.split()[3] for line in out.splitlines() if line.strip()]


def test_lab_run_across_two_exporters_passes_and_releases(lg_lab, lg_models, tmp_path):
    m, d = lg_models
    r = hil(
        "lab",
        "run",
        "--lab",
        lg_lab.file,
        "--model",
        m,
        "--data",
        d,
        "--samples",
        SAMPLES,
        "--out",
        tmp_path / "o",
        env=lg_lab.env,
    )
    assert r.returncode == 0, r.stderr
    cells = json.loads((tmp_path / "o" / "lab.json").read_text())["cells"]
    assert {c["instance"]: c["status"] for c in cells} == {"remote-host-a": "PASS", "remote-host-b": "PASS"}
    assert all(c["port"].startswith("rfc2217://127.0.0.1:") and "ign_set_control" in c["port"] for c in cells)
    assert not lg_lab.acquired("sim-host-a") and not lg_lab.acquired("sim-host-b")


def test_every_server_binds_loopback(lg_lab):
    pids = {p.pid for p in lg_lab.procs}
    assert pids and all(p.poll() is None for p in lg_lab.procs)
    held = lg_lab.client("-p", "sim-host-a", "acquire")  # ser2net runs while the place is acquired
    try:
        assert held.returncode == 0
        time.sleep(0.6)  # the exporter starts ser2net asynchronously after the acquire
        addrs = listening_sockets()
        assert addrs
        assert not [
            a
            for a in addrs
            if a.startswith(("0.0.0.0:", "*:", "[::]:")) and int(a.rsplit(":", 1)[1]) in _ports_of(pids)
        ]
    finally:
        lg_lab.client("-p", "sim-host-a", "release")


def _ports_of(pids: set[int]) -> set[int]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    ports = set()
    for line in out.splitlines():
        # ser2net is a child of an exporter: match by our pids and by the ser2net name
        if any(f"pid={p}," in line for p in pids) or "ser2net" in line:
            ports.add(int(line.split()[3].rsplit(":", 1)[1]))
    return ports


def test_a_competing_run_is_refused(lg_lab, lg_models, tmp_path):
    m, d = lg_models
    lg_lab.client("-p", "sim-host-b", "acquire", LG_USERNAME="other-ci")
    try:
        r = hil(
            "lab",
            "run",
            "--lab",
            lg_lab.file,
            "--model",
            m,
            "--data",
            d,
            "--samples",
            2,
            "--out",
            tmp_path / "o",
            env=lg_lab.env,
        )
        assert r.returncode == 2
        assert "sim-host-b is busy: acquired by" in r.stderr and "other-ci" in r.stderr
        cells = {c["instance"]: c["status"] for c in json.loads((tmp_path / "o" / "lab.json").read_text())["cells"]}
        assert cells == {"remote-host-a": "PASS", "remote-host-b": "ERROR"}
    finally:
        lg_lab.client("-p", "sim-host-b", "release", "--kick", LG_USERNAME="other-ci")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_places_are_released_on_ctrl_c_and_sigterm(lg_lab, lg_models, tmp_path, sig):
    m, _ = lg_models
    big = write_data(m, tmp_path / "big.npz", n=5000)  # long enough to be stopped mid-run
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "lab",
        "run",
        "--lab",
        str(lg_lab.file),
        "--model",
        str(m),
        "--data",
        str(big),
        "--out",
        str(tmp_path / "o"),
    ]
    p = subprocess.Popen(cmd, env=lg_lab.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):  # bounded: until both places are held
            if lg_lab.acquired("sim-host-a") and lg_lab.acquired("sim-host-b"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the run did not acquire its places")
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2, err
        assert not lg_lab.acquired("sim-host-a") and not lg_lab.acquired("sim-host-b")
        d = json.loads((tmp_path / "o" / "lab.json").read_text())
        assert d["interrupted"] and {c["status"] for c in d["cells"]} == {"ERROR"}
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_lab_check_through_labgrid(lg_lab):
    r = hil("lab", "check", "--lab", lg_lab.file, env=lg_lab.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("idle") == 2
    assert not lg_lab.acquired("sim-host-a")


def test_the_labgrid_driver_validates_a_board_in_a_labgrid_environment(lg_lab, lg_models, tmp_path):
    m, d = lg_models
    lg_lab.client("-p", "sim-host-a", "acquire")
    try:
        env_yaml = tmp_path / "env.yaml"
        env_yaml.write_text(
            "imports: [harness.lab.labgrid_driver]\n"
            "targets:\n  main:\n    resources:\n      RemotePlace: {name: sim-host-a}\n"
            "    drivers:\n      TinyhilDriver: {board: sim}\n      TinyhilStrategy: {}\n"
        )
        code = (
            "from labgrid import Environment\n"
            f"t = Environment({str(env_yaml)!r}).get_target('main')\n"
            "t.get_driver('TinyhilStrategy').transition('ready')\n"
            f"r = t.get_driver('TinyhilDriver').validate({str(m)!r}, {str(d)!r}, samples=2)\n"
            "print(r.exit_code, r.to_dict()['settings']['port'])\n"
            "t.cleanup()\n"
        )
        r = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=lg_lab.env, timeout=120, cwd=ROOT
        )
        assert r.returncode == 0, r.stderr
        code_, port = r.stdout.split()[-2:]
        assert code_ == "0" and port.startswith("rfc2217://127.0.0.1:")
    finally:
        lg_lab.client("-p", "sim-host-a", "release")


def _serial_wheels(tmp: Path) -> dict[str, Path]:
    wheels = tmp / "wheels"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "-d",
            str(wheels),
            "pyserial>=3.5",
            "pyserial-labgrid",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0:
        pytest.skip("pip cannot fetch pyserial / pyserial-labgrid here (offline?): " + r.stderr.strip()[-200:])
    out = {}
    for w in wheels.glob("*.whl"):
        dist = "pyserial-labgrid" if w.name.startswith("pyserial_labgrid") else "pyserial"
        dest = tmp / dist
        zipfile.ZipFile(w).extractall(dest)
        out[dist] = dest
    return out


def test_validate_over_rfc2217_works_with_both_serial_distributions(lg_lab, lg_models, tmp_path):
    """pyserial and labgrid's pyserial-labgrid install the same module `serial`;
    whichever is installed, validate through an exported place passes."""
    import serial

    assert serial.serial_for_url("loop://").is_open  # the installed `serial` works
    m, d = lg_models
    for dist, path in _serial_wheels(tmp_path).items():
        env = dict(lg_lab.env)
        env["PYTHONPATH"] = f"{path}{os.pathsep}{env['PYTHONPATH']}"
        where = subprocess.run(
            [sys.executable, "-c", "import serial; print(serial.__file__)"], env=env, capture_output=True, text=True
        ).stdout
        assert where.startswith(str(path)), (dist, where)
        r = hil(
            "validate",
            "--lab",
            lg_lab.file,
            "--instance",
            "remote-host-a",
            "--model",
            m,
            "--data",
            d,
            "--samples",
            2,
            env=env,
        )
        assert r.returncode == 0, (dist, r.stderr)
