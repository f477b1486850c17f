"""Parts of a test lab: simulated boards (in this process, or as their own
process so a test can kill one), lab files, data files. Used by
tests/test_lab*.py and bench/lab.py.

Also a small command line, used as a lab file's flash/power command:
    python -m harness.testing.lab restart-sim STATE.json
stops the simulated board named in STATE.json (pid) and starts it again on
the same TCP port — what a power cycle does to a board.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness.model import inspect_bytes, read_model_bytes

# The checkout (or site-packages) that holds the `harness` package.
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = 8


def hil_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def hil(*args, env=None, timeout=180, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *map(str, args)],
        capture_output=True,
        text=True,
        env=env or hil_env(),
        timeout=timeout,
        cwd=kw.pop("cwd", None),
        **kw,
    )


def write_data(model: Path, path: Path, n: int = SAMPLES, seed: int = 0, tamper: bool = False) -> Path:
    """Float inputs for a tiny model; with `tamper`, TFLM references that are
    noise (a host reference that does not match: DRIFT on every board)."""

    info = inspect_bytes(read_model_bytes(model), model)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *info.inputs[0].shape[1:])).astype(np.float32)
    arrays = {"x": x}
    if tamper:
        t = info.outputs[0]
        if t.np_dtype.kind == "f":
            arrays["y_tflm"] = rng.normal(size=(n, *t.shape)).astype(np.float32)
        else:
            arrays["y_tflm"] = rng.integers(-128, 128, size=(n, *t.shape)).astype(t.np_dtype)
    np.savez(path, **arrays)
    return path


class SimProcess:
    """`hil device sim` in its own process on a TCP port of 127.0.0.1."""

    def __init__(self, model: Path, state: Path, baud: int = 0, port: int = 0):
        self.model, self.state, self.baud = Path(model), Path(state), baud
        self.proc = None
        self.url = None
        self.start(port)

    def start(self, port: int = 0) -> None:
        cmd = [sys.executable, "-m", "harness", "device", "sim", "--model", str(self.model)]
        cmd += ["--listen", f"tcp:{port}", "--baud", str(self.baud), "--latency-ms", "0", "--arena-size", "8192"]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=hil_env(),
            start_new_session=True,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("socket://"):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the simulated board did not start: {line!r}")
        self.url = line
        self.state.write_text(
            json.dumps({"pid": self.proc.pid, "url": self.url, "model": str(self.model), "baud": self.baud})
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """Also stops a board that a power command started again (its pid is in the state file)."""
        self.kill()
        try:
            pid = json.loads(self.state.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return
        _kill_pid(pid)


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(100):  # bounded: reap if it is our child, else wait for it to go
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)


def restart_sim(state_path: Path) -> None:
    st = json.loads(Path(state_path).read_text())
    _kill_pid(int(st["pid"]))
    port = int(st["url"].rsplit(":", 1)[1])
    for _ in range(50):  # the old socket may linger for a moment
        try:
            sim = SimProcess(Path(st["model"]), Path(state_path), baud=int(st.get("baud", 0)), port=port)
            break
        except RuntimeError:
            time.sleep(0.1)
    else:
        raise SystemExit("could not start the simulated board again")
    sim.proc.stdout.close()  # it lives on after this command (a power cycle leaves the board running)


def lab_yaml(path: Path, instances: dict[str, dict], lock_dir: Path | None = None, coordinator: str | None = None):
    import yaml

    doc: dict = {}
    if lock_dir is not None:
        doc["lock_dir"] = str(lock_dir)
    if coordinator:
        doc["labgrid"] = {"coordinator": coordinator}
    doc["instances"] = instances
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# labgrid's exporter starts ser2net with an accepter on every interface
# ("tcp,PORT"); this wrapper, first on the exporter's PATH, binds it to 127.0.0.1.
WRAPPER = """#!{python}
import os, re, sys
args = [re.sub(r",tcp,(\\d+)$", r",tcp,127.0.0.1,\\1", a) for a in sys.argv[1:]]
os.execv({ser2net!r}, [{ser2net!r}, *args])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc, what: str) -> None:
    for _ in range(200):  # bounded: 20 s
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


class LabgridLab:
    """A labgrid coordinator on 127.0.0.1 and the exporters a test starts; stopped by pid."""

    def __init__(self, root: Path, ser2net: str):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        bindir = root / "bin"
        bindir.mkdir()
        (bindir / "ser2net").write_text(WRAPPER.format(python=sys.executable, ser2net=ser2net))
        (bindir / "ser2net").chmod(0o755)
        self.env = hil_env(PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", LG_COORDINATOR=self.address)

    def start(self, cmd: list[str], cwd: Path) -> subprocess.Popen:
        log = open(cwd / f"{Path(cmd[0]).name}-{len(self.procs)}.log", "w")
        p = subprocess.Popen(cmd, cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    wait_port = staticmethod(wait_port)

    def client(self, *args, check=True, **env) -> subprocess.CompletedProcess:
        r = subprocess.run(
            ["labgrid-client", "-x", self.address, *args],
            capture_output=True,
            text=True,
            env={**self.env, **env},
            timeout=30,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: {r.stderr}")
        return r

    def acquired(self, place: str) -> bool:
        return "acquired: None" not in self.client("-p", place, "show").stdout

    def stop(self) -> None:
        for p in reversed(self.procs):  # by pid, exporters first
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "restart-sim":
        restart_sim(Path(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
