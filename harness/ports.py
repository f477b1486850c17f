"""The serial ports of this machine, with the boards from `boards/` they
look like (by USB vendor/product id). Used by `hil ports` and by `flash` to
find a port again after it re-enumerates."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from harness.boards import all_boards
from harness.errors import DeviceError


@dataclass(frozen=True)
class SerialPort:
    device: str  # what --port takes: /dev/ttyACM0, COM3
    vid: int | None
    pid: int | None
    serial_number: str | None
    description: str
    manufacturer: str | None
    location: str | None
    boards: tuple[str, ...] = field(default=())  # ids of boards/*.json whose usb ids match

    @property
    def vid_pid(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else ""

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "vid_pid": self.vid_pid or None,
            "serial_number": self.serial_number,
            "description": self.description,
            "manufacturer": self.manufacturer,
            "location": self.location,
            "boards": list(self.boards),
        }


def board_usb_map(boards=None) -> dict[tuple[int, int], list[str]]:
    """(vid, pid) -> board ids, from the board definitions."""
    if boards is None:
        boards = all_boards()
    out: dict[tuple[int, int], list[str]] = {}
    for b in boards:
        for ids in b.usb_ids:
            out.setdefault(ids, []).append(b.id)
    return out


def list_ports(boards=None, comports=None) -> list[SerialPort]:
    """Every serial port pyserial sees, sorted by device name. `comports`
    replaces `serial.tools.list_ports.comports` (tests)."""
    if comports is None:
        from serial.tools.list_ports import comports
    known = board_usb_map(boards)
    ports = []
    for p in comports():
        vid, pid = getattr(p, "vid", None), getattr(p, "pid", None)
        desc = getattr(p, "description", None) or ""
        ports.append(
            SerialPort(
                device=p.device,
                vid=vid,
                pid=pid,
                serial_number=getattr(p, "serial_number", None),
                description="" if desc == "n/a" else desc,
                manufacturer=getattr(p, "manufacturer", None),
                location=getattr(p, "location", None),
                boards=tuple(known.get((vid, pid), ())) if vid is not None and pid is not None else (),
            )
        )
    return sorted(ports, key=lambda p: p.device)


def usb_ports_of(board, comports=None) -> list:
    """pyserial's ports whose VID:PID is one of the board's."""
    if comports is None:
        from serial.tools.list_ports import comports
    ids = set(board.usb_ids)
    return [p for p in comports() if p.vid is not None and (p.vid, p.pid) in ids]


def find_usb_port(board, serial_number: str | None = None, timeout: float = 15.0, running: bool = False) -> str:
    """Wait for the board's USB port (by VID:PID, and serial number if known).
    With `running`, only the application's VID:PID (the first in the board's
    list) counts: after an upload the bootloader's port may still be there."""
    deadline = time.monotonic() + timeout
    while True:
        ports = usb_ports_of(board)
        if running and board.usb_ids:
            ports = [p for p in ports if (p.vid, p.pid) == board.usb_ids[0]]
        if serial_number:
            ports = [p for p in ports if p.serial_number == serial_number]
        if ports:
            return ports[0].device
        if time.monotonic() > deadline:
            ids = ", ".join(f"{v:04x}:{p:04x}" for v, p in board.usb_ids)
            raise DeviceError(
                f"no {board.name} port appeared ({ids}{', serial ' + serial_number if serial_number else ''})",
                "check the cable; double-tap reset enters the bootloader",
            )
        time.sleep(0.25)
