"""`hil lab`: a shelf of boards (or a labgrid lab) in one command."""

from __future__ import annotations

from harness import console
from harness.cli._common import add_option, gate_verdict, subcommand
from harness.cli.validate import gates_from_args, link_column
from harness.errors import ConfigError
from harness.fileio import write_json_atomic
from harness.lab.check import check_lab, check_table
from harness.lab.labfile import load_lab
from harness.lab.report import summary_table, write_reports
from harness.lab.run import RunSettings, model_specs, run_lab

RUN_EPILOG = """\
examples:
  hil lab check --lab lab.yaml
  hil lab run --lab lab.yaml --model kws.tflite --data kws_validation_data.npz --out lab-report
  hil lab run --lab lab.yaml --model a.tflite --data a.npz --model b.tflite --data b.npz \\
      --select tag:nightly --wait 600 --samples 50 --max-lsb 0

  # a labgrid lab in CI: reserve the places, then run on them (docs/lab.md)
  eval $(labgrid-client reserve --wait --shell tag=tinyhil) && hil lab run --lab lab.yaml ...

Each selected instance gets one worker: lock the board (a second run gets exit 2 naming
the holder, or waits with --wait), flash (built once per board type and model), find
its port again, validate every model. A board that cannot be reached, flashed or
validated is ERROR, not DRIFT; with power control in the lab file it is power-cycled
and tried once more. The other boards go on.

reports in --out: lab.html (matrix boards x models, linking each board's report),
lab.json (schema tinyhil-lab-report/1, docs/lab.md), lab-junit.xml (one testsuite per
board x model), and <instance>/<model>/report.{json,html} + junit.xml.

exit codes: 0 every cell passed; 1 a cell drifted (drift wins: it is a finding about a
model that no rerun removes, and the report shows the ERROR cells too); 2 nothing
drifted but a cell could not run (busy, unreachable, flash failed, interrupted).
"""

CHECK_EPILOG = """\
examples:
  hil lab check --lab lab.yaml
  hil lab check --lab lab.yaml --select 'nano-*' --json states.json

Every instance is asked at once (short timeouts): reachable or not, busy (and by whom:
pid, host, since), and what it holds now from its handshake: board, firmware, model
SHA-256. A busy board is not opened. exit codes: 0 every instance idle and the board
the lab file says, 2 otherwise.
"""


