"""The `hil` command line: parses arguments and calls the library.

Each subcommand lives in its own module here with `register(subparsers)`;
the module's `run(args)` returns the exit code: 0 pass, 1 a quality gate
failed (drift, low similarity), 2 could not run (a `HilError`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from harness import __version__, console
from harness.errors import HilError

# Order is the order shown in `hil --help`.
COMMANDS = ["demo", "convert", "codegen", "build", "flash", "device", "validate", "lab", "ports", "boards"]

EPILOG = """\
pipeline:
  hil convert --checkpoint_path M.keras --data_path_train DATA   Keras -> int8 .tflite + validation .npz
  hil codegen --model M_quantized.tflite --out firmware/src/model  C++ sources for the firmware
  hil build   --board qemu_m55 --model M_quantized.tflite          PlatformIO build
  hil flash   --board qemu_m55                                     program (or start) the device
  hil validate --port URL --model M.tflite --data M_validation_data.npz

exit codes: 0 pass, 1 outputs drifted / quality gate failed, 2 could not run.
Run `hil demo` to see the whole path on the simulated board.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hil",
        description="Build, flash and validate TinyML models on real (or simulated) boards.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tinyhil {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more detail (repeat for more)")
    g.add_argument("-q", "--quiet", action="store_true", help="only errors and the final result")
    g.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"harness.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"harness.cli.{name}":
                continue  # command not part of this build
            raise
        mod.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    console.VERBOSITY = -1 if args.quiet else args.verbose
    if not args.debug:
        # TensorFlow's C++ logging drowns the console (even its "errors":
        # "failed call to cuInit" on every machine without a GPU); problems
        # that matter reach us as Python exceptions. Kept for --debug.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return int(args.func(args) or 0)
    except HilError as exc:
        if args.debug:
            raise
        from rich.markup import escape  # messages hold brackets: "tinyhil[onnx]", "X.npy[3]"

        console.err.print(
            f"[bold red]error:[/bold red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True
        )
        return exc.exit_code
    except KeyboardInterrupt:
        console.err.print("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
