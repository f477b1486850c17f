"""`hil validate`: run the validation inputs on a device and report drift."""

from __future__ import annotations

import os

from harness import console, procs
from harness.cli._common import (
    add_option,
    baud_rate,
    cosine_gate,
    gate_int,
    gate_verdict,
    nonnegative_int,
    positive_finite_float,
    positive_int,
    subcommand,
    unit_float,
)
from harness.cli._lab import add_lab_options, lab_instance
from harness.errors import ConfigError
from harness.fileio import OutputSet
from harness.profile import top_types_line
from harness.report import summary, write_html, write_json, write_junit
from harness.results import Status
from harness.validate import Gates, validate

EPILOG = """\
examples:
  hil validate --port /dev/ttyACM0 --model gesture_quantized.tflite \\
      --data gesture_quantized_validation_data.npz --html report.html --junit-xml junit.xml

  export HIL_PORT=socket://127.0.0.1:5555              # QEMU, or a TCP serial server
  hil validate --model M.tflite --data M_validation_data.npz --samples 50 --report-json r.json

  hil validate --port rfc2217://lab-host:4000 --model M.tflite --data M_validation_data.npz --max-lsb 0

  # a model made elsewhere (e.g. int8 in/out): any .npz/.npy of inputs; float inputs are
  # quantized with the model's own scale/zero point, int8 inputs sent as they are; the
  # host references are computed here
  hil validate --port /dev/ttyUSB0 --model int8_model.tflite --data inputs.npy

  # try it without hardware: the simulated board on a pseudo-terminal
  hil device sim --model M.tflite > port.txt &  sleep 3
  hil validate --port $(cat port.txt) --model M.tflite --data M_validation_data.npz

what is compared (per output tensor, device vs the host's TFLM kernels, the oracle):
  float domain   cosine (worst sample and mean), MSE, MAE, Pearson r, max |error|
  LSB domain     device - host in quantization steps (int8 outputs, or the tensor behind the
                 final DEQUANTIZE of float outputs): exact / +-1 / >1 counts, max LSB
  classifiers    top-1 agreement, samples whose argmax flips, accuracy vs labels
  triangulation  which host kernels (TFLM, LiteRT reference, LiteRT default) the device
                 matches bit-exactly: drift of kernels vs drift of the device
  timing         invoke time / cycles as the device reports them: min, median, p99
  per operator   --localize N: the N worst samples traced operator by operator, the first
                 operator whose output differs from the host's named (LSB stats from a capture);
                 --profile: every sample traced, each operator's time (device clock, µs)

gates (defaults): --min-cosine 0.99 (every sample), --max-lsb 1; --min-top1 off.

exit codes: 0 every gate passed; 1 a gate failed (outputs drifted); 2 could not run
(port, device, model, data, interrupted). Reports are written in every case; a run cut
short (Ctrl-C, device lost) is marked partial and keeps the samples done.
"""


