"""health.checker 'exabgp-healthcheck' (the anchor): the bundled healthcheck's rendered
config (defaults and tuned), what exabgp 5.0.15's own option parser makes of it, and
ExaBGP's run line. No root needed; `exabgp validate` needs the lab's tools (without them
a skip, on CI a failure: tests/prerequisites.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.model import Topology, load_text
from lab.model.errors import LabError
from lab.model.plan import AddressPlan, build_plan
from lab.model.topology import anchor_mode
from lab.render import launch
from lab.render.exabgp import (
    SPEAKER_RUN,
    exabgp_spec,
    healthcheck_args,
    parse_healthcheck,
    render_healthcheck,
)

from ..prerequisites import need_module, need_tools

exabgp_healthcheck = need_module("exabgp.application.healthcheck")

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "topologies" / "default.yaml"
LAB_DIR = Path("/run/anycast-lab/golden")
PYTHON = "/opt/venv/bin/python"
TUNED = {"interval_s": 0.1, "fast_interval_s": 0.025, "timeout_s": 1, "rise": 3, "fall": 2,
         "command_timeout_s": 0.1}


def _topology(health: dict[str, Any] | None) -> Topology:
    data = yaml.safe_load(DEFAULT.read_text())
    if health is not None:
        data["health"] = health
    report = load_text(yaml.safe_dump(data, sort_keys=False), "<anchor>")
    assert report.topology is not None, report.problems
    return report.topology


def _anchor(**hc: Any) -> Topology:
    return _topology({"checker": "exabgp-healthcheck", "exabgp_healthcheck": hc})


def _lines(config: str) -> list[str]:
    return [ln for ln in config.splitlines() if ln.strip() and not ln.startswith("#")]


def _site(plan: AddressPlan, name: str = "ams"):
    return plan.nodes[name]


def test_model_defaults_are_the_anchors_own():
    """Our defaults for the block equal exabgp healthcheck's argparse defaults."""
    parser = argparse.ArgumentParser()
    exabgp_healthcheck.setargs(parser)
    theirs = parser.parse_args([])
    hc = _topology(None).health.exabgp_healthcheck
    assert (hc.interval_s, hc.fast_interval_s, hc.timeout_s, hc.rise, hc.fall) == (
        theirs.interval, theirs.fast, theirs.timeout, theirs.rise, theirs.fall) == (
        5, 1, 5, 3, 3)
    assert hc.command_timeout_s is None
    assert hc.withdraw_on_down is True  # not theirs (MED 1000): clients would never move
    assert theirs.withdraw_on_down is False
    assert _topology(None).health.checker == "healthd"


def test_rendered_defaults():
    topo = _anchor()
    plan = build_plan(topo)
    site = _site(plan)
    unicast = str(site.interfaces[0].v4.ip)
    config = render_healthcheck(topo, plan, site)
    assert _lines(config) == [
        "name = ams",
        "no-syslog",
        "no-ip-setup",
        "interval = 5.0",
        "fast-interval = 1.0",
        "timeout = 5",
        "rise = 3",
        "fall = 3",
        "ip = 203.0.113.53/32",
        f"next-hop = {unicast}",
        "withdraw-on-down",
        f"command = dig @{unicast} health.anycast.lab A +time=1 +tries=1 +short",
    ]
    opts = parse_healthcheck(config)
    assert (opts.interval, opts.fast, opts.timeout, opts.rise, opts.fall) == (5.0, 1.0, 5, 3, 3)
    assert opts.no_syslog and not opts.ip_setup and opts.withdraw_on_down
    assert [str(ip) for ip in opts.ips] == ["203.0.113.53/32"]  # IPv4 only
    assert str(opts.next_hop) == unicast
    assert opts.command == f"dig @{unicast} health.anycast.lab A +time=1 +tries=1 +short"
    assert not opts.debounce  # its default: re-announce on every check


