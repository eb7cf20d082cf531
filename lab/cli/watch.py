"""`watch`: a live view of a running lab for the projector (rich), or JSON lines."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from lab.cli import ui
from lab.cli.main import JsonOpt, LabOpt, app
from lab.draw import palette
from lab.model.errors import BadInput

WATCH_HELP = """A live view of a running lab, refreshed several times a second.

A row per client: the site answering it on IPv4 and on IPv6 (the service's own
identity, asked --rate times a second from the client's namespace), the RTT,
queries lost in the last second, and a strip of the last 10 s (one character
per 0.5 s: the letter of the site that answered most, x: mostly no answer).
A row per site: health, announced (its router holds its route), the reason.
Below: the last events (clients moving, losing and regaining answers, health
transitions, withdrawals, faults injected and healed).

Run `fail`/`heal` in another terminal and watch the clients move. Stops at
--duration or on Ctrl-C and leaves nothing running. --json: one JSON object
per line per refresh (clients, sites, the events since the previous line)."""

FRAME_HZ = 4.0


def _site_style(symbols: dict[str, str]) -> dict[str, str]:
    colours = [c for c in palette.SITE_COLOURS if c not in (palette.VERMILLION,
                                                            palette.BLACK)]
    return {site: colours[i % len(colours)] for i, site in enumerate(symbols)}


def _strip(history: str, symbols: dict[str, str], style: dict[str, str]) -> Text:
    by_symbol = {v: style[k] for k, v in symbols.items()}
    text = Text()
    for ch in history:
        if ch == "x":
            text.append("x", style=f"bold {palette.VERMILLION}")
        else:
            text.append(ch, style=by_symbol.get(ch, ""))
    return text


def render(frame: dict[str, Any], events: list[Any], symbols: dict[str, str],
           expected: dict[str, list[str]], started: float) -> Group:
    style = _site_style(symbols)
    clients = Table(title=f"lab {frame['lab']}: clients (anycast DNS id.server)",
                    title_justify="left", header_style="bold", expand=False)
    for col in ("client", "expected", "IPv4", "lost/s", "last 10 s", "IPv6", "lost/s",
                "last 10 s"):
        clients.add_column(col, no_wrap=True)
    for name, fams in frame["clients"].items():
        cells: list[Any] = []
        for fam in ("ipv4", "ipv6"):
            f = fams[fam]
            if f["site"] is None:
                cells.append(Text("no answer", style=f"bold {palette.VERMILLION}"))
            else:
                mark = "" if f["site"] in expected.get(name, []) else " (moved)"
                rtt = f" {f['rtt_ms']:.1f} ms" if f["rtt_ms"] is not None else ""
                cells.append(Text(f"{f['site']}{mark}{rtt}", style=style.get(f["site"], "")))
            cells.append(str(f["lost_last_s"]))
            cells.append(_strip(f["history"], symbols, style))
        clients.add_row(name, " ".join(expected.get(name, [])), *cells)
    sites = Table(title="sites", title_justify="left", header_style="bold")
    for col in ("site", "letter", "health", "announced", "reason"):
        sites.add_column(col, overflow="fold")
    for name, row in frame["sites"].items():
        announced = Text("yes", style=palette.GREEN) if row["announced"] else Text(
            "NO", style=f"bold {palette.VERMILLION}")
        health = str(row.get("health"))
        sites.add_row(Text(name, style=style.get(name, "")), symbols.get(name, "?"),
                      Text(health, style="" if health in ("up", "static") else
                           f"bold {palette.VERMILLION}"), announced, escape(row["reason"]))
    if not frame["sites"]:
        sites.add_row("…", "", "", "", "reading the sites")
    lines = [Text("last events", style="bold")]
    for e in sorted(events, key=lambda e: e.t)[-10:]:  # the health log arrives late
        lines.append(Text(f"{e.to_json()['time'][11:23]}  {e.text}"))
    footer = Text(f"{time.monotonic() - started:.0f} s; Ctrl-C to stop", style="dim")
    return Group(clients, sites, *lines, footer)


@app.command(help=WATCH_HELP)
def watch(lab: LabOpt = None,
          rate: Annotated[float, typer.Option(
              "--rate", min=1, max=100, help="queries/s per client and family")] = 10.0,
          duration: Annotated[float | None, typer.Option(
              "--duration", min=0.5, max=86400, help="stop after this many seconds "
                                                   "(default: until Ctrl-C)")] = None,
          snapshot: Annotated[Path | None, typer.Option(
              "--snapshot", help="at exit, save the last frame as an SVG picture")] = None,
          json_out: JsonOpt = False) -> None:
    from rich.live import Live

    from lab.host import env, labs
    from lab.observe.watch import Watcher

    started = time.monotonic()
    if snapshot is not None:
        from lab.draw.render import check_output

        if snapshot.suffix.lower() != ".svg":
            raise BadInput(f"--snapshot {snapshot}: the frame is saved as SVG; give a path "
                           "ending in .svg")
        check_output(snapshot)
    env.require_linux_root()
    opened = labs.open_lab(lab)
    if opened.topology is None or opened.plan is None:
        from lab.model.errors import LabError

        raise LabError(f"lab '{opened.name}' has no topology record: "
                       f"{labs.command(opened.name, 'down')}")
    expected = {n: c.expect_sites for n, c in opened.topology.clients.items()}
    watcher = Watcher(opened, rate).start()
    stop = {"now": False}

    def on_term(_sig: int, _frame: object) -> None:
        stop["now"] = True

    previous = signal.signal(signal.SIGTERM, on_term)
    seq = 0
    seen: list[Any] = []
    frame: dict[str, Any] | None = None
    end = None if duration is None else started + duration
    try:
        if json_out:
            while not stop["now"] and (end is None or time.monotonic() < end):
                frame = watcher.snapshot()
                new, seq = watcher.events_since(seq)
                seen = (seen + new)[-50:]
                frame["events"] = [e.to_json() for e in new]
                sys.stdout.write(json.dumps(frame) + "\n")
                sys.stdout.flush()
                _sleep_until_frame(end)
        else:
            with Live(console=ui.out, refresh_per_second=FRAME_HZ, transient=False,
                      auto_refresh=False) as live:
                while not stop["now"] and (end is None or time.monotonic() < end):
                    frame = watcher.snapshot()
                    new, seq = watcher.events_since(seq)
                    seen = (seen + new)[-50:]
                    live.update(render(frame, seen, watcher.symbols, expected, started),
                                refresh=True)
                    _sleep_until_frame(end)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops watching: a clean exit
    finally:
        signal.signal(signal.SIGTERM, previous)
        watcher.stop()
    if snapshot is not None and frame is not None:
        save_frame(render(frame, seen, watcher.symbols, expected, started), snapshot,
                   f"anycast-lab watch --lab {opened.name}")
    raise typer.Exit(0)


def save_frame(frame: Group, path: Path, title: str) -> None:
    """A frame as an SVG picture (rich's own export: the terminal's text and colours)."""
    import io

    from rich.console import Console

    console = Console(record=True, width=130, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor")
    console.print(frame)
    path.write_text(console.export_svg(title=title))


def _sleep_until_frame(end: float | None) -> None:
    pause = 1.0 / FRAME_HZ
    if end is not None:
        pause = max(0.0, min(pause, end - time.monotonic()))
    time.sleep(pause)
