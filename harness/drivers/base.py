"""The driver base class, the registry, and what a flash returns."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness import procs
from harness.boards import Board
from harness.errors import ConfigError, FlashError, ToolError


@dataclass
class FlashResult:
    board: str
    port: str | None
    commands: list[list[str]] = field(default_factory=list)
    process: object | None = None  # QemuM55, subprocess.Popen or SimHandle, still running
    pid: int | None = None
    notes: list[str] = field(default_factory=list)
    # Set by a driver whose process is not a Popen/QemuM55 (the simulated board).
    stopper: Callable[[], None] | None = field(default=None, repr=False)
    waiter: Callable[[], int] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """End the emulator or host firmware this flash started (if any)."""
        if self.stopper is not None:
            self.stopper()
        elif isinstance(self.process, subprocess.Popen):
            procs.stop(self.process)  # the whole process group: SIGTERM, then SIGKILL
        elif self.process is not None:
            self.process.stop()

    def wait(self) -> int:
        """Block until the started process ends; its exit code (0 if none)."""
        if self.waiter is not None:
            return self.waiter()
        if self.process is None:
            return 0
        return self.process.wait()


@dataclass(frozen=True)
class FlashOptions:
    """What `hil flash` may ask; each driver reads the fields it uses."""

    port: str | None = None
    elf: Path | None = None
    tcp_port: int | None = None
    ram: bool = False
    detach: bool = False
    log: Path | None = None
    dry_run: bool = False
    model: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)  # driver-specific settings


class Driver:
    """Flashes (or starts) one board and says where its port is."""

    method: ClassVar[str] = ""
    firmware_name: ClassVar[str] = "firmware.elf"
    # The keys of FlashOptions.options this driver takes (none by default).
    settings: ClassVar[tuple[str, ...]] = ()
    # False for a driver that starts a device of its own instead of
    # programming one that is already there (the simulated board): a lab's
    # running instance of such a board holds what it was started with.
    programs_existing_board: ClassVar[bool] = True

    def __init__(self, board: Board):
        self.board = board

    def default_firmware(self) -> Path:
        """Where `hil build` leaves this board's firmware by default."""
        return Path("build") / self.board.id / self.firmware_name

    def firmware(self, opts: FlashOptions) -> Path:
        return opts.elf if opts.elf is not None else self.default_firmware()

    def flash(self, opts: FlashOptions) -> FlashResult:
        raise NotImplementedError

    def require_firmware(self, path: Path, executable: bool = False) -> None:
        if not path.is_file() or (executable and not os.access(path, os.X_OK)):
            raise ConfigError(
                f"firmware {path} does not exist", f"build it first: hil build --board {self.board.id} --model M.tflite"
            )


def run_tool(cmd: list[str], what: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a flashing tool; ToolError when it is missing, FlashError when it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except FileNotFoundError as exc:
        raise ToolError(f"{cmd[0]} is not installed", f"install it to {what}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise FlashError(f"{what} failed: {tail[:300]}", f"run it by hand: {' '.join(cmd)}")
    return proc


_REGISTRY: dict[str, type[Driver]] = {}


def register(method: str):
    """Class decorator: the driver for boards whose `upload_method` is `method`."""

    def add(cls: type[Driver]) -> type[Driver]:
        if method in _REGISTRY and _REGISTRY[method] is not cls:
            raise RuntimeError(
                f"two drivers for upload_method '{method}': {_REGISTRY[method].__name__}, {cls.__name__}"
            )
        cls.method = method
        _REGISTRY[method] = cls
        return cls

    return add


def registered() -> dict[str, type[Driver]]:
    return dict(_REGISTRY)


def driver_class(method: str) -> type[Driver]:
    try:
        return _REGISTRY[method]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"no driver for upload_method '{method}'", f"use one of: {known}") from None


def driver_for(board: Board) -> Driver:
    """The driver the board's data names (`upload_method`)."""
    try:
        cls = _REGISTRY[board.upload_method]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(
            f"board {board.id} cannot be flashed (upload_method '{board.upload_method}')",
            f"fix boards/{board.id}.json: upload_method is one of {known}",
        ) from None
    return cls(board)
