"""`hil demo`: the whole path on the simulated board, in one command."""

from __future__ import annotations

from harness import console, procs
from harness.cli._common import (
    add_option,
    cosine_gate,
    gate_int,
    gate_verdict,
    nonnegative_finite_float,
    nonnegative_int,
    positive_int,
    subcommand,
)
from harness.cli.validate import cancelled_validation, link_column, write_reports
from harness.convert import npz_path_for
from harness.demo import run_demo
from harness.fileio import OutputSet
from harness.report import summary
from harness.validate import Gates

EPILOG = """\
examples:
  hil demo                              # gesture example into ./hil-demo
  hil demo --example audio --out /tmp/audio-demo
  hil demo --faults ber=1e-4,drop=1e-4  # the same over a noisy line: results stay exact
  hil demo --fresh                      # redo every step
  hil demo --board qemu_m55 --tflm /path/to/tflm_tree_m55
                                        # the real firmware on an emulated Cortex-M55 (QEMU)
  hil demo --board native --tflm /path/to/tflm_tree
                                        # the real firmware as a host program on a pty

what it does (no hardware, no network; about 20 s here):
  1. example   generate synthetic data and train the bundled Keras model  -> OUT/example/
  2. convert   int8 .tflite (float32 I/O) + validation .npz              -> OUT/model/
  3. codegen   model_data.cc/.h, model_ops.h for the firmware            -> OUT/firmware_src/
  4. device    the simulated board (TFLM kernels) on a real pseudo-terminal;
               with --board qemu_m55/native: hil build + hil flash of the real firmware
  5. validate  stream the validation inputs over the serial protocol, compare with the host
               -> OUT/reports/validation.{json,xml,html}

Finished steps (example, convert) are reused on a re-run while their files are
unchanged (OUT/demo_state.json); --fresh redoes them.

exit codes: as `hil validate`: 0 pass, 1 drift, 2 could not run.
"""


def register(sub, common) -> None:
    p = subcommand(
        sub,
        common,
        "demo",
        help="the whole path on a device without hardware: convert, codegen, validate",
        description="Take a bundled example through convert, codegen, the simulated board on a "
        "pseudo-terminal and `hil validate` over the real serial path; write the reports.",
        epilog=EPILOG,
    )
    add_option(
        p, "--example", choices=("gesture", "audio"), default="gesture", help="bundled example (default gesture)"
    )
    add_option(p, "--out", default="hil-demo", metavar="DIR", help="work folder (default ./hil-demo)")
    add_option(p, "--fresh", action="store_true", help="redo every step instead of reusing finished ones")
    _add_device_options(p)
    add_option(
        p,
        "--samples",
        type=positive_int,
        default=None,
        metavar="N",
        help="validate on the first N samples (default all)",
    )
    _add_line_options(p)
    add_option(
        p, "--seed", type=nonnegative_int, default=0, help="seed of the example data, training and faults (default 0)"
    )
    add_option(p, "--min_cosine", type=cosine_gate, default=0.99, metavar="C", help="gate (default 0.99)")
    add_option(p, "--max_lsb", type=gate_int, default=1, metavar="K", help="gate (default 1)")
    p.set_defaults(func=run)


def _add_device_options(p) -> None:
    add_option(
        p,
        "--board",
        choices=("sim", "qemu_m55", "native"),
        default="sim",
        help="the device: the simulated board (default), or the real firmware built and started "
        "on QEMU's Cortex-M55 or as a host program (needs a TFLM tree)",
    )
    add_option(
        p,
        "--tflm",
        default=None,
        metavar="DIR",
        help="with --board qemu_m55/native: the TFLM tree (default $HIL_TFLM_M55_DIR / $HIL_TFLM_DIR)",
    )


def _add_line_options(p) -> None:
    add_option(
        p,
        "--baud",
        type=nonnegative_int,
        default=921600,
        metavar="B",
        help="line rate of the simulated link (default 921600)",
    )
    add_option(
        p,
        "--latency_ms",
        type=nonnegative_finite_float,
        default=1.0,
        metavar="L",
        help="one-way link latency (default 1 ms)",
    )
    add_option(p, "--faults", default=None, metavar="SPEC", help="fault injection on the link, e.g. ber=1e-4,drop=1e-4")


