"""`hil boards`: the board definitions this installation knows."""

from __future__ import annotations

from harness import console
from harness.boards import all_boards, write_pio_manifests
from harness.cli._common import add_option, subcommand


def register(sub, common):
    p = subcommand(sub, common, "boards", "list the known boards and their limits")
    add_option(
        p,
        "--write_pio",
        action="store_true",
        help="rewrite PlatformIO's board manifests (boards/pio/*.json) from boards/<id>.json",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.markup import escape

    if args.write_pio:
        for path in write_pio_manifests():
            console.info(f"wrote {path}")
        return 0

    # Ids, sizes and upload methods stay whole; on a narrow terminal each
    # board's long name goes on its own line instead of a squeezed column.
    boards = all_boards()
    cols = ["id", "core", "flash", "RAM", "baud", "upload"]
    rows = [
        [
            b.id,
            b.core,
            _size(b.flash_bytes),
            _size(b.ram_bytes),
            str(b.baud),
            b.upload_method + (" (emulated)" if b.get("emulated") else ""),
        ]
        for b in boards
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    wide = console.out.width >= sum(widths) + 2 * len(cols) + max(len(b.name) for b in boards)
    if wide:
        cols.append("name")
        for b, r in zip(boards, rows):
            r.append(b.name)
        widths.append(max(len(b.name) for b in boards))

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    console.out.print(escape(line(cols)), style="bold", highlight=False)
    for b, r in zip(boards, rows):
        console.out.print(escape(line(r)), highlight=False)
        if not wide:
            console.out.print("  " + escape(b.name), style="dim", highlight=False)
    return 0


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 4 * 1024 * 1024 else f"{n // 1024} KiB"
