"""Stage 4, flash: put the firmware on the board, then find its port again.

`flash()` is the entry the CLI, the demo and the lab call; how a board is
flashed and connected is its driver's business (`harness.drivers`, chosen by
the board's `upload_method`): `PlatformIOUploadDriver` (Nano 33 BLE),
`StmProgrammerDriver` (STM32N6), `QemuDriver`, `NativeDriver` and
`SimDriver` (the simulated board).

It returns a `FlashResult` with the port URL, the commands run (the CLI
shows them with -v) and, for QEMU/native/sim, the running process.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.boards import Board, load_board
from harness.drivers import FlashOptions, FlashResult, driver_for

__all__ = ["FlashResult", "default_elf", "flash"]


def default_elf(board: Board) -> Path:
    """Where `hil build` leaves the board's firmware by default."""
    return driver_for(board).default_firmware()


def flash(
    board_id: str,
    *,
    port: str | None = None,
    elf: str | os.PathLike | None = None,
    tcp_port: int | None = None,
    ram: bool = False,
    detach: bool = False,
    log: str | os.PathLike | None = None,
    dry_run: bool = False,
    model: str | os.PathLike | None = None,
    options: dict | None = None,
) -> FlashResult:
    """Flash (or start) board `board_id` and find its port. `options` are
    driver-specific settings (the simulated board: baud, latency_ms, faults, ...)."""
    board = load_board(board_id)
    opts = FlashOptions(
        port=port,
        elf=Path(elf) if elf else None,
        tcp_port=tcp_port,
        ram=ram,
        detach=detach,
        log=Path(log) if log else None,
        dry_run=dry_run,
        model=Path(model) if model else None,
        options=dict(options or {}),
    )
    return driver_for(board).flash(opts)
