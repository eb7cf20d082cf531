"""BFD in the topology (lab-wide settings, a site's override field by field, the check
against the hold time), in the routers' BIRD config, in each site's responder config, and
the parser of BIRD's `show bfd sessions`, its `Since` as a time, and when a heal counts
BFD as Up again."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lab.host.birdctl import BfdSession, parse_bfd_sessions, since_epoch
from lab.model import load_text, names
from lab.model.plan import build_plan
from lab.model.topology import bfd_sites, site_bfd
from lab.render.bfd import bfd_spec, fresh_up, render_bfd
from lab.render.bird import render_bird
from lab.render.launch import lab_specs

from ..prerequisites import need_tools

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"


def topology(bgp_bfd: dict | None = None, **site_bfd_of: dict) -> str:
    data = yaml.safe_load(DEFAULT.read_text())
    if bgp_bfd is not None:
        data["bgp"] = {"bfd": bgp_bfd}
    for site, bfd in site_bfd_of.items():
        data["sites"][site]["bfd"] = bfd
    return yaml.safe_dump(data, sort_keys=False)


def load(text: str):
    report = load_text(text)
    assert report.ok, [str(p) for p in report.problems]
    return report.topology


def test_off_by_default_and_nothing_rendered() -> None:
    topo = load(DEFAULT.read_text())
    assert not topo.bgp.bfd.enabled and bfd_sites(topo) == []
    plan = build_plan(topo)
    conf = render_bird(topo, plan, plan.nodes["r-eu"])
    assert "bfd" not in conf


def test_a_site_overrides_field_by_field() -> None:
    topo = load(topology({"enabled": True, "interval_ms": 200, "multiplier": 4},
                         sin={"enabled": False}, nyc={"interval_ms": 50}))
    assert bfd_sites(topo) == ["ams", "nyc"]
    nyc = site_bfd(topo, "nyc")
    assert (nyc.enabled, nyc.interval_ms, nyc.multiplier) == (True, 50, 4)
    ams = site_bfd(topo, "ams")
    assert (ams.interval_ms, ams.multiplier) == (200, 4)


def test_a_site_may_turn_bfd_on_alone() -> None:
    topo = load(topology(None, ams={"enabled": True}))
    assert bfd_sites(topo) == ["ams"]
    assert site_bfd(topo, "ams").interval_ms == 100


def test_router_config_runs_bfd_on_its_site_session_only() -> None:
    topo = load(topology({"enabled": True, "interval_ms": 100, "multiplier": 3}))
    plan = build_plan(topo)
    conf = render_bird(topo, plan, plan.nodes["r-eu"])
    assert f"protocol bfd {names.BFD_PROTOCOL} {{" in conf
    assert 'interface "ams" { interval 100 ms; multiplier 3; };' in conf
    site_session = conf.split(f"protocol bgp {names.site_protocol('ams')}")[1]
    assert "bfd on;" in site_session
    router_sessions = conf.split(f"protocol bgp {names.site_protocol('ams')}")[0]
    assert "bfd on;" not in router_sessions


def test_responder_config_answers_its_router() -> None:
    topo = load(topology({"enabled": True, "interval_ms": 150, "multiplier": 5}))
    plan = build_plan(topo)
    site = plan.nodes["ams"]
    conf = render_bfd(topo, plan, site)
    link = site.interfaces[0]
    assert f'neighbor {site.gateway4} dev "{link.ifname}" local {link.v4.ip};' in conf
    assert "interval 150 ms; multiplier 5;" in conf
    assert "protocol bgp" not in conf and "protocol kernel" not in conf


def test_responder_starts_before_the_speaker_only_where_bfd_is_on(tmp_path: Path) -> None:
    topo = load(topology({"enabled": True}, sin={"enabled": False}))
    labels = [s.label for s in lab_specs(topo, build_plan(topo), tmp_path)]
    assert f"{names.BFD_DAEMON}@sin" not in labels
    for site in ("ams", "nyc"):
        assert labels.index(f"{names.BFD_DAEMON}@{site}") < labels.index(f"exabgp@{site}")


@pytest.mark.parametrize(("bfd", "refused"), [
    ({"enabled": True, "interval_ms": 1000, "multiplier": 3}, True),   # 3000 ms = hold time
    ({"enabled": True, "interval_ms": 999, "multiplier": 3}, False),
    ({"enabled": False, "interval_ms": 1000, "multiplier": 3}, False),
])
def test_detection_must_beat_the_hold_time(bfd: dict, refused: bool) -> None:
    report = load_text(topology(bfd))
    found = [p for p in report.problems if p.path == "bgp.bfd"]
    assert bool(found) == refused, [str(p) for p in report.problems]
    if refused:
        assert "hold time" in found[0].message and found[0].line is not None


def test_site_override_is_checked_too() -> None:
    report = load_text(topology({"enabled": True}, ams={"multiplier": 40}))
    assert [p.path for p in report.problems] == ["sites.ams.bfd"]


@pytest.mark.parametrize("bad", [{"interval_ms": 5}, {"multiplier": 0}, {"enabled": "yes"},
                                 {"interval": 100}])
def test_bad_values_are_refused(bad: dict) -> None:
    report = load_text(topology({"enabled": True, **bad}))
    assert not report.ok
    assert all(p.path.startswith("bgp.bfd") for p in report.problems)


def test_unknown_key_lists_the_allowed_ones() -> None:
    report = load_text(topology(None, ams={"interval": 100}))
    assert "allowed here: enabled, interval_ms, multiplier" in report.problems[0].message


SHOW_BFD = """BIRD 2.0.12 ready.
bfd_sites:
IP address                Interface  State      Since         Interval  Timeout
100.64.0.3                west       Up         20:00:05.666    0.100    0.300
100.64.0.7                east       Down       20:00:13.753    1.000    0.000
fd00::1                   x          Init       2026-12-01 20:00:13    1.000    0.000
"""


def test_parse_bfd_sessions() -> None:
    sessions = parse_bfd_sessions(SHOW_BFD)
    assert [(s.protocol, s.address, s.interface, s.state) for s in sessions] == [
        ("bfd_sites", "100.64.0.3", "west", "Up"), ("bfd_sites", "100.64.0.7", "east", "Down"),
        ("bfd_sites", "fd00::1", "x", "Init")]
    assert sessions[0].since == "20:00:05.666"
    assert (sessions[0].interval_s, sessions[0].timeout_s) == (0.1, 0.3)
    assert sessions[2].since == "2026-12-01 20:00:13"
    assert parse_bfd_sessions("BIRD 2.0.12 ready.\nbfd_sites:\nIP address  Interface\n") == []


def test_both_configs_pass_birds_own_check(tmp_path: Path) -> None:
    """`bird -p` accepts the rendered router and responder configs (without BIRD: a skip,
    on CI a failure)."""
    bird = need_tools(["bird"])["bird"]
    topo = load(topology({"enabled": True}))
    plan = build_plan(topo)
    router = tmp_path / "router.conf"
    router.write_text(render_bird(topo, plan, plan.nodes["r-eu"]))
    spec = bfd_spec(topo, plan, plan.nodes["ams"], tmp_path)
    spec.write()
    for path in (router, spec.config_path):
        result = subprocess.run([bird, "-p", "-c", str(path)], capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, result.stderr


def test_status_notes_bgp_running_without_bfd() -> None:
    from lab.observe.status import _bfd_note

    def entry(bfd_state: str, session: str = "Established") -> dict:
        return {"session": session, "bfd": {"state": bfd_state, "responder": "frozen"}}

    assert "hold timer only" in _bfd_note("ams", entry("Down"))
    assert _bfd_note("ams", entry("Up")) is None
    assert _bfd_note("ams", entry("Down", session="Active")) is None
    assert _bfd_note("ams", {"session": "Established", "bfd": None}) is None


def test_router_sessions_run_bfd_only_with_routers_on() -> None:
    off = load(topology({"enabled": True}))
    assert not off.bgp.bfd.routers
    conf = render_bird(off, build_plan(off), build_plan(off).nodes["r-eu"])
    assert 'interface "r-us" {' not in conf
    on = load(topology({"enabled": False, "routers": True, "interval_ms": 50,
                        "multiplier": 4}))
    plan = build_plan(on)
    conf = render_bird(on, plan, plan.nodes["r-eu"])
    bfd_block = conf.split(f"protocol bfd {names.BFD_PROTOCOL} {{", 1)[1].split("}\n", 1)[0]
    for peer in ("r-us", "r-ap"):
        assert f'interface "{peer}" {{ interval 50 ms; multiplier 4; }};' in bfd_block
        for family in (4, 6):
            session = conf.split(f"protocol bgp {names.router_protocol(peer, family)} ", 1)[1]
            assert "bfd on;" in session.split("\n}", 1)[0]
    # Sites keep their own switch: no responder session asked for.
    site_session = conf.split(f"protocol bgp {names.site_protocol('ams')} ", 1)[1]
    assert "bfd on;" not in site_session.split("\n}", 1)[0]
    assert 'interface "ams" {' not in bfd_block


def test_router_bfd_detection_must_beat_the_hold_time_too() -> None:
    report = load_text(topology({"routers": True, "interval_ms": 1000, "multiplier": 3}))
    assert [p.path for p in report.problems] == ["bgp.bfd"]


def test_router_config_with_router_bfd_passes_birds_own_check(tmp_path: Path) -> None:
    bird = need_tools(["bird"])["bird"]
    topo = load(topology({"enabled": True, "routers": True}))
    plan = build_plan(topo)
    path = tmp_path / "router.conf"
    path.write_text(render_bird(topo, plan, plan.nodes["r-us"]))
    result = subprocess.run([bird, "-p", "-c", str(path)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


NOW = time.mktime((2026, 12, 1, 23, 0, 1, 0, 0, -1)) + 0.5  # 23:00:01.5 local time


@pytest.mark.parametrize(("since", "expected"), [
    ("23:00:00.400", NOW - 1.1),
    ("23:00:02.000", NOW + 0.5),         # within the clock slack: today
    ("23:30:00.000", NOW - 86400 + 1798.5),  # later than now: yesterday's
    ("2026-12-01 20:00:13", time.mktime((2026, 12, 1, 20, 0, 13, 0, 0, -1))),
    ("2026-11-30", time.mktime((2026, 11, 30, 0, 0, 0, 0, 0, -1))),
    ("", None), ("soon", None),
])
def test_bird_since_as_unix_time(since: str, expected: float | None) -> None:
    got = since_epoch(since, NOW)
    assert (got is None) if expected is None else got == pytest.approx(expected, abs=1e-6)


def _session(state: str, since: str, timeout_s: float = 0.3) -> BfdSession:
    return BfdSession("bfd_peers", "100.64.0.6", "r-eu", state, since, 0.1, timeout_s)


def test_a_heal_waits_for_an_up_entered_after_it() -> None:
    heal = time.mktime((2026, 12, 1, 23, 0, 0, 0, 0, -1)) + 0.5  # 23:00:00.500
    # A responder continued after a freeze still says Up since before the fault:
    stale = fresh_up(_session("Up", "22:59:44.584"), heal, heal + 0.01)
    assert not stale.ok and "from before the heal" in stale.detail
    assert not fresh_up(_session("Down", "23:00:00.510"), heal, heal + 0.02).ok
    assert fresh_up(_session("Up", "23:00:00.530"), heal, heal + 0.05).ok
    # An Up that never went down (a freeze shorter than the detection time) counts once
    # it has outlived the heal by a while.
    assert fresh_up(_session("Up", "22:59:44.584"), heal, heal + 1.5).ok
