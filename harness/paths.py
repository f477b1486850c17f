"""Where the project's data folders (templates, boards, firmware) are found.

In a source checkout (the usual, editable install) they sit beside the
package; in a wheel they are bundled under `harness/_data`.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _resource(name: str) -> Path:
    beside = _PKG.parent / name
    if beside.is_dir():
        return beside
    return _PKG / "_data" / name


def templates_dir() -> Path:
    return _resource("templates")


def boards_dir() -> Path:
    return _resource("boards")


def firmware_dir() -> Path:
    return _resource("firmware")


def examples_dir() -> Path:
    return _PKG.parent / "examples"
