"""`hil lab check`: what every instance is now — reachable, busy (by whom),
and what it holds (board, firmware, model SHA-256 from its handshake).

All instances are asked at once with short timeouts, so a shelf of idle
boards answers in about one handshake's time. A busy board is not opened:
its holder is named from the lock (or the labgrid place).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from harness.boards import load_board
from harness.errors import HilError
from harness.lab.labfile import Instance, Lab
from harness.lab.labgrid import LabgridClient
from harness.lab.lock import BoardBusyError, BoardLock, describe_holder
from harness.lab.run import find_usb
from harness.protocol.session import DeviceSession


@dataclass
class InstanceState:
    name: str
    board: str
    reached_by: str
    where: str
    state: str = "unreachable"  # idle | busy | unreachable | wrong board
    holder: str | None = None
    port: str | None = None
    device_board: str | None = None
    firmware: str | None = None
    model_sha256: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def handshake(port: str, baud: int, timeout: float, retries: int):

    s = DeviceSession(port, baudrate=baud, timeout=timeout, retries=retries)
    try:
        return s.handshake()
    finally:
        s.close()


def check_instance(inst: Instance, lab: Lab, *, timeout: float = 0.5, retries: int = 2, labgrid=None) -> InstanceState:

    st = InstanceState(inst.name, inst.board, inst.reached_by, inst.describe())
    lock = BoardLock(inst.lock_key, lock_dir=lab.lock_dir, label=f"board {inst.name}")
    try:
        if not lock.try_acquire():
            st.state, st.holder = "busy", describe_holder(lock.holder())
            return st
        handle = None
        try:
            if inst.place is not None:
                handle = labgrid.acquire(inst.place, wait=0.0)
                port = handle.url()
            elif inst.usb is not None:
                port = find_usb(inst, timeout=0.0)
            else:
                port = inst.port
            st.port = port
            info = handshake(port, inst.baud or load_board(inst.board).baud, timeout, retries)
            st.device_board, st.firmware, st.model_sha256 = info.board, info.firmware, info.model_sha256
            st.state = "idle" if info.board == inst.board else "wrong board"
            if st.state == "wrong board":
                st.error = f"the device says it is a {info.board} board, the lab file says {inst.board}"
        finally:
            if handle is not None:
                handle.close()
    except BoardBusyError as exc:
        st.state, st.holder = "busy", describe_holder(exc.holder) if exc.holder else exc.message
    except HilError as exc:
        st.error = exc.message
    finally:
        lock.release()
    return st


def check_lab(
    lab: Lab, select: Sequence[str] | None = None, *, timeout: float = 0.5, retries: int = 2
) -> list[InstanceState]:
    """One `InstanceState` per selected instance, in lab-file order."""
    instances = lab.select(select)
    client = None
    if any(i.place for i in instances):
        client = LabgridClient(lab.coordinator)
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(instances)), thread_name_prefix="lab-check") as pool:
            return list(
                pool.map(lambda i: check_instance(i, lab, timeout=timeout, retries=retries, labgrid=client), instances)
            )
    finally:
        if client is not None:
            client.close()


def check_table(states: list[InstanceState]):
    from rich.table import Table
    from rich.text import Text

    t = Table(title="lab instances", title_justify="left")
    for col in ("instance", "board", "reached by", "state", "holds (board / firmware / model sha256)"):
        t.add_column(col)
    style = {"idle": "green", "busy": "yellow", "unreachable": "red", "wrong board": "red"}
    for s in states:
        if s.state == "busy":
            holds = f"held by {s.holder}"
        elif s.model_sha256:
            holds = f"{s.device_board} / {s.firmware} / {s.model_sha256[:16]}…"
        else:
            holds = s.error or ""
        t.add_row(s.name, s.board, s.where, Text(s.state, style=style.get(s.state, "")), holds)
    return t
