"""Where the project's data folders (templates, boards, firmware) and the
harness's cache are found.

In a source checkout (the usual, editable install) the data folders sit
beside the package; in a wheel they are bundled under `harness/_data`. The
cache (PlatformIO's core and workspace, TFLM libraries) is `HIL_CACHE_DIR`,
else `$XDG_CACHE_HOME/tinyhil`, else `~/.cache/tinyhil`.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "HIL_CACHE_DIR"

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


def cache_dir() -> Path:
    """The harness's cache folder (see the module docstring)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tinyhil"


def workspace_dir() -> Path:
    """PlatformIO's working folder for the harness's builds: one per
    firmware project, shared by every model (TFLM is compiled once)."""
    return cache_dir() / "workspace"