def run(args) -> int:
    gates = Gates(
        min_cosine=None if args.min_cosine == -1 else args.min_cosine,
        max_lsb=None if args.max_lsb == -1 else args.max_lsb,
    )
    res = _run_demo_with_progress(args, gates)
    d = res.report.to_dict()
    if console.VERBOSITY >= 0 and (d["outputs"] or d["device"]):
        console.out.print(summary(d))
    rep = res.report
    console.info("")
    console.info("[bold]reports[/bold]")
    for kind, path in res.reports.items():
        console.out.print(f"  {kind:5} {path}", highlight=False, soft_wrap=True)
    if console.VERBOSITY >= 0:
        _print_same_by_hand(args, res)
    if rep.error is not None and rep.exit_code == 2:
        raise rep.error
    verdict = {
        0: "[bold green]PASS[/bold green]",
        1: "[bold red]DRIFT[/bold red]",
        2: "[bold yellow]ERROR[/bold yellow]",
    }[rep.exit_code]
    console.result(f"{verdict} in {res.seconds:.1f} s")
    return gate_verdict(rep.exit_code)


def _run_demo_with_progress(args, gates):
    from rich.markup import escape

    def on_step(s):
        how = "[dim]reused[/dim]" if s.reused else f"{s.seconds:.1f} s"
        if console.VERBOSITY >= 0:
            console.err.print(f"[bold]{s.name:9}[/bold] {how:>8}  {escape(s.detail)}", soft_wrap=True)

    import time

    started = time.time()
    # Only the first Ctrl-C cancels: a second one must not stop the partial report.
    with procs.first_cancel_only():
        try:
            with console.make_progress(extra_columns=[link_column()]) as progress:
                return run_demo(
                    args.example,
                    args.out,
                    fresh=args.fresh,
                    seed=args.seed,
                    samples=args.samples,
                    baud=args.baud,
                    latency_ms=args.latency_ms,
                    faults=args.faults,
                    gates=gates,
                    progress=progress,
                    on_step=on_step,
                    board=args.board,
                    tflm_dir=args.tflm,
                    on_build_line=(lambda line: console.detail(escape(line))) if console.VERBOSITY >= 1 else None,
                )
        except KeyboardInterrupt:
            _replace_reports_cancelled(args, gates, started)
            raise


def _print_same_by_hand(args, res) -> None:
    from rich.markup import escape

    ex = res.example_paths
    if args.board == "sim":
        device = (
            f"  hil codegen --model {res.tflite} --model_config {ex.config} --out {res.firmware_src}\n"
            f"  hil device sim --model {res.tflite} > port.txt &   # prints the port\n"
        )
    else:
        tflm = f" --tflm {args.tflm}" if args.tflm else ""
        device = (
            f"  hil build --board {args.board} --model {res.tflite}{tflm}\n"
            f"  hil flash --board {args.board} > port.txt &   # prints the port; runs until stopped\n"
        )
    console.err.print(
        "\n[bold]the same by hand[/bold]\n"
        f"  hil convert --checkpoint_path {ex.keras} --model_config {ex.config} --data_path_train {ex.data} "
        f"--output_path {res.tflite}\n"
        + escape(device)
        + f"  hil validate --port $(cat port.txt) --model {res.tflite} --data {res.npz} --html report.html",
        soft_wrap=True,
        highlight=False,
        markup=True,
    )


def _replace_reports_cancelled(args, gates, started: float) -> None:
    """A demo cancelled before validation finished must not leave the
    reports of an earlier run (a PASS) behind: the set is replaced by the
    report of a cancelled run. (Cancelled during validation, run_demo has
    already written the partial report.)"""
    from pathlib import Path

    out = Path(args.out)
    reports = {
        k: out / "reports" / f"validation.{e}" for k, e in (("json", "json"), ("junit", "xml"), ("html", "html"))
    }
    try:
        if reports["json"].stat().st_mtime >= started:
            return  # this run's own (partial) report set is already there
    except OSError:
        pass
    tflite = out / "model" / f"{args.example}_quantized.tflite"
    rep = cancelled_validation(None, tflite, npz_path_for(tflite), samples=args.samples, gates=gates)
    write_reports(rep.to_dict(), reports, OutputSet(list(reports.values())))
