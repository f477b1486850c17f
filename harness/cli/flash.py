"""`hil flash`: program the board (or start the emulated one) and print its port."""

from __future__ import annotations

from harness import console
from harness.cli._common import add_option, subcommand, tcp_port
from harness.cli._lab import add_lab_options, lab_instance
from harness.errors import ConfigError
from harness.fileio import OutputSet
from harness.flash import flash

EPILOG = """\
examples:
  hil flash --board qemu_m55            start QEMU with build/qemu_m55/firmware.elf;
                                        prints socket://127.0.0.1:PORT, runs until Ctrl-C
  hil flash --board qemu_m55 --detach --pid_file qemu.pid
                                        same, in the background (stop: kill $(cat qemu.pid))
  hil flash --board native              start build/native/firmware on a pseudo-terminal
  hil flash --board sim --model M.tflite
                                        the simulated board (TFLM kernels in Python) on a pty
  hil flash --board nano33ble           PlatformIO upload (1200-baud touch, bossac), then
                                        the port is found again by VID:PID + serial number
  hil flash --board nucleo_n657x0_q -v  sign (STM32_SigningTool_CLI) + program the external
                                        flash (STM32_Programmer_CLI + external loader)
  hil flash --board stm32n6570_dk --ram load to AXISRAM in development boot

The port printed on stdout is what `hil validate --port` takes.
exit codes: 0 flashed/started, 2 could not (tool missing, no board, no firmware).
"""


def register(sub, common):
    p = subcommand(sub, common, "flash", "program the board (or start QEMU / the native firmware)", epilog=EPILOG)
    add_option(p, "--board", metavar="ID", help="board id (see `hil boards`; required without --instance)")
    add_option(p, "--port", metavar="URL", help="serial port of the board (default: found by USB VID:PID)")
    add_option(p, "--elf", metavar="PATH", help="firmware (default: build/<board>/firmware.elf)")
    add_option(
        p, "--tcp_port", type=tcp_port, metavar="N", help="qemu_m55: TCP port for the UART (default: a free one)"
    )
    add_option(p, "--ram", action="store_true", help="STM32N6: load to RAM (development boot) instead of flash")
    add_option(
        p,
        "--detach",
        action="store_true",
        help="qemu_m55/native: leave the emulator running in the background and return",
    )
    add_option(p, "--pid_file", metavar="PATH", help="with --detach: write the process id here")
    add_option(p, "--log", metavar="PATH", help="qemu_m55: QEMU's own output to this file")
    add_option(p, "--dry_run", action="store_true", help="STM32N6: only show the commands")
    add_option(
        p, "--model", metavar="M.tflite", help="nano33ble: the model (rebuilds if needed); sim: the model it runs"
    )
    add_lab_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    with lab_instance(args) as inst:  # --lab/--instance: the board's port and flash options, under its lock
        if inst is not None:
            args.elf = args.elf or inst.flash.elf
            args.ram = args.ram or inst.flash.ram
            args.tcp_port = args.tcp_port or inst.flash.tcp_port
        if not args.board:
            raise ConfigError("no --board given", "pass --board ID (hil boards), or --lab LAB --instance NAME")
        return _run(args)


def _run(args) -> int:

    outs = OutputSet(
        outputs={"--pid_file": args.pid_file, "--log": args.log},
        inputs={"--elf": args.elf, "--model": args.model},
    ).check()  # before anything is programmed or started
    res = flash(
        args.board,
        port=args.port,
        elf=args.elf,
        tcp_port=args.tcp_port,
        ram=args.ram,
        detach=args.detach,
        log=args.log,
        dry_run=args.dry_run,
        model=args.model,
    )
    for cmd in res.commands:
        (console.info if args.dry_run else console.detail)("$ " + " ".join(cmd))
    for note in res.notes:
        console.info(note)
    if res.port:
        console.out.print(res.port)
    if res.process is None:
        return 0
    if args.detach:
        if args.pid_file:
            with outs.staged() as st:
                st.path(args.pid_file).write_text(f"{res.pid}\n")
        console.info(f"running in the background as pid {res.pid}")
        return 0
    console.info("running; Ctrl-C stops it")
    try:
        code = res.wait()
        console.info(f"the firmware exited with code {code}")
        return 0 if code == 0 else 2
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: the way a foreground run stops
        return 0
    finally:
        res.stop()  # the emulator or firmware goes with us (harness/procs.py)
