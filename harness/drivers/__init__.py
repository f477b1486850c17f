"""How a board is flashed and connected: one driver class per method.

labgrid's split: the board's JSON (`boards/<id>.json`) is the resource, a
driver is how it is used. A board names its driver by `upload_method`;
`driver_for(board)` returns an instance. Adding a way to flash is one new
module in this package whose class carries `@register("method")`: every
module here is imported when the package is, so nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil

from harness.drivers.base import Driver, FlashOptions, FlashResult, driver_class, driver_for, register, registered

__all__ = ["Driver", "FlashOptions", "FlashResult", "driver_class", "driver_for", "register", "registered"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
