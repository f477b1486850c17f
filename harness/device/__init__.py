"""Devices without hardware: the simulated board (`sim`, with its emulated
serial line in `link`) and the QEMU Cortex-M55 runner (`qemu`)."""
