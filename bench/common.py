"""Shared pieces for benchmarks: unique lab names, results file, statistics, tables."""

from __future__ import annotations

import json
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results.json"
console = Console()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 4),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 4),
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
        "n": len(ordered),
    }


def saved(section: str) -> dict[str, Any]:
    """What the results file holds for `section` ({} if nothing)."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    return results.get(section, {})


def save(section: str, data: Any) -> None:
    """Write `data` into `section` of the results file. Keys of the section that `data`
    does not set are kept: a section's earlier figures (before/after rows kept beside
    the current ones) survive a re-run of its bench."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[section] = {**results.get(section, {}),
                        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        **data}
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def show(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[str(v) for v in r])
    console.print(table)