# over 60 lines: one add_option per CLI option, a flat list on purpose.
def register(sub, common) -> None:
    p = subcommand(
        sub,
        common,
        "validate",
        help="run the validation data on a device and report drift vs the host",
        description="Stream the validation inputs to a device over the serial protocol, get its raw "
        "outputs and timing back, compare them with the host's TFLite results and write "
        "a drift report.",
        epilog=EPILOG,
    )
    g = p.add_argument_group("device")
    add_option(
        g,
        "--port",
        default=os.environ.get("HIL_PORT"),
        metavar="URL",
        help="any pyserial URL: /dev/ttyACM0, COM3, socket://host:port, rfc2217://host:port (default: $HIL_PORT)",
    )
    add_option(g, "--baud", type=baud_rate, default=921600, metavar="B", help="baud rate (default 921600)")
    add_option(
        g,
        "--board",
        default=os.environ.get("HIL_BOARD"),
        metavar="ID",
        help="the board the device must say it is in its handshake (default $HIL_BOARD; "
        "a rig with many boards checks it has the right one)",
    )
    add_option(
        g,
        "--timeout",
        type=positive_finite_float,
        default=2.0,
        metavar="S",
        help="seconds to wait for an answer before retransmitting (default 2)",
    )
    add_option(
        g,
        "--retries",
        type=nonnegative_int,
        default=5,
        metavar="N",
        help="retransmissions before giving up (default 5)",
    )
    g = p.add_argument_group("model and data")
    add_option(g, "--model", required=True, metavar="M.tflite", help="the model the device holds")
    add_option(
        g,
        "--data",
        required=True,
        metavar="D.npz",
        help="the _validation_data.npz of `hil convert`, or any .npz/.npy of inputs (samples first)",
    )
    add_option(
        g, "--samples", type=positive_int, default=None, metavar="N", help="use the first N samples (default all)"
    )
    add_option(
        g,
        "--reference",
        choices=("tflm", "litert_ref", "litert"),
        default="tflm",
        help="host kernels the gates compare with (default tflm: what TFLM firmware computes)",
    )
    g = p.add_argument_group("gates")
    add_option(
        g,
        "--min_cosine",
        type=cosine_gate,
        default=0.99,
        metavar="C",
        help="every sample's cosine similarity must be >= C (default 0.99; -1 turns it off)",
    )
    add_option(
        g,
        "--max_lsb",
        type=gate_int,
        default=1,
        metavar="K",
        help="no output may differ by more than K quantization steps (default 1; -1 turns it off)",
    )
    add_option(
        g,
        "--min_top1",
        type=unit_float,
        default=None,
        metavar="A",
        help="classifiers: top-1 agreement with the host must be >= A (default off)",
    )
    g = p.add_argument_group("reports")
    add_option(g, "--report_json", metavar="PATH", help="JSON report (schema in docs/validate.md)")
    add_option(g, "--junit_xml", metavar="PATH", help="JUnit XML, one testcase per gate (for CI)")
    add_option(g, "--html", metavar="PATH", help="self-contained HTML report")
    add_option(g, "--worst_k", type=nonnegative_int, default=10, metavar="K", help="worst samples listed (default 10)")
    add_option(
        g,
        "--localize",
        type=positive_int,
        nargs="?",
        const=1,
        default=None,
        metavar="N",
        help="trace the N worst samples (default 1) operator by operator and name the first operator whose "
        "output differs from the host's; without it the worst sample is traced when a gate fails "
        "(devices with the per-operator trace)",
    )
    add_option(
        g,
        "--profile",
        action="store_true",
        help="run every sample with the device's per-operator trace on and report each operator's time "
        "(min/median/p99, %% of the invoke, per op type); one invoke per sample, not overlapped on the link",
    )
    add_lab_options(p)
    p.set_defaults(func=run)


def gates_from_args(args):
    return Gates(
        min_cosine=None if args.min_cosine == -1 else args.min_cosine,
        max_lsb=None if args.max_lsb == -1 else args.max_lsb,
        min_top1=args.min_top1,
    )


