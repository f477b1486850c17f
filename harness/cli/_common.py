"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import math
import sys

from harness.boards import CAPTURE_MAX


class Verdict(int):
    """An exit code a quality gate decided (0 pass, 1 failed). The top level
    lets 1 through only as a `Verdict`: every other failure is 2."""


def gate_verdict(passed_or_code: bool | int) -> Verdict:
    """`Verdict(0)` / `Verdict(1)` from a gate outcome; 2 stays 2."""
    if isinstance(passed_or_code, bool):
        return Verdict(0 if passed_or_code else 1)
    return Verdict(int(passed_or_code))


class HilArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line (`error: … — see hil X --help`), exit 2."""

    def error(self, message: str):
        sys.stderr.write(f"error: {message.splitlines()[0]} — see `{self.prog} --help`\n")
        raise SystemExit(2)


def add_option(parser_or_group, name: str, *aliases: str, **kwargs):
    """Register `--snake_case` and its `--kebab-case` twin as one option.

    The seed tools use snake_case (`--checkpoint_path`); shells and most CLIs
    use kebab-case; both are accepted, help shows the first spelling.
    """
    names = [name]
    alt = "--" + name[2:].replace("_", "-") if "_" in name else "--" + name[2:].replace("-", "_")
    if alt != name:
        names.append(alt)
    names.extend(aliases)
    kwargs.setdefault("dest", name[2:].replace("-", "_"))
    return parser_or_group.add_argument(*names, **kwargs)


def subcommand(sub, common, name: str, help: str, description: str | None = None, epilog: str | None = None):
    return sub.add_parser(
        name,
        parents=[common],
        help=help,
        description=description or help,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


# ----------------------------------------------------------------- argparse `type=` helpers
# Nonsense values are refused while parsing, with the option named, before
# any work starts.


def _int(text: str) -> int:
    try:
        return int(text, 0) if text.strip().lower().startswith(("0x", "0o", "0b")) else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return v


def _ranged(name: str, parse, ok, why: str):
    """An argparse `type=`: `parse` the text, refuse it unless `ok(value)`,
    saying "<text> <why>"."""

    def check(text: str):
        v = parse(text)
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{text} {why}")
        return v

    check.__name__ = check.__qualname__ = name
    return check


positive_int = _ranged("positive_int", _int, lambda v: v >= 1, "must be at least 1")
nonnegative_int = _ranged("nonnegative_int", _int, lambda v: v >= 0, "must be 0 or more")
finite_float = _ranged("finite_float", _float, lambda v: True, "")
positive_finite_float = _ranged("positive_finite_float", _float, lambda v: v > 0, "must be above 0")
nonnegative_finite_float = _ranged("nonnegative_finite_float", _float, lambda v: v >= 0, "must be 0 or more")
# A gate threshold: 0 or more, or -1 (off).
gate_int = _ranged("gate_int", _int, lambda v: v >= -1, "must be 0 or more (-1 turns the gate off)")
# A fraction in [0, 1].
unit_float = _ranged("unit_float", _float, lambda v: 0.0 <= v <= 1.0, "must be between 0 and 1")
# A cosine threshold in [-1, 1]; -1 turns the gate off.
cosine_gate = _ranged(
    "cosine_gate", _float, lambda v: -1.0 <= v <= 1.0, "must be between -1 and 1 (-1 turns the gate off)"
)
tcp_port = _ranged("tcp_port", _int, lambda v: 0 <= v <= 65535, "is not a TCP port (0 to 65535)")
baud_rate = _ranged("baud_rate", _int, lambda v: v >= 1, "is not a baud rate (e.g. 115200)")


capture_size = _ranged("capture_size", _int, lambda v: 0 <= v <= CAPTURE_MAX, f"is outside 0..{CAPTURE_MAX}")


def perturbation(text: str) -> tuple[int, int]:
    """`K` or `K:LSB`: operator K, moved by LSB steps (signed, not 0; default +1)."""
    k_txt, _, lsb_txt = text.partition(":")
    k, lsb = _int(k_txt), _int(lsb_txt) if lsb_txt else 1
    if k < 0 or not lsb or not -127 <= lsb <= 127:
        raise argparse.ArgumentTypeError(f"{text} is not K[:LSB] with K >= 0 and LSB in ±1..127 (e.g. 3 or 3:-2)")
    return k, lsb
