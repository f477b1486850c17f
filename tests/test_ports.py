"""`hil ports`: ports with VID:PID, serial number, description and the
boards their USB ids match; and the empty case."""

from __future__ import annotations

import json
from types import SimpleNamespace

from harness.boards import load_board
from harness.cli import main
from harness.ports import list_ports


def _fake(*ports):
    return lambda: [SimpleNamespace(**p) for p in ports]


ACM = dict(
    device="/dev/ttyACM0",
    vid=0x2341,
    pid=0x805A,
    serial_number="ABC123",
    description="Nano 33 BLE",
    manufacturer="Arduino",
    location="1-1",
)
USB = dict(
    device="/dev/ttyUSB0",
    vid=0x0403,
    pid=0x6001,
    serial_number=None,
    description="FT232R",
    manufacturer="FTDI",
    location=None,
)
S0 = dict(
    device="/dev/ttyS0", vid=None, pid=None, serial_number=None, description="n/a", manufacturer=None, location=None
)


def test_known_boards_are_marked():
    ports = list_ports(comports=_fake(USB, ACM, S0))
    assert [p.device for p in ports] == ["/dev/ttyACM0", "/dev/ttyS0", "/dev/ttyUSB0"]
    acm = ports[0]
    assert acm.vid_pid == "2341:805a" and acm.serial_number == "ABC123" and acm.boards == ("nano33ble",)
    assert (0x2341, 0x805A) in load_board("nano33ble").usb_ids
    assert ports[1].vid_pid == "" and ports[1].description == "" and ports[2].boards == ()


def test_cli_table_json_and_empty(monkeypatch, capsys):
    import harness.ports as hp

    real = hp.list_ports
    monkeypatch.setattr(hp, "list_ports", lambda: real(comports=_fake(ACM, USB)))
    assert main(["ports"]) == 0
    out = capsys.readouterr().out
    assert "2341:805a" in out and "ABC123" in out and "nano33ble" in out and "0403:6001" in out
    assert main(["ports", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["boards"] == ["nano33ble"] and data[1]["vid_pid"] == "0403:6001"
    assert main(["ports", "--board", "nano33ble", "--first"]) == 0
    assert capsys.readouterr().out.strip() == "/dev/ttyACM0"
    monkeypatch.setattr(hp, "list_ports", lambda: real(comports=_fake()))
    assert main(["ports"]) == 0
    assert "no serial ports found" in capsys.readouterr().out
    assert main(["ports", "--first"]) == 2
    assert main(["ports", "--board", "nope"]) == 2