def link_column():
    """A progress column: samples/s, bytes/s and the share of the line rate."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class LinkColumn(ProgressColumn):
        def render(self, task):
            f = task.fields
            if "samples_per_s" not in f:
                return Text("")
            return Text(
                f"{f['samples_per_s']:.1f} samples/s {f['bytes_per_s'] / 1000:.0f} kB/s "
                f"{100 * f['line_fraction']:.0f}% of line",
                style="cyan",
                no_wrap=True,
            )

    return LinkColumn()


REPORT_FLAGS = {"json": "--report-json", "junit": "--junit-xml", "html": "--html"}


def report_outputs(reports: dict, inputs: dict):
    """The report set as an `OutputSet`, checked now: a bad report path
    fails before any work, and no report may overwrite an input."""

    return OutputSet(
        outputs={REPORT_FLAGS[k]: p for k, p in reports.items() if p},
        inputs=inputs,
    ).check()


def validation_inputs(port, model, data) -> dict:
    inputs = {"--model": model, "--data": data}
    if port and "://" not in str(port):
        inputs["--port"] = port  # a device node is an input too
    return inputs


def write_reports(d: dict, reports: dict, outs) -> list[str]:
    """Replace the report set as a whole (JSON, JUnit, HTML): a cancel
    while writing is held back until the set is committed, so the set is
    never a mix of this run and an earlier one."""

    writers = {"json": write_json, "junit": write_junit, "html": write_html}
    written = []
    with procs.deferred_signals(), outs.staged() as st:
        for kind, path in reports.items():
            if path:
                writers[kind](d, st.path(path))
                written.append(str(path))
    return written


class _CancelledSession:
    """A session that was cancelled before it opened (see cancelled_validation)."""

    def __init__(self, *args, **kwargs):
        raise KeyboardInterrupt


def cancelled_validation(port, model, data, *, samples=None, gates=None):
    """The report of a run cancelled before validation started: status
    error, interrupted, no samples -- what replaces an earlier report set,
    so a cancelled CI job never publishes an old PASS."""

    with procs.deferred_signals():
        rep = validate(
            port or "(not opened)",
            model,
            data,
            samples=samples,
            gates=gates,
            session_factory=_CancelledSession,
        )
    # Whatever stopped it first (a model not converted yet), it was cancelled.
    rep.interrupted = rep.partial = True
    rep.status = Status.ERROR
    return rep


def execute(port, model, data, args, *, reports: dict, progress_label: str | None = None) -> int:
    """Run validate, print the summary, write the reports; the exit code.
    Shared with `hil demo`."""

    if not port:
        raise ConfigError(
            "no port given",
            "pass --port URL or set HIL_PORT; `hil ports` lists serial ports, "
            "`hil device sim` starts a simulated board",
        )
    # A second Ctrl-C (or a SIGTERM after it) must not stop the partial report of the run the first cancelled.
    with procs.first_cancel_only():
        outs = report_outputs(reports, validation_inputs(port, model, data))
        try:
            with console.make_progress(extra_columns=[link_column()]) as progress:
                rep = validate(
                    port,
                    model,
                    data,
                    samples=args.samples,
                    gates=gates_from_args(args),
                    reference=args.reference,
                    baud=args.baud,
                    timeout=args.timeout,
                    retries=args.retries,
                    worst_k=args.worst_k,
                    progress=progress,
                    board=getattr(args, "board", None),
                    localize=getattr(args, "localize", None),
                    profile=bool(getattr(args, "profile", False)),
                    on_log=lambda level, text: console.detail(f"device: {text}"),
                )
        except KeyboardInterrupt:  # before validation could start: still replace the report set
            rep = cancelled_validation(port, model, data, samples=args.samples, gates=gates_from_args(args))
        d = rep.to_dict()
        if console.VERBOSITY >= 0 and (d["outputs"] or d["device"]):
            console.out.print(summary(d))
        written = write_reports(d, reports, outs)
    for w in written:
        if console.VERBOSITY >= 0:
            console.err.print(f"report: {w}", soft_wrap=True, highlight=False, markup=False)
    if rep.error is not None and rep.exit_code == 2:
        raise rep.error  # one line, exit 2 (cli/__init__.py)
    if rep.error is not None or rep.interrupted:
        from rich.markup import escape

        msg = escape(d["error"]["message"])
        console.err.print(f"[bold red]error:[/bold red] {msg}", markup=True, highlight=False, soft_wrap=True)
    loc = d.get("localization")
    if loc and console.VERBOSITY >= 0:
        from rich.markup import escape

        if loc["error"]:
            console.err.print(f"localization: {escape(loc['error'])}", markup=True, highlight=False, soft_wrap=True)
        for s in loc["samples"]:
            console.err.print(escape(s["line"]), markup=True, highlight=False, soft_wrap=True)
    prof = d.get("profile")
    if prof and console.VERBOSITY >= 0:
        line = f"profile: {prof['error']}" if prof["error"] else top_types_line(prof)
        console.err.print(line, markup=False, highlight=False, soft_wrap=True)
    if rep.exit_code == 1:
        failed = [g["name"] for g in d["gates"] if g["status"] == "fail"]
        console.err.print(
            f"[bold red]DRIFT[/bold red]: {', '.join(failed)} outside tolerance "
            f"({d['triangulation']['verdict'] if d.get('triangulation') else ''})",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
    elif rep.exit_code == 0:
        console.result("[bold green]PASS[/bold green]: every gate within tolerance")
    return gate_verdict(rep.exit_code)


def run(args) -> int:
    with lab_instance(args):  # --lab/--instance: port and board from the lab file, under the board's lock
        return execute(
            args.port,
            args.model,
            args.data,
            args,
            reports={"json": args.report_json, "junit": args.junit_xml, "html": args.html},
        )
