"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse


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
