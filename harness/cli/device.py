"""`hil device sim`: run the simulated board on a pseudo-terminal or TCP port."""

from __future__ import annotations

from harness import console
from harness.boards import load_board
from harness.cli._common import (
    add_option,
    nonnegative_finite_float,
    nonnegative_int,
    positive_int,
    subcommand,
)
from harness.device.sim import start_sim

SIM_EPILOG = """\
examples:
  hil device sim --model M_quantized.tflite                 # prints /dev/pts/N; serves until Ctrl-C
  hil device sim --model M.tflite --listen tcp:5555         # prints socket://127.0.0.1:5555
  hil device sim --model M.tflite --baud 115200 --latency-ms 1 --faults ber=1e-4,reset_after=50 --seed 3

  hil device sim --model M.tflite > port.txt &  sleep 3; hil validate --port $(cat port.txt) --model M.tflite --data D.npz

The URL is the only line on stdout (scripts can read it); diagnostics go to
stderr. Inference runs with TFLM's own kernels (tflite-micro); the device's
invoke_us is host time and says so in its handshake.

faults: ber=RATE bit-error rate; drop=RATE lost bytes; garbage=P random bytes
after a frame (per frame); reset_after=N the board resets once after N frames
(sends BOOT, loses its state); reset_every=N; stall=P:DURATION the board stalls
(per frame), e.g. stall=0.001:200ms. Seeded by --seed.

--invoke-ms 20 --invoke-jitter-ms 1 makes each invoke take 20 ± 1 ms (a
slower device), so overlap of transfer and compute can be measured;
--protocol-version 1 serves an older firmware's protocol.
"""


def register(sub, common):
    p = subcommand(sub, common, "device", "devices without hardware (the simulated board)")
    dsub = p.add_subparsers(dest="device_command", metavar="DEVICE")
    s = subcommand(
        dsub, common, "sim", "run the simulated board (TFLM kernels) behind an emulated serial line", epilog=SIM_EPILOG
    )
    add_option(s, "--model", required=True, metavar="M.tflite", help="the model the board holds")
    add_option(
        s,
        "--listen",
        default="pty",
        metavar="pty|tcp:PORT",
        help="a pseudo-terminal (default) or a TCP port on 127.0.0.1 (tcp:0 picks one)",
    )
    add_option(s, "--board", default="sim", metavar="ID", help="board profile from boards/ (default sim)")
    _add_line_options(s)
    _add_emulated_device_options(s)
    s.set_defaults(func=run_sim)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _add_line_options(s) -> None:
    add_option(
        s,
        "--baud",
        type=nonnegative_int,
        default=None,
        metavar="B",
        help="line rate, 8N1 (default: the board's; 0 = unlimited)",
    )
    add_option(
        s,
        "--latency_ms",
        type=nonnegative_finite_float,
        default=1.0,
        metavar="L",
        help="one-way latency per direction in ms (default 1, like USB CDC)",
    )
    add_option(
        s, "--faults", default=None, metavar="SPEC", help="fault injection, e.g. ber=1e-4,drop=1e-4,garbage=0.01"
    )
    add_option(s, "--seed", type=nonnegative_int, default=0, help="seed of the fault injection (default 0)")


def _add_emulated_device_options(s) -> None:
    add_option(
        s,
        "--arena_size",
        type=positive_int,
        default=None,
        metavar="BYTES",
        help="skip measuring the arena; report this many bytes",
    )
    add_option(
        s,
        "--invoke_ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="emulate a device whose invoke takes MS ms (default 0: TFLM's own time on this host)",
    )
    add_option(
        s, "--invoke_jitter_ms", type=float, default=0.0, metavar="MS", help="standard deviation of that time, ms"
    )
    add_option(
        s,
        "--protocol_version",
        type=int,
        default=None,
        metavar="V",
        help="the highest protocol version the board speaks (default the newest; 1 emulates an older firmware)",
    )


def run_sim(args) -> int:
    import sys
    import threading

    board = load_board(args.board)
    baud = board.baud if args.baud is None else args.baud
    console.detail(f"measuring the arena of {args.model} …")
    sim = start_sim(
        args.model,
        listen=args.listen,
        board=board,
        baud=baud,
        latency_ms=args.latency_ms,
        faults=args.faults,
        seed=args.seed,
        arena_size=args.arena_size,
        invoke_ms=args.invoke_ms,
        invoke_jitter_ms=args.invoke_jitter_ms,
        **({"max_version": args.protocol_version} if args.protocol_version else {}),
    )
    stop = threading.Event()
    try:
        dev = sim.device
        if dev.not_ready:
            console.warn(f"the model does not fit board {board.id}: {dev.not_ready}; the device will answer NOT_READY")
        print(sim.url, flush=True)
        console.info(
            f"simulated board '{board.id}' at {sim.url} — {baud or 'unlimited'} baud, "
            f"{args.latency_ms:g} ms latency, faults {sim.faults.describe()}, arena {dev.arena_used} B "
            f"of {board.ram_bytes} B RAM; invoke time is host time. Ctrl-C stops."
        )
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP (cli/__init__.py): the way it stops
        pass
    finally:
        summary = sim.summary()
        sim.close()
        console.info(
            f"served {summary['requests']} requests, {summary['invokes']} inferences"
            + (
                f", median invoke {summary['invoke_us_host_median']} µs (host time)"
                if summary["invoke_us_host_median"] is not None
                else ""
            )
        )
        sys.stdout.flush()
    return 0
