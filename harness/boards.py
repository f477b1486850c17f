"""Board definitions: one JSON file per board in `boards/` (data, committed).

A lab's map of which board sits on which port is a separate user file
(`--port` or `HIL_PORT`), never part of these definitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
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
