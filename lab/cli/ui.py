"""Human and machine output: rich tables and progress on stderr, JSON on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t


def error(message: str, details: list[str] | None = None) -> None:
    """An error sentence (and detail lines) on stderr; their text is never read as markup,
    since it quotes input (`[/]` in a path would otherwise end the colour, or crash)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    for line in details or []:
        err.print(f"  {escape(line)}", highlight=False, soft_wrap=True)


@contextmanager
def progress(title: str, quiet: bool = False) -> Iterator[Any]:
    """A spinner with the current step on stderr; yields a function taking step text."""
    if quiet or not err.is_terminal:
        def note(msg: str) -> None:
            if not quiet:
                err.print(f"  {msg}", highlight=False)
        yield note
        return
    with err.status(title) as status:
        def update(msg: str) -> None:
            status.update(f"{title}: {msg}")
            err.print(f"  [green]✓[/] {msg}", highlight=False)
        yield update
