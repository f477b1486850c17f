"""`hil profile`: where a device's invoke time goes, operator by operator."""

from __future__ import annotations

import json
import os

from harness import console, procs
from harness.cli._common import add_option, baud_rate, nonnegative_int, positive_finite_float, positive_int, subcommand
from harness.errors import ConfigError
from harness.fileio import OutputSet

EPILOG = """\
examples:
  hil profile --port /dev/ttyACM0 --model gesture_quantized.tflite --html profile.html
  hil profile --port socket://127.0.0.1:5555 --model M.tflite --data M_validation_data.npz --samples 50

Each sample runs once with the device's per-operator trace on; ticks become µs with the
device's tick rate (INFO tick_hz, else cpu_hz). The simulated board's times are HOST
time and QEMU's are an emulator's: the report labels them so.

exit codes: 0 profiled; 2 could not run (port, device without the trace, model, data).
"""


def register(sub, common) -> None:
    p = subcommand(
        sub,
        common,
        "profile",
        help="per-operator time on a device (min / median / p99, per op type)",
        epilog=EPILOG,
    )
    add_option(p, "--port", default=os.environ.get("HIL_PORT"), metavar="URL", help="pyserial URL (default $HIL_PORT)")
    add_option(p, "--model", required=True, metavar="M.tflite", help="the model the device holds")
    add_option(p, "--data", default=None, metavar="D.npz", help="inputs to run (default: seeded random inputs)")
    add_option(p, "--samples", type=positive_int, default=20, metavar="N", help="samples traced (default 20)")
    add_option(p, "--baud", type=baud_rate, default=921600, metavar="B", help="baud rate (default 921600)")
    add_option(p, "--timeout", type=positive_finite_float, default=2.0, metavar="S", help="answer timeout (s)")
    add_option(p, "--retries", type=nonnegative_int, default=5, metavar="N", help="retransmissions (default 5)")
    add_option(p, "--html", metavar="PATH", help="self-contained HTML report with the chart")
    add_option(p, "--json", metavar="PATH", help="JSON report (tinyhil-profile-report/1)")
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.profile import profile, render_html, summary

    if not args.port:
        raise ConfigError(
            "no port given", "pass --port URL or set HIL_PORT (`hil device sim` starts a simulated board)"
        )
    inputs = {"--model": args.model}
    if args.data:
        inputs["--data"] = args.data
    if "://" not in str(args.port):
        inputs["--port"] = args.port
    outs = OutputSet(outputs={"--html": args.html, "--json": args.json}, inputs=inputs).check()
    with console.make_progress() as progress:
        rep = profile(
            args.port,
            args.model,
            args.data,
            samples=args.samples,
            baud=args.baud,
            timeout=args.timeout,
            retries=args.retries,
            progress=progress,
        )
    if console.VERBOSITY >= 0:
        console.out.print(summary(rep))
    written = []
    with procs.deferred_signals(), outs.staged() as st:
        if args.json:
            st.path(args.json).write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
            written.append(args.json)
        if args.html:
            st.path(args.html).write_text(render_html(rep), encoding="utf-8")
            written.append(args.html)
    for w in written:
        if console.VERBOSITY >= 0:
            console.err.print(f"report: {w}", soft_wrap=True, highlight=False, markup=False)
    return 0