def test_rendered_tuned_wraps_the_command_in_timeout():
    topo = _anchor(**TUNED)
    plan = build_plan(topo)
    site = _site(plan, "nyc")
    unicast = str(site.interfaces[0].v4.ip)
    config = render_healthcheck(topo, plan, site)
    assert "name = nyc" in _lines(config)
    opts = parse_healthcheck(config)
    assert (opts.interval, opts.fast, opts.timeout, opts.rise, opts.fall) == (
        0.1, 0.025, 1, 3, 2)
    # '=' inside the command survives: the file is split at the first '=' only.
    assert opts.command == (f"timeout 0.1 dig @{unicast} health.anycast.lab A "
                            "+time=1 +tries=1 +short")
    assert str(opts.next_hop) == unicast


def test_without_withdraw_on_down_the_flag_is_absent():
    topo = _anchor(withdraw_on_down=False)
    plan = build_plan(topo)
    config = render_healthcheck(topo, plan, _site(plan))
    assert "withdraw-on-down" not in _lines(config)
    assert parse_healthcheck(config).withdraw_on_down is False


def test_config_file_reads_like_its_command_line():
    assert healthcheck_args("# c\nno-syslog\n\ncommand = a=b c\nrise = 2\n") == [
        "--no-syslog", "--command", "a=b c", "--rise", "2"]


def test_parse_refuses_an_unknown_option():
    with pytest.raises(LabError, match="unrecognized arguments"):
        parse_healthcheck("no-such-option\n")


def test_exabgp_run_line_is_the_bundled_healthcheck(tmp_path: Path):
    topo = _anchor(**TUNED)
    assert anchor_mode(topo)
    plan = build_plan(topo)
    d = LAB_DIR / "nodes" / "ams"
    spec = exabgp_spec(topo, plan, _site(plan), d, "exabgp", python=PYTHON)
    run = [ln.strip() for ln in spec.config.splitlines() if ln.strip().startswith("run ")]
    assert run == [f"run {PYTHON} -m exabgp healthcheck --config {d}/healthcheck.conf;"]
    assert "lab.sites.speaker.api" not in spec.config
    assert " " not in str(d)  # ExaBGP splits the run line on whitespace, no quoting
    assert spec.healthcheck_path == d / "healthcheck.conf"
    assert spec.healthcheck_config == render_healthcheck(topo, plan, _site(plan))


def test_healthd_mode_keeps_the_speaker_shim():
    topo = _topology(None)
    assert not anchor_mode(topo)
    plan = build_plan(topo)
    spec = exabgp_spec(topo, plan, _site(plan), LAB_DIR / "nodes" / "ams", "exabgp",
                       python=PYTHON)
    assert f"run {PYTHON} -I -S {SPEAKER_RUN} " in spec.config
    assert "healthcheck" not in spec.config
    assert spec.healthcheck_config is None


def test_static_lab_ignores_the_checker():
    topo = _topology({"enabled": False, "checker": "exabgp-healthcheck"})
    assert not anchor_mode(topo)


def test_unknown_checker_is_refused():
    data = yaml.safe_load(DEFAULT.read_text())
    data["health"] = {"checker": "keepalived"}
    report = load_text(yaml.safe_dump(data), "<bad>")
    assert not report.ok
    assert any("health.checker" in str(p.path) for p in report.problems)


ANCHOR_TOOLS = [*launch.TOOLS, *launch.ANCHOR_TOOLS]


def test_anchor_lab_starts_no_healthd_and_exabgp_validates(tmp_path: Path):
    need_tools(ANCHOR_TOOLS)  # a skip here, a failure on CI
    topo = _anchor(**TUNED)
    specs = launch.lab_specs(topo, build_plan(topo), tmp_path)
    names = [s.name for s in specs]
    assert "healthd" not in names
    assert names.count("exabgp") == 3
    exabgp = [s for s in specs if s.name == "exabgp"]
    for spec in exabgp:
        spec.write()
        assert (spec.config_path.parent / "healthcheck.conf").read_text() == \
            spec.healthcheck_config
        assert sys.executable in spec.config
    exabgp[0].check_many(exabgp[1:])  # parser check + `exabgp validate`, as `up` does
