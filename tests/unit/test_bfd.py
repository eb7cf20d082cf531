"""BFD in the topology (lab-wide settings, a site's override field by field, the check
against the hold time), in the routers' BIRD config, in each site's responder config, and
the parser of BIRD's `show bfd sessions`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from lab.host.birdctl import parse_bfd_sessions
from lab.model import load_text, names
from lab.model.plan import build_plan
from lab.model.topology import bfd_sites, site_bfd
from lab.render.bfd import bfd_spec, render_bfd
from lab.render.bird import render_bird
from lab.render.launch import lab_specs

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
    """`bird -p` accepts the rendered router and responder configs (skipped without BIRD)."""
    import shutil

    bird = shutil.which("bird")
    if bird is None:
        pytest.skip("bird is not installed")
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
