"""Board definitions: one JSON file per board in `boards/` (data, committed).

`boards/<id>.json` is the one description of a board. What PlatformIO needs
is derived from it here: the custom board manifests in `boards/pio/`
(`pio_manifest`, written by `hil boards --write-pio`, checked by a test) and
the firmware's `-D` defines (`firmware_defines`, added to every build by
`firmware/scripts/hil_model.py`). A lab's map of which board sits on which
port is a separate user file (`--port` or `HIL_PORT`), never part of these
definitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.fileio import write_text_atomic
from harness.paths import boards_dir

REQUIRED = ("id", "name", "core", "flash_bytes", "ram_bytes", "baud", "max_frame", "upload_method")


@dataclass(frozen=True)
class Board:
    id: str
    name: str
    core: str
    flash_bytes: int
    ram_bytes: int
    baud: int
    max_frame: int
    upload_method: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def get(self, key: str, default=None):
        return self.raw.get(key, default)

    @property
    def pio_env(self) -> str | None:
        return self.raw.get("pio_env")

    @property
    def rx_window(self) -> int:
        return int(self.raw.get("rx_window", 1))

    @property
    def cpu_hz(self) -> int:
        """The clock the firmware runs at (the STM32N6 boards stay at the
        reset clock, below the chip's maximum `clock_hz`)."""
        return int(self.raw.get("firmware_clock_hz") or self.raw.get("clock_hz") or 0)

    @property
    def usb_ids(self) -> list[tuple[int, int]]:
        return [(int(u["vid"], 16), int(u["pid"], 16)) for u in self.raw.get("usb", [])]


def _load(path: Path) -> Board:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"board file {path} is not valid JSON: {exc}", "fix or remove the file") from exc
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ConfigError(f"board file {path} lacks {', '.join(missing)}", "add the missing keys")
    return Board(**{k: data[k] for k in REQUIRED}, raw=data)


def board_ids(folder: Path | None = None) -> list[str]:
    folder = folder or boards_dir()
    return sorted(p.stem for p in folder.glob("*.json"))


def load_board(board_id: str, folder: Path | None = None) -> Board:
    folder = folder or boards_dir()
    path = folder / f"{board_id}.json"
    if not path.is_file():
        known = ", ".join(board_ids(folder)) or "none"
        raise ConfigError(f"unknown board '{board_id}'", f"known boards: {known}")
    return _load(path)


def all_boards(folder: Path | None = None) -> list[Board]:
    return [load_board(b, folder) for b in board_ids(folder)]


CAPTURE_MAX = 16 << 20  # bytes: a capture buffer larger than any board's RAM is a typo


@dataclass(frozen=True)
class FirmwareOptions:
    """What `hil build` may change in a board's firmware: the capture buffer
    (None: the board's `capture_bytes`, 0 off) and the test-only fault that
    moves operator `perturb_op`'s output by `perturb_lsb` steps.

    `hil build` hands them to PlatformIO's pre-build script as the variables
    of `to_env()`; the script reads them back with `from_env()`."""

    capture_bytes: int | None = None
    perturb_op: int | None = None
    perturb_lsb: int = 1

    ENV = ("HIL_CAPTURE_BYTES", "HIL_PERTURB_OP", "HIL_PERTURB_LSB")

    def to_env(self) -> dict[str, str]:
        """Every variable, "" when unset: a stale one in the caller's shell
        must not turn the fault on."""

        def txt(v):
            return "" if v is None else str(int(v))

        perturbed = self.perturb_op is not None
        return {
            "HIL_CAPTURE_BYTES": txt(self.capture_bytes),
            "HIL_PERTURB_OP": txt(self.perturb_op),
            "HIL_PERTURB_LSB": txt(self.perturb_lsb) if perturbed else "",
        }

    @classmethod
    def from_env(cls, env) -> FirmwareOptions:
        def num(name):
            v = env.get(name, "")
            if v == "":
                return None
            try:
                return int(v)
            except ValueError:
                raise ConfigError(f"{name}={v!r} is not a whole number", f"unset {name} or give a number") from None

        lsb = num("HIL_PERTURB_LSB")
        return cls(num("HIL_CAPTURE_BYTES"), num("HIL_PERTURB_OP"), 1 if lsb is None else lsb)


def firmware_defines(board: Board, options: FirmwareOptions | None = None) -> list[tuple[str, str | None]]:
    """The preprocessor defines the firmware is built with, from the board's
    data and the build's `options`: (name, value) with C syntax values
    (strings quoted), None for a bare flag."""
    options = options or FirmwareOptions()
    capture = board.get("capture_bytes", 0) if options.capture_bytes is None else options.capture_bytes
    defines: list[tuple[str, str | None]] = [
        ("HIL_BOARD_ID", f'"{board.id}"'),
        ("HIL_CPU_HZ", f"{board.cpu_hz}u"),
        ("HIL_BAUD", f"{board.baud}u"),
        ("HIL_MAX_FRAME", str(board.max_frame)),
        ("HIL_RX_WINDOW", str(board.rx_window)),
        ("HIL_CAPTURE_BYTES", str(int(capture))),
    ]
    if options.perturb_op is not None:
        defines += [("HIL_PERTURB_OP", str(options.perturb_op)), ("HIL_PERTURB_LSB", str(options.perturb_lsb))]
    if board.get("framework") == "arduino":
        defines.append(("HIL_ARDUINO", None))  # the Arduino core owns main()
    return defines


def define_flags(board: Board) -> list[str]:
    """`firmware_defines` as compiler flags (for a compiler run without a shell)."""
    return [f"-D{name}" if value is None else f"-D{name}={value}" for name, value in firmware_defines(board)]


def pio_manifest(board: Board) -> dict[str, Any] | None:
    """PlatformIO's custom board manifest (`boards/pio/<pio_board>.json`) for
    a board of the hil-offline platform, or None when it uses one of
    PlatformIO's own boards (or none)."""
    if not board.get("pio_board"):
        return None
    build: dict[str, Any] = {
        "cpu": board.core,
        "mcu": str(board.get("mcu", "")).lower(),
        "float_abi": "hard" if board.get("fpu") else "soft",
        "ldscript": board.get("ldscript"),
    }
    if board.get("image_bin"):
        build["binary"] = True  # a raw image beside the ELF (the STM32N6 signing tool)
    return {
        "build": build,
        "frameworks": [],
        "name": board.name,
        "upload": {
            "maximum_ram_size": board.ram_bytes,
            "maximum_size": board.flash_bytes,
            "protocol": board.upload_method,
            "protocols": [board.upload_method],
        },
        "url": board.get("url", ""),
        "vendor": board.get("vendor", ""),
    }


def pio_manifest_text(board: Board) -> str:
    return json.dumps(pio_manifest(board), indent=2) + "\n"


def write_pio_manifests(folder: Path | None = None) -> list[Path]:
    """(Re)write `boards/pio/*.json` from the board definitions."""
    out = (folder or boards_dir()) / "pio"
    written = []
    for board in all_boards(folder):
        if pio_manifest(board) is None:
            continue
        path = out / f"{board.get('pio_board')}.json"
        write_text_atomic(path, pio_manifest_text(board))
        written.append(path)
    return written
