"""The `hil` command line: parses arguments and calls the library.

Each subcommand lives in its own module here with `register(subparsers)`;
the module's `run(args)` returns the exit code: 0 pass, 1 a quality gate
failed (drift, low similarity), 2 could not run.

The exit-code rule lives here, once: 1 passes only as a `Verdict` a gate
returned; everything else that is not 0 -- a `HilError`, Ctrl-C, SIGTERM,
SIGHUP, a usage error, any unexpected exception -- is 2 with one line on
stderr (`--debug` shows the traceback). See docs/promises.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from harness import __version__, console, procs
from harness.cli._common import HilArgumentParser, Verdict
from harness.errors import HilError

# Order is the order shown in `hil --help`.
COMMANDS = ["demo", "convert", "codegen", "build", "flash", "device", "validate", "profile", "lab", "ports", "boards"]

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
    parser = HilArgumentParser(
        prog="hil",
        description="Build, flash and validate TinyML models on real (or simulated) boards.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tinyhil {__version__}")
    common = HilArgumentParser(add_help=False)
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


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(text: str) -> None:
    from rich.markup import escape  # messages hold brackets: "tinyhil[onnx]", "X.npy[3]"

    console.err.print(
        f"[bold red]error:[/bold red] {escape(_one_line(text))}", markup=True, highlight=False, soft_wrap=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2, one line)
        return 0 if exc.code in (0, None) else 2
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
        with procs.cancel_on_signals():
            code = args.func(args)
    except HilError as exc:
        if args.debug:
            raise
        _error(str(exc))
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, and SIGTERM/SIGHUP as procs.Cancelled
        if args.debug:
            raise
        how = f"cancelled by {exc}" if isinstance(exc, procs.Cancelled) else "interrupted"
        _error(f"{how}; nothing was left half-written")
        return 2
    except Exception as exc:  # noqa: BLE001 - the one place every other failure becomes exit 2
        if args.debug:
            raise
        msg = _one_line(str(exc))[:300]
        _error(f"internal error: {type(exc).__name__}: {msg} — rerun with --debug for the traceback, and report it")
        return 2
    if isinstance(code, Verdict) and int(code) in (0, 1):
        return int(code)
    if code is None or int(code) == 0:
        return 0
    if int(code) == 1:  # only a gate may say "drifted"
        _error(f"internal error: `hil {args.command}` returned 1 without a gate verdict — report it")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