def register(sub, common) -> None:
    p = subcommand(sub, common, "lab", "a lab of boards: check them, or validate on all of them at once")
    lsub = p.add_subparsers(dest="lab_command", metavar="ACTION")

    c = subcommand(
        lsub, common, "check", "what every instance of the lab is, holds, and who uses it", epilog=CHECK_EPILOG
    )
    _lab_args(c)
    add_option(c, "--timeout", type=float, default=0.5, metavar="S", help="handshake timeout per try (default 0.5)")
    add_option(c, "--json", metavar="PATH", help="also write the table as JSON")
    c.set_defaults(func=run_check)

    r = subcommand(
        lsub, common, "run", "build, flash and validate every selected board, in parallel", epilog=RUN_EPILOG
    )
    _lab_args(r)
    g = r.add_argument_group("models")
    add_option(g, "--model", action="append", default=[], metavar="M.tflite", help="a model (repeat with --data)")
    add_option(g, "--data", action="append", default=[], metavar="D.npz", help="its validation data")
    add_option(g, "--samples", type=int, default=None, metavar="N", help="use the first N samples (default all)")
    add_option(g, "--reference", choices=("tflm", "litert_ref", "litert"), default="tflm", help="host kernels")
    g = r.add_argument_group("gates (as in hil validate)")
    add_option(g, "--min_cosine", type=float, default=0.99, metavar="C", help="default 0.99; -1 off")
    add_option(g, "--max_lsb", type=int, default=1, metavar="K", help="default 1; -1 off")
    add_option(g, "--min_top1", type=float, default=None, metavar="A", help="default off")
    g = r.add_argument_group("run")
    add_option(g, "--jobs", type=int, default=None, metavar="N", help="boards at a time (default: all)")
    add_option(g, "--wait", type=float, default=0.0, metavar="S", help="wait up to S s for busy boards (default 0)")
    add_option(g, "--out", default="lab-report", metavar="DIR", help="report folder (default lab-report)")
    add_option(g, "--timeout", type=float, default=2.0, metavar="S", help="device answer timeout (default 2)")
    add_option(g, "--retries", type=int, default=5, metavar="N", help="retransmissions (default 5)")
    add_option(g, "--no_build", action="store_true", help="do not build; flash what is there (flash: elf:)")
    add_option(g, "--tflm", metavar="DIR", help="TFLM tree for offline builds (default $HIL_TFLM_DIR)")
    r.set_defaults(func=run_run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _lab_args(p) -> None:
    import os

    add_option(p, "--lab", default=os.environ.get("HIL_LAB"), metavar="LAB", help="the lab file (default $HIL_LAB)")
    add_option(
        p,
        "--select",
        action="append",
        default=[],
        metavar="PATTERN|tag:T",
        help="instances by name (glob) or tag (repeat: any of them; default all)",
    )


def _need_lab(args):

    if not args.lab:
        raise ConfigError("no lab file given", "pass --lab lab.yaml or set HIL_LAB (docs/lab.md)")
    return load_lab(args.lab)


def run_check(args) -> int:

    lab = _need_lab(args)
    states = check_lab(lab, args.select or None, timeout=args.timeout)
    console.out.print(check_table(states))
    if args.json:
        write_json_atomic(args.json, {"schema": "tinyhil-lab-check/1", "instances": [s.to_dict() for s in states]})
    return 0 if all(s.state == "idle" for s in states) else 2


def run_run(args) -> int:
    import signal

    lab = _need_lab(args)
    specs = model_specs(args.model, args.data)
    settings = RunSettings(
        samples=args.samples,
        gates=gates_from_args(args),
        reference=args.reference,
        timeout=args.timeout,
        retries=args.retries,
        wait=args.wait,
        jobs=args.jobs,
        build=not args.no_build,
        tflm_dir=args.tflm,
    )
    # SIGTERM (a CI job cancelled) ends the run like Ctrl-C: locks and places released, reports written.
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with console.make_progress(extra_columns=[link_column()]) as progress:
            result = run_lab(
                lab,
                specs,
                select=args.select or None,
                out=args.out,
                settings=settings,
                progress=progress,
                on_event=lambda kind, **kw: _event(console, kind, kw),
            )
    finally:
        signal.signal(signal.SIGTERM, old)
    paths = write_reports(result)
    if console.VERBOSITY >= 0:
        console.out.print(summary_table(result))
        for c in result.cells:
            if c.status == "ERROR" and c.error:
                from rich.markup import escape

                console.warn(escape(f"{c.instance} · {c.model}: {c.error}" + (f" — {c.hint}" if c.hint else "")))
        for p in paths.values():
            console.err.print(f"report: {p}", soft_wrap=True, highlight=False, markup=False)
    n = result.counts()
    verdict = ", ".join(f"{v} {k}" for k, v in n.items() if v)
    if result.interrupted:
        console.err.print("interrupted: every board released; reports written")
    console.result(
        {0: "[bold green]PASS[/bold green]", 1: "[bold red]DRIFT[/bold red]", 2: "[bold yellow]ERROR[/bold yellow]"}[
            result.exit_code
        ]
        + f": {verdict}"
    )
    return gate_verdict(result.exit_code)  # 1 only when some board's gates were evaluated and failed


def _event(console, kind: str, kw: dict) -> None:
    if kind in ("flash", "power_cycle", "build"):
        console.detail(f"{kind}: " + " ".join(f"{k}={v}" for k, v in kw.items()))
