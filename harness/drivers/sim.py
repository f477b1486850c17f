"""SimDriver: the simulated board (harness/device/sim.py), started in this
process's threads with the model it runs; its port is a pseudo-terminal
(or `socket://` with options {"listen": "tcp:0"})."""

from __future__ import annotations

import threading

from harness.device.sim import start_sim
from harness.drivers.base import Driver, FlashOptions, FlashResult, register
from harness.errors import ConfigError

# start_sim's settings a caller may pass in FlashOptions.options.
SIM_OPTIONS = ("listen", "baud", "latency_ms", "faults", "seed", "arena_size", "max_frame", "rx_window")


@register("sim")
class SimDriver(Driver):
    settings = SIM_OPTIONS
    programs_existing_board = False

    def flash(self, opts: FlashOptions) -> FlashResult:
        # The simulator imports TFLM's Python interpreter: only when it runs.

        if opts.model is None:
            raise ConfigError(f"the simulated board {self.board.id} needs the model it runs", "pass --model M.tflite")
        if opts.detach:
            raise ConfigError(
                "the simulated board runs inside this process and cannot be detached", "serve it with `hil device`"
            )
        unknown = sorted(set(opts.options) - set(self.settings))
        if unknown:
            raise ConfigError(
                f"unknown simulated-board settings: {', '.join(unknown)}", f"use {', '.join(SIM_OPTIONS)}"
            )
        settings = {"listen": "pty", **opts.options}
        handle = start_sim(opts.model, board=self.board, **settings)
        return FlashResult(
            self.board.id, handle.url, [], process=handle, stopper=handle.close, waiter=_until_interrupted
        )


def _until_interrupted() -> int:
    # The simulator's threads serve until the caller stops them (Ctrl-C in
    # `hil flash`): nothing ends on its own.
    idle = threading.Event()
    while not idle.wait(3600):
        pass
    return 0
