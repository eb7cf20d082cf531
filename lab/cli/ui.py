"""Human and machine output: rich tables and progress on stderr, JSON on stdout.

Human output must survive a pipe, a log file or a test's capture: when a stream is not a
terminal its console is as wide as the text (no line is ever wrapped, so no number is cut
from its unit), and a table takes its natural width. On a terminal a table fits the window
by wrapping cells between words; a cell is never cut short with an ellipsis, and a value
someone must copy (`copyable` columns: ids, tokens) is never wrapped at all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table

# The width of a console that is not a terminal: wider than any line the tool prints, so
# nothing is wrapped (rich pads nothing to the console's width unless asked to).
UNWRAPPED_WIDTH = 10_000


class _Console(Console):
    """A rich console that is as wide as its text when it is not writing to a terminal
    (rich would otherwise wrap at $COLUMNS or 80). Decided at each print: the stream may
    be swapped (tests capture it)."""

    def _get_size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if self.is_terminal:
            return size
        return ConsoleDimensions(max(size.width, UNWRAPPED_WIDTH), size.height)

    size = property(_get_size, Console.size.fset)  # type: ignore[attr-defined]


out = _Console(emoji=False)
err = _Console(stderr=True, emoji=False)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def table(title: str, columns: list[str], rows: list[list[Any]],
          copyable: tuple[str, ...] = ()) -> Table:
    """A table whose cells wrap between words when it must fit a terminal, and are never
    cut short; the `copyable` columns are never wrapped or shortened at all."""
    t = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        if col in copyable:
            t.add_column(col, no_wrap=True, overflow="ignore",
                         min_width=max([len(col)] + [len(str(r[columns.index(col)]))
                                                      for r in rows]))
        else:
            t.add_column(col, overflow="fold")
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
