"""Console output for the CLI only (the library never prints).

Library functions that do long work accept a `progress` callback object;
`make_progress()` gives a rich progress bar on a terminal and a silent one
otherwise (CI logs stay clean).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Diagnostics go to stderr so stdout stays parseable (paths, JSON).
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

VERBOSITY = 0  # -1 quiet, 0 normal, 1+ verbose; set by the CLI


def info(msg: str) -> None:
    if VERBOSITY >= 0:
        err.print(msg)


def detail(msg: str) -> None:
    if VERBOSITY >= 1:
        err.print(f"[dim]{msg}[/dim]")


def result(msg: str) -> None:
    """The final verdict of a command: shown even with -q."""
    err.print(msg, soft_wrap=True)


def warn(msg: str) -> None:
    if VERBOSITY >= -1:
        err.print(f"[yellow]warning:[/yellow] {msg}")


class NullProgress:
    """The progress interface the library uses; does nothing."""

    def task(self, description: str, total: int | None = None) -> NullTask:
        return NullTask()


class NullTask:
    def advance(self, n: int = 1, **fields) -> None:
        pass

    def update(self, **fields) -> None:
        pass

    def close(self) -> None:
        pass


class _RichTask:
    def __init__(self, progress: Progress, task_id):
        self._p = progress
        self._id = task_id

    def advance(self, n: int = 1, **fields) -> None:
        self._p.update(self._id, advance=n, **fields)

    def update(self, **fields) -> None:
        self._p.update(self._id, **fields)

    def close(self) -> None:
        self._p.update(self._id, visible=True)


class RichProgress:
    def __init__(self, progress: Progress):
        self._p = progress

    def task(self, description: str, total: int | None = None, **fields) -> _RichTask:
        return _RichTask(self._p, self._p.add_task(description, total=total, **fields))


@contextlib.contextmanager
def make_progress(extra_columns=()) -> Iterator[NullProgress | RichProgress]:
    """A progress bar on an interactive terminal, nothing otherwise."""
    if VERBOSITY < 0 or not sys.stderr.isatty():
        yield NullProgress()
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),  # leaves room for the link column on 100 columns
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err, transient=False) as p:
        yield RichProgress(p)
