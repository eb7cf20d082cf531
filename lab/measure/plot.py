"""Failover timeline pictures (matplotlib, no display needed): per trial a panel, per probe
(client and family) a row showing which site answered each query, lost queries marked;
every panel on one time axis, 0 at the fault.

Markers (a line style and a legend entry each, so colour is never the only cue):
- across the panel: fault injected (0), the site's health check down, withdraw sent,
  fault healed, re-announced (from the trial's events: a fault that bypasses the health
  daemon has no health or withdraw marker, and the legend says which were not recorded);
- on a probe's row: the route changed at its client's router (first change after the
  fault: a thick tick where BIRD's answer showed it, a whisker back to the look before
  that did not), and the first query answered by another site than before.
Each row says the client's outage and lost queries at its right. Past `max_panels`
trials the first panel summarises every trial (its longest outage) and the worst trials
are drawn, with a note saying so."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from lab.draw import palette
from lab.measure.trials import ClientTrial, TrialRecord

LOST = palette.VERMILLION
SITE_COLOURS = [c for c in palette.SITE_COLOURS if c not in (LOST, palette.BLACK)]
# The time axis: the second before the fault (what `before` is judged on) to this long
# after the latest heal.
BEFORE_S = 1.0
AFTER_HEAL_S = 1.5
V6_SUFFIX = " v6"  # the name of a client's IPv6 probe (lab.measure.failover)


@dataclass(frozen=True)
class Marker:
    kind: str
    label: str
    colour: str
    style: object  # a matplotlib line style


PANEL_MARKERS = [
    Marker("fault", "fault injected", palette.BLACK, "-"),
    Marker("health-down", "health check down", palette.ORANGE, "--"),
    Marker("withdraw", "withdraw sent", palette.VERMILLION, "-."),
    Marker("heal", "fault healed", palette.GREY, ":"),
    Marker("announce", "re-announced", palette.GREEN, (0, (5, 1))),
]
ROUTE = Marker("route-change", "route changed at the client's router", palette.BLUE, "-")
MOVED = Marker("moved", "client answered elsewhere", palette.BLACK, "")


def probe_name(c: ClientTrial) -> str:
    return c.client + (V6_SUFFIX if c.family == "ipv6" else "")


def worst_first(records: list[TrialRecord]) -> list[int]:
    """Trial indexes, the longest outage first (a client that never got an answer back
    counts as the longest), then the most lost queries."""
    def badness(r: TrialRecord) -> tuple[float, int]:
        outages = [float("inf") if c.outage_ms is None else c.outage_ms for c in r.clients
                   if c.site_after != c.site_before or c.lost]
        return max(outages, default=0.0), max((c.lost for c in r.clients), default=0)

    return sorted(range(len(records)), key=lambda i: badness(records[i]), reverse=True)


def panel_times(record: TrialRecord) -> dict[str, float]:
    """The panel-wide markers of a trial, in seconds since the fault."""
    t0 = record.t_fault
    found = {"fault": 0.0, "heal": record.t_heal - t0}
    for e in record.events:
        if e.kind in ("health-down", "withdraw") and t0 <= e.t <= record.t_heal \
                and e.kind not in found:
            found[e.kind] = e.t - t0
        if e.kind == "announce" and e.t >= record.t_heal and "announce" not in found:
            found["announce"] = e.t - t0
    return found


def route_change(record: TrialRecord, router: str | None, family: str
                 ) -> tuple[float, float] | None:
    """The first change of `router`'s best path (for `family`) after the fault, before
    the heal: (last look without it, first look with it), in seconds since the fault."""
    for e in record.events:
        if e.kind == "route-change" and e.where == router and e.family == family \
                and record.t_fault <= e.t <= record.t_heal:
            since = e.since if e.since is not None else e.t
            return since - record.t_fault, e.t - record.t_fault
    return None


def outage_text(c: ClientTrial | None) -> str:
    if c is None:
        return ""
    if c.outage_ms is None:
        return f"no answer before the heal, {c.lost} lost"
    if c.site_after == c.site_before and not c.lost:
        return "unaffected"
    return f"outage {c.outage_ms:.0f} ms, {c.lost} lost"


def figure(records: list[TrialRecord], title: str, max_panels: int = 6,
           routers: dict[str, str] | None = None, site: str | None = None) -> Figure:
    """The timeline figure (tests read its artists). `routers`: client -> its router, for
    the route-change marker on its rows."""
    rows = list(dict.fromkeys(name for r in records for name in r.samples))
    sites = sorted({s.site for r in records for ss in r.samples.values() for s in ss
                    if s.site})
    colour = {s: SITE_COLOURS[i % len(SITE_COLOURS)] for i, s in enumerate(sites)}
    summary = len(records) > max_panels
    shown = sorted(worst_first(records)[:max_panels - 1]) if summary else list(
        range(len(records)))
    panels = len(shown) + (1 if summary else 0)
    height = 1.6 + sum(0.45 * len(rows) + 0.5 for _ in shown) + (1.6 if summary else 0)
    fig = plt.figure(figsize=(12, height))
    ratios = ([2.0] if summary else []) + [max(1.0, 0.45 * len(rows))] * len(shown)
    grid = fig.add_gridspec(panels, 1, height_ratios=ratios, hspace=0.25)
    first: Axes | None = None
    present: set[str] = set()
    if summary:
        _summary(fig.add_subplot(grid[0, 0]), records, shown)
    starts = [min((s.t for ss in r.samples.values() for s in ss), default=r.t_fault)
              - r.t_fault for r in records]
    ends = [max((s.t for ss in r.samples.values() for s in ss), default=r.t_heal)
            - r.t_fault for r in records]
    for slot, index in enumerate(shown):
        ax = fig.add_subplot(grid[slot + (1 if summary else 0), 0], sharex=first)
        first = first or ax
        present |= _panel(ax, records[index], index, rows, colour, routers or {})
        ax.set_xlim(max(min(starts), -BEFORE_S) - 0.05, min(max(ends), max(
            r.t_heal - r.t_fault for r in records) + AFTER_HEAL_S) + 0.05)
        if slot < len(shown) - 1:
            ax.tick_params(labelbottom=False)
    assert first is not None
    fig.axes[-1].set_xlabel("seconds since the fault (all panels on one axis)")
    handles = [Line2D([], [], color=colour[s], marker="|", linestyle="", markersize=10,
                      markeredgewidth=2, label=f"answered by {s}") for s in sites]
    handles.append(Line2D([], [], color=LOST, marker="x", linestyle="", label="no answer"))
    for m in PANEL_MARKERS:
        if m.kind in present:
            handles.append(Line2D([], [], color=m.colour, linestyle=m.style, label=m.label))
    if ROUTE.kind in present:
        handles.append(Line2D([], [], color=ROUTE.colour, linewidth=3, label=ROUTE.label))
    if MOVED.kind in present:
        handles.append(Line2D([], [], color=MOVED.colour, marker="D", markerfacecolor="none",
                              linestyle="", label=MOVED.label))
    top = 1.0 - 1.1 / height  # room for the title and the legend, in inches
    fig.subplots_adjust(top=top, bottom=0.9 / height if notes_needed(present, summary) else
                        0.6 / height, right=0.86)
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, top + 0.1 / height))
    notes = []
    missing = [m.label for m in [*PANEL_MARKERS, ROUTE] if m.kind not in present]
    if missing:
        notes.append("not recorded in these trials: " + ", ".join(missing)
                     + (f" (no such event at {site})" if site else ""))
    if summary:
        notes.append(f"{len(records)} trials: the top panel shows every trial's longest "
                     f"outage; the {len(shown)} worst are drawn below")
    if notes:
        fig.text(0.5, 0.005, "\n".join(notes), ha="center", va="bottom", fontsize=8,
                 style="italic", gid="note")
    fig.suptitle(title, y=1.0 - 0.1 / height, va="top", fontsize=11)
    return fig


def notes_needed(present: set[str], summary: bool) -> bool:
    return summary or any(m.kind not in present for m in [*PANEL_MARKERS, ROUTE])


def _summary(ax: Axes, records: list[TrialRecord], shown: list[int]) -> None:
    """Every trial's longest outage (ms) as a bar; the trials drawn below hatched."""
    for i, r in enumerate(records):
        outages = [c.outage_ms for c in r.clients if c.outage_ms is not None]
        never = any(c.outage_ms is None for c in r.clients)
        value = max(outages, default=0.0)
        bar = ax.bar(i + 1, value, color=palette.SKY_BLUE if i not in shown else palette.BLUE,
                     hatch="//" if i in shown else None, edgecolor=palette.BLACK,
                     gid=f"summary-trial-{i + 1}")
        if never:
            ax.annotate("never", (i + 1, value), ha="center", va="bottom", fontsize=7)
        del bar
    ax.set_xlabel("trial (hatched: drawn below)", fontsize=8)
    ax.set_ylabel("longest\noutage ms", fontsize=8)
    ax.set_xticks(range(1, len(records) + 1))
    ax.grid(axis="y", alpha=0.3)


