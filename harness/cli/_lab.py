"""`--lab LAB --instance NAME` for `hil validate` and `hil flash`: the port
and board come from the lab file, and the board's lock is held meanwhile."""

from __future__ import annotations

import contextlib
import os

from harness.cli._common import add_option
from harness.errors import ConfigError
from harness.lab.labfile import load_lab
from harness.lab.labgrid import LabgridClient
from harness.lab.lock import BoardLock
from harness.lab.run import _LocalReach


def add_lab_options(parser) -> None:
    g = parser.add_argument_group("lab (instead of --port/--board)")
    add_option(g, "--lab", default=os.environ.get("HIL_LAB"), metavar="LAB", help="lab file (default $HIL_LAB)")
    add_option(g, "--instance", metavar="NAME", help="the lab file's instance: its port and board, under its lock")
    add_option(g, "--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for a busy board")


@contextlib.contextmanager
def lab_instance(args):
    """Locks the instance (and acquires its labgrid place), sets args.port
    and args.board from it; a no-op without --instance."""
    if not getattr(args, "instance", None):
        yield None
        return

    if not args.lab:
        raise ConfigError("--instance needs --lab LAB", "pass the lab file (or set HIL_LAB)")
    lab = load_lab(args.lab)
    inst = lab.get(args.instance)
    if getattr(args, "board", None) and args.board != inst.board:
        raise ConfigError(
            f"--board {args.board} but instance {inst.name} is a {inst.board}", "leave --board out with --instance"
        )
    with BoardLock(inst.lock_key, lock_dir=lab.lock_dir, wait=args.wait, label=f"board {inst.name}"):
        client = handle = None
        try:
            if inst.place is not None:
                client = LabgridClient(lab.coordinator)
                handle = client.acquire(inst.place, wait=args.wait)
                reach = handle
            else:
                reach = _LocalReach(inst)
            args.board = inst.board
            args.port = reach.url()
            if inst.baud and hasattr(args, "baud"):
                args.baud = inst.baud
            yield inst
        finally:
            if client is not None:
                client.close()
