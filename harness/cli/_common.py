"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import math
import sys


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


def positive_int(text: str) -> int:
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return v


def nonnegative_int(text: str) -> int:
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return v


def finite_float(text: str) -> float:
    return _float(text)


def positive_finite_float(text: str) -> float:
    v = _float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be above 0")
    return v


def nonnegative_finite_float(text: str) -> float:
    v = _float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return v


def gate_int(text: str) -> int:
    """A gate threshold: 0 or more, or -1 (off)."""
    v = _int(text)
    if v < -1:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more (-1 turns the gate off)")
    return v


def unit_float(text: str) -> float:
    """A fraction in [0, 1]."""
    v = _float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return v


def cosine_gate(text: str) -> float:
    """A cosine threshold in [-1, 1]; -1 turns the gate off."""
    v = _float(text)
    if not -1.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be between -1 and 1 (-1 turns the gate off)")
    return v


def tcp_port(text: str) -> int:
    v = _int(text)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (0 to 65535)")
    return v


def baud_rate(text: str) -> int:
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a baud rate (e.g. 115200)")
    return v
