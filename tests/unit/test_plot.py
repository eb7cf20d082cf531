"""The failover timeline, read from the figure's artists (not pixels): every trial drawn on
one time axis anchored at the fault, the event markers where the trial's events put them,
the per-client outage written on its row, and past the panel limit a summary panel plus
the worst trials with a note. Also the health-event log read onto the trial's clock."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

from lab.measure import events as ev
from lab.measure.plot import PANEL_MARKERS, figure, timeline, worst_first
from lab.measure.trials import TrialRecord, analyse
from probes.dns import Sample

RATE = 100  # samples per second in the synthetic trials
ROUTERS = {"c-eu": "r-eu", "c-us": "r-us"}


def trial(start: float, outage_s: float, events: bool = True) -> TrialRecord:
    """c-eu on ams, lost for `outage_s` after the fault at start+1, then nyc, healed at
    start+2, back on ams at start+2.05; c-us on nyc throughout; IPv4 and IPv6 probes."""
    t_fault, t_heal = start + 1.0, start + 2.0
    samples: dict[str, list[Sample]] = {}
    for name in ("c-eu", "c-eu v6", "c-us", "c-us v6"):
        out = []
        for i in range(int(3 * RATE)):
            t = start + i / RATE
            if name.startswith("c-us"):
                site = "nyc"
            elif t < t_fault or t >= t_heal + 0.05:
                site = "ams"
            elif t < t_fault + outage_s:
                site = None
            else:
                site = "nyc" if t < t_heal + 0.05 else "ams"
            out.append(Sample(i, t, None if site is None else 1.0, site))
        samples[name] = out
    clients = [analyse(n, s, t_fault, t_heal) for n, s in samples.items()]
    for c in clients:
        if c.client.endswith(" v6"):
            c.client, c.family = c.client.removesuffix(" v6"), "ipv6"
    record = TrialRecord(t_fault, t_heal, samples, clients)
    if events:
        record.events = [
            ev.Event(t_fault + outage_s - 0.01, "health-down", "ams"),
            ev.Event(t_fault + outage_s - 0.005, "withdraw", "ams"),
            ev.Event(t_fault + outage_s - 0.002, "route-change", "r-eu", "ipv4", "r_r_us_4",
                     since=t_fault + outage_s - 0.022),
            ev.Event(t_fault + outage_s - 0.001, "route-change", "r-eu", "ipv6", "r_r_us_6"),
            ev.Event(t_heal + 0.03, "announce", "ams")]
    return record


def gids(fig: Figure, prefix: str) -> list[str]:
    return [a.get_gid() for a in fig.findobj() if (a.get_gid() or "").startswith(prefix)]


def trial_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if str(ax.get_ylabel()).startswith("trial")]


def test_every_trial_is_drawn_with_every_marker() -> None:
    records = [trial(10.0 * i, 0.2 + 0.05 * i) for i in range(3)]
    fig = figure(records, "dns-hang at ams", routers=ROUTERS, site="ams")
    axes = trial_axes(fig)
    assert [ax.get_ylabel() for ax in axes] == ["trial 1", "trial 2", "trial 3"]
    for ax in axes:
        assert [t.get_text() for t in ax.get_yticklabels()] == ["c-eu", "c-eu v6", "c-us",
                                                                "c-us v6"]
        drawn = {a.get_gid(): a for a in ax.get_children() if a.get_gid()}
        for m in PANEL_MARKERS:
            assert f"marker:{m.kind}" in drawn, m.kind
        assert {"marker:route-change:c-eu", "marker:route-change:c-eu v6",
                "marker:moved:c-eu", "marker:moved:c-eu v6"} <= set(drawn)
        assert not any(g.endswith(":c-us") for g in drawn if g.startswith("marker:"))
        assert "lost:c-eu" in drawn and "lost:c-us" not in drawn
    # One time axis for every panel, anchored at the fault.
    assert len({ax.get_xlim() for ax in axes}) == 1
    assert axes[0].get_xlim()[0] < -0.9 and axes[0].get_xlim()[1] > 1.9
    second = {a.get_gid(): a for a in axes[1].get_children() if a.get_gid()}
    assert second["marker:fault"].get_xdata()[0] == 0
    assert abs(second["marker:heal"].get_xdata()[0] - 1.0) < 1e-9
    assert abs(second["marker:withdraw"].get_xdata()[0] - 0.245) < 1e-9
    window = second["window:route-change:c-eu"].get_segments()[0]
    assert abs(window[0][0] - 0.228) < 1e-9 and abs(window[1][0] - 0.248) < 1e-9
    outages = {a.get_gid(): a.get_text() for a in fig.findobj() if
               (a.get_gid() or "").startswith("outage:")}
    assert outages["outage:c-us"] == "unaffected"
    assert outages["outage:c-eu"].startswith("outage ") and "lost" in outages["outage:c-eu"]
    assert not gids(fig, "note")  # every marker recorded, no summary: nothing to say


def test_unrecorded_markers_are_left_out_and_said() -> None:
    fig = figure([trial(0.0, 0.2, events=False)], "speaker at ams", routers=ROUTERS,
                 site="ams")
    drawn = {a.get_gid() for a in trial_axes(fig)[0].get_children() if a.get_gid()}
    assert {"marker:fault", "marker:heal"} <= drawn
    assert not drawn & {"marker:health-down", "marker:withdraw", "marker:announce"}
    note = next(a for a in fig.findobj() if a.get_gid() == "note").get_text()
    assert "not recorded in these trials: health check down, withdraw sent" in note
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "fault injected" in legend and "withdraw sent" not in legend


def test_past_the_panel_limit_a_summary_and_the_worst_trials() -> None:
    outages = [0.2, 0.5, 0.1, 0.3, 0.25, 0.45, 0.15, 0.35]
    records = [trial(10.0 * i, o) for i, o in enumerate(outages)]
    assert worst_first(records)[:3] == [1, 5, 7]
    fig = figure(records, "dns-hang at ams", max_panels=4, routers=ROUTERS)
    assert [ax.get_ylabel() for ax in trial_axes(fig)] == ["trial 2", "trial 6", "trial 8"]
    bars = gids(fig, "summary-trial-")
    assert sorted(set(bars), key=lambda g: int(g.rsplit("-", 1)[1])) == [
        f"summary-trial-{i}" for i in range(1, 9)]
    note = next(a for a in fig.findobj() if a.get_gid() == "note").get_text()
    assert "8 trials" in note and "3 worst" in note


def test_timeline_writes_a_png_naming_its_rows(tmp_path: Path) -> None:
    path = timeline([trial(0.0, 0.2)], tmp_path / "t.png", "t", routers=ROUTERS)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 400
        assert image.info["Description"] == "rows: c-eu,c-eu v6,c-us,c-us v6"


def test_health_events_move_onto_the_trial_clock() -> None:
    lines = [json.dumps(e) for e in [
        {"ts": 99.0, "event": "site", "new": "down"},  # before the trial
        {"ts": 100.5, "event": "check", "check": "dns", "new": "down"},
        {"ts": 100.6, "event": "site", "old": "up", "new": "down", "reason": "dns down"},
        {"ts": 100.7, "event": "action", "action": "withdraw", "ok": True},
        {"ts": 101.0, "event": "action", "action": "announce", "ok": False},
        {"ts": 101.2, "event": "action", "action": "announce", "ok": True}]] + ["{broken"]
    found = ev.parse_health_events(lines, "ams", 100.0, 102.0, wall_minus_mono=90.0)
    assert [(round(e.t, 3), e.kind) for e in found] == [
        (10.6, "health-down"), (10.7, "withdraw"), (11.2, "announce")]
    assert found[0].to_json(10.0) == {"kind": "health-down", "where": "ams", "family": "",
                                      "detail": "dns down", "t_ms": 600.0}
