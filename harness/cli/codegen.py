"""`hil codegen`: a .tflite -> model_data.h/.cc and model_ops.h for the firmware."""

from __future__ import annotations

from harness import console
from harness.cli._common import add_option, subcommand
from harness.codegen import generate

EPILOG = """\
examples:
  hil codegen --model out/gesture_model_quantized.tflite --out firmware/src/model
      -> g_gesture_model_data[] in model_data.cc, constants in model_data.h,
         the op resolver in model_ops.h
  hil codegen --model big.tflite --out gen --format incbin --board stm32n6570_dk
      -> bytes via the assembler's .incbin (fast builds of large models),
         checked against the board's flash and RAM
  hil codegen --model m.tflite --out gen --name kws --arena-margin 10%+1024

The tensor arena is measured with TFLM's own interpreter (tflite-micro);
the recommended size is that plus --arena-margin, in kHilArenaSize.
Unchanged output is not rewritten, so builds do not recompile.
The generated API is described in docs/codegen.md.

exit codes: 0 generated, 2 could not (bad model, unsupported ops, too big
for the board, unwritable output folder); existing files are left as they were.
"""


def register(sub, common):
    p = subcommand(
        sub, common, "codegen", "C++ sources (model array, constants, op resolver) from a .tflite", epilog=EPILOG
    )
    add_option(p, "--model", required=True, metavar="M.tflite", help="the model flatbuffer")
    add_option(p, "--out", required=True, metavar="DIR", help="folder for the generated files (created if needed)")
    add_option(
        p,
        "--name",
        metavar="NAME",
        help="C identifier part: g_NAME_model_data (default: from the file name, sanitized)",
    )
    add_option(
        p,
        "--model_config",
        metavar="CFG.json",
        help="model config with the input normalization mean/std "
        "(default: <stem>_model_config.json beside the model, if present)",
    )
    add_option(
        p,
        "--format",
        choices=("array", "incbin"),
        default="array",
        help="array: portable hex array (default); incbin: assembler .incbin of the .tflite (ELF targets)",
    )
    add_option(p, "--board", metavar="ID", help="check the model and arena fit this board (see `hil boards`)")
    add_option(
        p,
        "--arena_margin",
        metavar="MARGIN",
        default="20%",
        help="added to the measured arena: a percentage, bytes, or both (e.g. 20%%, 2048, 10%%+512; default 20%%)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    res = generate(
        args.model,
        args.out,
        name=args.name,
        model_config=args.model_config,
        fmt=args.format,
        board=args.board,
        arena_margin=args.arena_margin,
    )
    for w in res.warnings:
        console.warn(w)
    if res.config_path is None:
        console.detail("no model config: normalization is identity (kHilHasNormalization = false)")
    elif not res.normalization:
        console.warn(f"{res.config_path} has no normalization mean/std; kHilHasNormalization = false")
    else:
        console.detail(f"normalization from {res.config_path}")
    changed = [f for f, w in res.written.items() if w]
    console.info(
        f"{res.data_symbol}: {res.model.size:,} bytes ({res.format}), ops {', '.join(res.ops)}; "
        f"arena measured {res.arena.measured:,} B, recommended {res.arena.recommended:,} B "
        f"(+{res.arena.margin_text})"
    )
    if res.board_usage:
        u = res.board_usage
        console.info(f"{u['board']}: model {u['flash_fraction']:.1%} of flash, arena {u['ram_fraction']:.1%} of RAM")
    console.info(f"{res.out_dir}: " + (f"wrote {', '.join(changed)}" if changed else "up to date, nothing rewritten"))
    return 0
