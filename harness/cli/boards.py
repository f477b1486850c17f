"""`hil boards`: the board definitions this installation knows."""

from __future__ import annotations

from harness.cli._common import subcommand


def register(sub, common):
    p = subcommand(sub, common, "boards", "list the known boards and their limits")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from harness import console
    from harness.boards import all_boards

    t = Table("id", "name", "core", "flash", "RAM", "baud", "upload", "emulated")
    for b in all_boards():
        t.add_row(b.id, b.name, b.core, f"{b.flash_bytes // 1024} KiB", f"{b.ram_bytes // 1024} KiB",
                  str(b.baud), b.upload_method, "yes" if b.get("emulated") else "")
    console.out.print(t)
    return 0