def _panel(ax: Axes, record: TrialRecord, index: int, rows: list[str],
           colour: dict[str, str], routers: dict[str, str]) -> set[str]:
    """One trial; returns the marker kinds it drew."""
    t0 = record.t_fault
    drawn: set[str] = set()
    by_row = {probe_name(c): c for c in record.clients}
    for row, name in enumerate(rows):
        samples = record.samples.get(name, [])
        for site, c in colour.items():
            xs = [s.t - t0 for s in samples if s.site == site]
            if xs:
                ax.scatter(xs, [row] * len(xs), s=9, marker="|", color=c, linewidths=1.2)
        lost = [s.t - t0 for s in samples if s.site is None]
        if lost:
            ax.scatter(lost, [row] * len(lost), s=16, marker="x", color=LOST, linewidths=1.0,
                       gid=f"lost:{name}")
        trial = by_row.get(name)
        client = trial.client if trial else name.removesuffix(V6_SUFFIX)
        family = trial.family if trial else "ipv4"
        window = route_change(record, routers.get(client), family)
        if window is not None:
            since, when = window
            ax.vlines(when, row - 0.42, row + 0.42, color=ROUTE.colour, linewidth=3,
                      gid=f"marker:{ROUTE.kind}:{name}")
            ax.hlines(row + 0.42, since, when, color=ROUTE.colour, linewidth=1.5,
                      gid=f"window:{ROUTE.kind}:{name}")  # it changed in this window
            drawn.add(ROUTE.kind)
        before = trial.site_before if trial else None
        moved = next((s.t - t0 for s in samples if s.t >= t0 and s.site
                      and s.site != before), None)
        if moved is not None and before is not None:
            ax.plot([moved], [row - 0.3], marker="D", markersize=5, color=MOVED.colour,
                    markerfacecolor="none", linestyle="", gid=f"marker:{MOVED.kind}:{name}")
            drawn.add(MOVED.kind)
        ax.text(1.005, row, outage_text(trial), transform=blended_transform_factory(
            ax.transAxes, ax.transData), va="center", fontsize=7, gid=f"outage:{name}")
    for m in PANEL_MARKERS:
        when = panel_times(record).get(m.kind)
        if when is not None:
            ax.axvline(when, color=m.colour, linestyle=m.style, linewidth=1.2,
                       gid=f"marker:{m.kind}")
            drawn.add(m.kind)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylim(len(rows) - 0.3, -0.7)  # the first row on top
    ax.set_ylabel(f"trial {index + 1}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return drawn


def timeline(records: list[TrialRecord], path: Path, title: str, max_panels: int = 6,
             routers: dict[str, str] | None = None, site: str | None = None) -> Path:
    fig = figure(records, title, max_panels, routers, site)
    rows = list(dict.fromkeys(name for r in records for name in r.samples))
    path.parent.mkdir(parents=True, exist_ok=True)
    # The rows, in the file itself, so a reader (or a test) can check what is drawn.
    fig.savefig(path, dpi=110, bbox_inches="tight",
                metadata={"Title": title, "Description": "rows: " + ",".join(rows)})
    plt.close(fig)
    return path
