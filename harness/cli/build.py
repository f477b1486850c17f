"""`hil build`: codegen + PlatformIO build of the firmware for a board."""

from __future__ import annotations

from harness import console
from harness.boards import FirmwareOptions, load_board
from harness.build import build
from harness.cli._common import add_option, capture_size, perturbation, subcommand

EPILOG = """\
examples:
  hil build --board qemu_m55 --model out/gesture_model_quantized.tflite --tflm /opt/tflm/tree_m55
      -> build/qemu_m55/firmware.elf, model sources in build/qemu_m55/model/,
         build/qemu_m55/build_report.json (flash/RAM use, model section, arena)
  hil build --board native --model m.tflite           (TFLM tree from HIL_TFLM_DIR)
  hil build --board nucleo_n657x0_q --model m.tflite --out fw/n6
  hil build --board native --model m.tflite --capture-bytes 65536
      -> a larger capture buffer: `hil validate --localize` gets LSB statistics
         for more operators after the first diverging one

per-operator trace: every firmware has it (8 bytes of RAM per operator) and a
capture buffer of the board's capture_bytes (boards/<id>.json), which holds the
outputs of the operators from the first diverging one on. --perturb-op K[:LSB]
builds a TEST firmware whose operator K's output is moved by LSB steps
(default +1), to prove `hil validate --localize` finds it; it says so in its
handshake ("TEST BUILD") and must never be used to validate a model.

offline boards (native, qemu_m55, nucleo_n657x0_q, stm32n6570_dk) build with
the system compilers (g++, arm-none-eabi-gcc) and a local TFLM tree: --tflm,
else HIL_TFLM_M55_DIR (Cortex-M55 boards), else HIL_TFLM_DIR. nano33ble needs
PlatformIO's registry (network). Builds share a cache (HIL_CACHE_DIR, default
~/.cache/tinyhil): TFLM is compiled once per tree. See docs/build.md.

exit codes: 0 built, 2 could not (missing PlatformIO/toolchain/TFLM tree,
registry unreachable, compile error, does not fit the board, the firmware
links a heap allocator).
"""


def register(sub, common):
    p = subcommand(sub, common, "build", "build the firmware for a board (codegen + PlatformIO)", epilog=EPILOG)
    add_option(p, "--board", required=True, metavar="ID", help="board id (see `hil boards`)")
    add_option(p, "--model", required=True, metavar="M.tflite", help="the model the firmware will hold")
    add_option(p, "--tflm", metavar="DIR", help="TFLM source tree (output of create_tflm_tree.py)")
    add_option(p, "--out", metavar="DIR", help="output folder (default: build/<board>)")
    add_option(p, "--clean", action="store_true", help="clean PlatformIO's build folder first")
    add_option(p, "--jobs", "-j", type=int, metavar="N", help="parallel compile jobs (default: PlatformIO's)")
    add_option(
        p,
        "--capture_bytes",
        type=capture_size,
        metavar="N",
        help="capture buffer for --localize's LSB statistics, bytes (default: the board's capture_bytes; 0 off)",
    )
    add_option(
        p,
        "--perturb_op",
        type=perturbation,
        metavar="K[:LSB]",
        help="TEST ONLY: operator K's output moved by LSB steps (default +1), to check localization",
    )
    p.set_defaults(func=run)


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def run(args) -> int:
    on_line = (lambda line: console.err.print(line, markup=False, highlight=False)) if console.VERBOSITY >= 1 else None

    load_board(args.board)  # an unknown board is one line, before any output
    console.info(f"building {args.board} firmware for {args.model} ...")
    k, lsb = args.perturb_op or (None, 1)
    options = FirmwareOptions(capture_bytes=args.capture_bytes, perturb_op=k, perturb_lsb=lsb)
    if k is not None:
        console.warn(f"TEST BUILD: operator {k}'s output is moved by {lsb:+d} LSB; never validate a model with it")
    res = build(
        args.board,
        args.model,
        tflm_dir=args.tflm,
        out=args.out,
        clean=args.clean,
        jobs=args.jobs,
        on_line=on_line,
        options=options,
    )
    env_txt = " ".join(f"{k}={v}" for k, v in res.env_vars.items())
    console.detail(f"command: {env_txt} {' '.join(res.command)}")
    console.detail(f"log: {res.log}")
    for s in res.sections:
        console.detail(f"  {s.name:<14} 0x{s.address:08x} {s.size:>10} {s.kind}")
    console.info(
        f"flash {_kb(res.flash_used)} of {_kb(res.flash_limit)} "
        f"({100 * res.flash_used / res.flash_limit:.1f} %), "
        f"RAM {_kb(res.ram_used)} of {_kb(res.ram_limit)} "
        f"({100 * res.ram_used / res.ram_limit:.1f} %)"
    )
    console.info(
        f"model {res.model_symbol}: {res.model_size} bytes in read-only {res.model_section} "
        f"at 0x{res.model_address:08x} ({res.model_placement}); arena {res.arena_bytes} bytes"
    )
    if res.trace_bytes is not None:
        console.info(
            f"per-operator trace: {res.trace_bytes} bytes of RAM; capture buffer: "
            + (f"{res.capture_bytes} bytes" if res.capture_bytes else "off (capture_bytes 0)")
        )
    if res.perturb_op is not None:
        console.warn(f"TEST BUILD: operator {res.perturb_op} perturbed by {res.perturb_lsb:+d} LSB")
    if res.model_placement == "external flash":
        console.info(
            f"external flash {_kb(res.external_flash_used)} of {_kb(res.external_flash_limit)}: "
            "hil flash writes it with the board's external loader"
        )
    # The build fails when the ELF links an allocator, so this says "none".
    console.info(f"heap: {res.heap} (no allocator linked)")
    console.info(f"built in {res.seconds:.1f} s")
    console.out.print(str(res.elf))
    return 0
