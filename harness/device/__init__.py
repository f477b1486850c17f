"""Devices without hardware: the simulated board (`sim`, with its emulated
serial line in `link`) and the QEMU Cortex-M55 runner (`qemu`)."""

from __future__ import annotations


def __getattr__(name):  # lazy: importing the package must not load TFLM
    if name in ("start_sim", "SimDevice", "SimHandle"):
        from harness.device import sim

        return getattr(sim, name)
    raise AttributeError(name)
