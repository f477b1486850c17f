"""`hil ports`: the serial ports of this machine and the boards they look like."""

from __future__ import annotations

from harness import console
from harness.boards import load_board
from harness.cli._common import add_option, subcommand
from harness.errors import DeviceError

EPILOG = """\
examples:
  hil ports                      # table: port, VID:PID, serial number, description, board
  hil ports --json               # the same as JSON (for scripts)
  export HIL_PORT=$(hil ports --board nano33ble --first)

Boards are recognised by the USB ids in boards/*.json. A port that is not
listed can still be used: --port takes any pyserial URL (socket://, rfc2217://).
"""


def register(sub, common) -> None:
    p = subcommand(sub, common, "ports", help="list serial ports (VID:PID, serial number, known boards)", epilog=EPILOG)
    add_option(p, "--json", action="store_true", help="print JSON instead of a table")
    add_option(p, "--board", metavar="ID", help="only ports that look like this board")
    add_option(p, "--first", action="store_true", help="print only the first matching port's device name")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from rich.table import Table

    from harness.ports import list_ports  # looked up per call: tests replace harness.ports.list_ports

    ports = list_ports()
    if args.board:
        load_board(args.board)  # unknown ids fail with the list of known ones
        ports = [p for p in ports if args.board in p.boards]
    if args.first:
        if not ports:
            raise DeviceError(
                "no serial port found" + (f" for board {args.board}" if args.board else ""),
                "plug the board in (a data cable, not a charge-only one) and check `hil ports`",
            )
        print(ports[0].device)
        return 0
    if args.json:
        print(json.dumps([p.to_dict() for p in ports], indent=2))
        return 0
    if not ports:
        console.out.print("no serial ports found" + (f" for board {args.board}" if args.board else ""))
        return 0
    t = Table(show_edge=False, pad_edge=False)
    for c in ("port", "VID:PID", "serial number", "description", "board"):
        t.add_column(c)
    for p in ports:
        t.add_row(p.device, p.vid_pid, p.serial_number or "", p.description, ", ".join(p.boards))
    console.out.print(t)
    return 0
