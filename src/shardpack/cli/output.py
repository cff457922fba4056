"""What the command line shows besides results: exit codes, progress bars (on a terminal only,
never in CI or pipes) and JSON output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

EXIT_OK, EXIT_BAD_DATA, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM


def show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def progress_bar(label: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A callback advancing a progress bar to ``done`` units; a no-op when disabled.

    The bar (and the thread that redraws it) starts on the first update: a pack forks its
    worker processes before that, and forking is only safe while no other thread runs."""
    if not enabled:
        yield lambda done: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn()]
    columns += [TransferSpeedColumn(), TimeRemainingColumn()]
    bar = Progress(*columns, transient=True, console=stderr_console())
    task = bar.add_task(label, total=total)

    def advance(done: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done)

    try:
        yield advance
    finally:
        if bar.live.is_started:
            bar.stop()


PIPE_WIDTH = 132  # rich's 80 columns off a terminal wrap the bench and info tables mid-cell


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def stdout_console() -> Any:
    """A console for tables on stdout: the terminal's width, or (in a pipe, a log, CI, unless
    ``COLUMNS`` says otherwise) ``PIPE_WIDTH`` columns."""
    from rich.console import Console

    wide = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return Console(width=PIPE_WIDTH if wide else None)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
