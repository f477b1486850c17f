"""`hil validate` end to end over a real pseudo-terminal: the simulated
board (TFLM kernels) on one side, the CLI on the other."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from harness.cli import main
from harness.device.sim import start_sim
from harness.testing.models import tiny_models


@pytest.fixture(scope="module")
def gesture_sim(gesture_model):
    with start_sim(gesture_model.tflite, listen="pty") as sim:
        yield sim


def test_pass_on_the_gesture_model_over_a_pty(gesture_model, gesture_sim, tmp_path, capsys):
    rj, rx, rh = tmp_path / "r.json", tmp_path / "r.xml", tmp_path / "r.html"
    rc = main(
        [
            "validate",
            "--port",
            gesture_sim.url,
            "--model",
            str(gesture_model.tflite),
            "--data",
            str(gesture_model.npz),
            "--report-json",
            str(rj),
            "--junit_xml",
            str(rx),
            "--html",
            str(rh),
        ]
    )
    assert rc == 0
    r = json.loads(rj.read_text())
    n = len(np.load(gesture_model.npz)["x"])
    assert r["status"] == "pass" and r["samples_done"] == n and not r["partial"]
    assert r["device"]["board"] == "sim" and r["device"]["model_sha256"] == r["model"]["sha256"]
    o = r["outputs"][0]
    assert o["bit_exact_samples"] == n and o["lsb"]["max_lsb"] == 0 and o["classifier"]["top1_agreement"] == 1.0
    assert r["triangulation"]["kernels"]["tflm"]["bit_exact"] and "tflm" in r["triangulation"]["matches"]
    assert r["timing"]["clock"] == "host" and r["timing"]["invoke_us"]["min"] > 0
    assert r["link"]["bytes_sent"] > n * 1200 and r["link"]["retransmits"] == 0
    assert len(ET.parse(rx).getroot().findall("./testsuite/testcase")) == len(r["gates"]) == 2
    assert "PASS" in rh.read_text()
    assert "PASS" in capsys.readouterr().out


def test_tampered_reference_is_drift(gesture_model, gesture_sim, tmp_path, capsys):
    z = dict(np.load(gesture_model.npz))
    y = z["y_tflm"].copy()
    y[4, 0] += np.float32(2 / 256)  # two LSB of the softmax output on one sample
    z["y_tflm"] = y
    bad = tmp_path / "tampered.npz"
    np.savez(bad, **z)
    rj, rx = tmp_path / "r.json", tmp_path / "r.xml"
    rc = main(
        [
            "validate",
            "--port",
            gesture_sim.url,
            "--model",
            str(gesture_model.tflite),
            "--data",
            str(bad),
            "--samples",
            "20",
            "--report_json",
            str(rj),
            "--junit-xml",
            str(rx),
        ]
    )
    assert rc == 1
    r = json.loads(rj.read_text())
    g = {x["name"]: x for x in r["gates"]}
    assert g["max_lsb"]["status"] == "fail" and g["max_lsb"]["value"] == 2
    assert r["worst_samples"][0]["index"] == 4
    # triangulation: the device still matches the LiteRT kernels bit-exactly, so the
    # difference is not the device's
    assert "litert" in r["triangulation"]["matches"] and "tflm" not in r["triangulation"]["matches"]
    assert "not in the device's hardware" in r["triangulation"]["verdict"]
    cases = {c.get("name"): c for c in ET.parse(rx).getroot().iter("testcase")}
    assert cases["max_lsb"].find("failure") is not None
    assert "DRIFT" in capsys.readouterr().err


def test_refuses_a_device_with_another_model(gesture_model, tmp_path, capsys):
    other = tiny_models()["float_io"]
    rx = tmp_path / "r.xml"
    with start_sim(other, listen="pty", arena_size=8192) as sim:
        rc = main(
            [
                "validate",
                "--port",
                sim.url,
                "--model",
                str(gesture_model.tflite),
                "--data",
                str(gesture_model.npz),
                "--junit-xml",
                str(rx),
            ]
        )
    assert rc == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "another model" in errors[0]
    assert "model sha256" in errors[0] and "model size" in errors[0]
    assert all(c.find("error") is not None for c in ET.parse(rx).getroot().iter("testcase"))


def test_int8_io_model_with_float_inputs(tmp_path):
    m = tiny_models()["int8_io"]
    x = np.random.default_rng(9).normal(size=(6, 300)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rj = tmp_path / "r.json"
    with start_sim(m, listen="pty", arena_size=8192) as sim:
        rc = main(
            [
                "validate",
                "--port",
                sim.url,
                "--model",
                str(m),
                "--data",
                str(tmp_path / "x.npy"),
                "--report-json",
                str(rj),
                "--max-lsb",
                "0",
            ]
        )
    assert rc == 0
    r = json.loads(rj.read_text())
    assert r["data"]["quantized_on_host"] == [True] and r["outputs"][0]["dtype"] == "int8"
    assert r["data"]["references"] == {"tflm": "host", "litert_ref": "host", "litert": "host"}


def test_missing_port_and_silent_port(gesture_model, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HIL_PORT", raising=False)
    rc = main(
        [
            "validate",
            "--port",
            str(tmp_path / "no-such-tty"),
            "--model",
            str(gesture_model.tflite),
            "--data",
            str(gesture_model.npz),
        ]
    )
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    import os
    import pty

    master, slave = pty.openpty()  # a port where nobody answers
    try:
        rc = main(
            [
                "validate",
                "--port",
                os.ttyname(slave),
                "--model",
                str(gesture_model.tflite),
                "--data",
                str(gesture_model.npz),
                "--timeout",
                "0.3",
                "--retries",
                "1",
            ]
        )
    finally:
        os.close(master)
        os.close(slave)
    err = capsys.readouterr().err
    assert rc == 2 and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1


def test_busy_port_is_one_line_exit_2(gesture_model, tmp_path, capsys):
    """A port another program holds (a serial monitor, a second hil) is
    named as busy, not as a silent device."""
    import os
    import pty

    import serial

    master, slave = pty.openpty()
    holder = serial.Serial(os.ttyname(slave), exclusive=True)  # flock, as pyserial's exclusive mode
    try:
        rc = main(
            [
                "validate",
                "--port",
                os.ttyname(slave),
                "--model",
                str(gesture_model.tflite),
                "--data",
                str(gesture_model.npz),
                "--report-json",
                str(tmp_path / "r.json"),
            ]
        )
    finally:
        holder.close()
        os.close(master)
        os.close(slave)
    err = capsys.readouterr().err
    assert rc == 2 and "is busy" in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1
    report = json.loads((tmp_path / "r.json").read_text())  # a lab CI rig still gets its report
    assert report["status"] == "error" and "busy" in report["error"]["message"] and report["samples_done"] == 0


def test_ctrl_c_writes_a_partial_report(gesture_model, tmp_path):
    """A real SIGINT to a running `hil validate`: exit 2, a partial report
    with the samples done, a JUnit file with errors."""
    import os
    import signal
    import subprocess
    import sys
    import time

    rj, rx = tmp_path / "r.json", tmp_path / "r.xml"
    with start_sim(gesture_model.tflite, listen="pty", baud=115200) as sim:  # ~10 samples/s
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harness",
                "validate",
                "--port",
                sim.url,
                "--model",
                str(gesture_model.tflite),
                "--data",
                str(gesture_model.npz),
                "--report-json",
                str(rj),
                "--junit-xml",
                str(rx),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        deadline = time.monotonic() + 60
        while sim.device.stats.invokes < 5 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 2, err
    r = json.loads(rj.read_text())
    assert r["partial"] and r["interrupted"] and r["status"] == "error"
    # The device had run 5 inferences; the host may not have read the last
    # one's outputs when the signal came.
    assert 1 <= r["samples_done"] < r["samples_planned"] and len(r["samples"]) == r["samples_done"]
    assert f"interrupted after {r['samples_done']} of {r['samples_planned']}" in err
    assert all(c.find("error") is not None for c in ET.parse(rx).getroot().iter("testcase"))


class _Rfc2217Bridge:
    """A one-client RFC 2217 server in front of a local serial port -- what a
    lab's ser2net or labgrid exporter offers -- built on pyserial's
    rfc2217.PortManager."""

    def __init__(self, device: str):
        import socket
        import threading

        import serial

        self.serial = serial.serial_for_url(device, timeout=0.05)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"rfc2217://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import threading

        from serial import rfc2217

        conn, _ = self.listener.accept()
        conn.settimeout(0.05)

        class Out:
            def write(self, data):
                conn.sendall(data)

        class NoModemLines:
            """A pty has no modem lines (their ioctl fails): report them idle."""

            cts = dsr = ri = cd = False

            def __init__(self, port):
                self._port = port

            def __getattr__(self, name):
                return getattr(self._port, name)

        manager = rfc2217.PortManager(NoModemLines(self.serial), Out())

        def to_client():
            while not self.stop.is_set():
                data = self.serial.read(self.serial.in_waiting or 1)
                if data:
                    conn.sendall(b"".join(manager.escape(data)))

        t = threading.Thread(target=to_client, daemon=True)
        t.start()
        while not self.stop.is_set():
            try:
                data = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            self.serial.write(b"".join(manager.filter(data)))
        self.stop.set()
        t.join(2)
        conn.close()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.listener.close()
        self.serial.close()


def test_pass_over_rfc2217_like_a_lab_serial_server(gesture_model, tmp_path, capsys):
    """The simulated board behind an RFC 2217 server: `--port rfc2217://`
    works as a lab rig's remote port does."""
    with start_sim(gesture_model.tflite, listen="pty") as sim:
        bridge = _Rfc2217Bridge(sim.url)
        try:
            rc = main(
                [
                    "validate",
                    "--port",
                    bridge.url,
                    "--model",
                    str(gesture_model.tflite),
                    "--data",
                    str(gesture_model.npz),
                    "--samples",
                    "20",
                    "--report-json",
                    str(tmp_path / "r.json"),
                ]
            )
        finally:
            bridge.close()
    assert rc == 0, capsys.readouterr().err
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["samples_done"] == 20 and r["outputs"][0]["bit_exact_samples"] == 20


@pytest.mark.timeout(60)
def test_a_port_that_echoes_is_a_clean_error(gesture_model, capsys):
    """loop:// hands the host its own requests back (a loopback plug, TX tied
    to RX): never taken for a device's answer."""
    rc = main(
        [
            "validate",
            "--port",
            "loop://",
            "--model",
            str(gesture_model.tflite),
            "--data",
            str(gesture_model.npz),
            "--timeout",
            "0.3",
            "--retries",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "echoes what is sent" in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err


def test_expected_board_is_checked_in_the_handshake(gesture_model, gesture_sim, tmp_path, capsys):
    args = [
        "validate",
        "--port",
        gesture_sim.url,
        "--model",
        str(gesture_model.tflite),
        "--data",
        str(gesture_model.npz),
        "--samples",
        "3",
    ]
    assert main(args + ["--board", "sim"]) == 0
    capsys.readouterr()
    rc = main(args + ["--board", "qemu_m55", "--report-json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a sim board, not qemu_m55" in err and "Traceback" not in err
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["board"] == "qemu_m55"
    rc = main(args + ["--board", "no_such_board"])
    assert rc == 2 and "no_such_board" in capsys.readouterr().err
