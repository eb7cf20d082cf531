"""Saturated versus broken: what the health daemon makes of a check that answered but says
the site is saturated, under each `saturation` policy (in-process, no shim, no threads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.model import load_text
from lab.model.names import node_dir
from lab.model.plan import build_plan
from lab.render import credentials
from lab.render.health import health_config
from lab.render.introspect import introspect_config
from lab.sites.health.checks import Result
from lab.sites.health.config import HealthConfig
from lab.sites.health.daemon import Daemon
from lab.sites.health.state import ANNOUNCE, DOWN, UP, WITHDRAW


def make_daemon(tmp: Path, policy: str | None) -> Daemon:
    raw = {
        "site": "site-a", "shim_socket": str(tmp / "speaker.sock"),
        "drain_file": str(tmp / "drain"), "state_file": str(tmp / "health-state.json"),
        "event_log": str(tmp / "health-events.jsonl"),
        "checks": [{"type": "tcp", "name": "introspect", "host": "127.0.0.1", "port": 9,
                    "rise": 2, "fall": 2}],
    }
    if policy is not None:
        raw["saturation"] = policy
    return Daemon(HealthConfig.model_validate(raw))


def feed(daemon: Daemon, saturated: bool | None, times: int, start: float = 0.0) -> None:
    for i in range(times):
        daemon.record("introspect", Result(True, "ok", 0.001, saturated), start + i * 0.1)


def state(tmp: Path) -> dict:
    return json.loads((tmp / "health-state.json").read_text())


def events(tmp: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp / "health-events.jsonl").read_text().splitlines()]


@pytest.fixture
def daemons() -> list[Daemon]:
    made: list[Daemon] = []
    yield made
    for d in made:
        d.events.close()


def test_absorb_is_the_default_and_keeps_a_saturated_site_announced(tmp_path, daemons) -> None:
    daemon = make_daemon(tmp_path, None)
    daemons.append(daemon)
    feed(daemon, saturated=True, times=3)
    assert daemon.site.checks["introspect"].state == UP
    assert daemon.site.desired(1.0)[0] == ANNOUNCE
    assert state(tmp_path)["saturation"] == {"policy": "absorb", "saturated": True}
    assert [e["saturated"] for e in events(tmp_path) if e["event"] == "saturation"] == [True]


def test_withdraw_policy_takes_a_saturated_site_out_and_back(tmp_path, daemons) -> None:
    daemon = make_daemon(tmp_path, "withdraw")
    daemons.append(daemon)
    feed(daemon, saturated=False, times=2)
    assert daemon.site.healthy
    feed(daemon, saturated=True, times=2, start=1.0)
    tracker = daemon.site.checks["introspect"]
    assert tracker.state == DOWN and "saturated" in tracker.reason
    assert daemon.site.desired(2.0)[0] == WITHDRAW
    assert state(tmp_path)["saturation"] == {"policy": "withdraw", "saturated": True}
    feed(daemon, saturated=False, times=2, start=3.0)
    assert daemon.site.healthy and daemon.site.desired(4.0)[0] == ANNOUNCE
    assert state(tmp_path)["saturation"] == {"policy": "withdraw", "saturated": False}


def test_a_result_that_says_nothing_keeps_the_last_word(tmp_path, daemons) -> None:
    daemon = make_daemon(tmp_path, "withdraw")
    daemons.append(daemon)
    feed(daemon, saturated=True, times=1)
    feed(daemon, saturated=None, times=3, start=1.0)  # e.g. a check without the header
    assert daemon.saturated is True
    assert daemon.site.checks["introspect"].state == UP  # only a saturated answer fails


def test_timeouts_while_saturated_give_no_verdict_within_the_grace(tmp_path, daemons) -> None:
    daemon = make_daemon(tmp_path, None)  # absorb, grace 5 s
    daemons.append(daemon)
    feed(daemon, saturated=True, times=2)
    timeout = Result(False, "timeout (active canary call)", 0.3, None)
    for i in range(5):  # slow because busy: the check stays up
        daemon.record("introspect", timeout, 1.0 + i * 0.5)
    assert daemon.site.checks["introspect"].state == UP
    # Past the grace, a service that stopped answering is broken after all: withdrawn.
    for i in range(2):
        daemon.record("introspect", timeout, 6.0 + i * 0.5)
    assert daemon.site.checks["introspect"].state == DOWN
    assert daemon.site.desired(7.0)[0] == WITHDRAW


def test_a_real_failure_while_saturated_still_counts(tmp_path, daemons) -> None:
    daemon = make_daemon(tmp_path, None)
    daemons.append(daemon)
    feed(daemon, saturated=True, times=2)
    stale = Result(False, "revoked canary answered active (stale revocation list)", 0.01, True)
    daemon.record("introspect", stale, 1.0)
    daemon.record("introspect", stale, 1.5)
    assert daemon.site.checks["introspect"].state == DOWN


def test_without_saturation_a_timeout_counts_at_once(tmp_path, daemons) -> None:
    daemon = make_daemon(tmp_path, None)
    daemons.append(daemon)
    feed(daemon, saturated=False, times=2)
    for i in range(2):
        daemon.record("introspect", Result(False, "timeout (active canary call)", 0.3, None),
                      1.0 + i * 0.5)
    assert daemon.site.checks["introspect"].state == DOWN


def test_unknown_policy_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="saturation"):
        make_daemon(tmp_path, "panic")


# --- from the topology to the daemons' configs ----------------------------------------

DEFAULT = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"
LAB_DIR = Path("/run/anycast-lab/saturation-test")


def _topology(saturation: str | None) -> Any:
    data = yaml.safe_load(DEFAULT.read_text())
    if saturation is not None:
        data.setdefault("health", {})["saturation"] = saturation
    return load_text(yaml.safe_dump(data, sort_keys=False), "<variant>")


@pytest.mark.parametrize("policy", [None, "absorb", "withdraw"])
def test_the_topology_choice_reaches_healthd_whose_check_uses_the_health_listener(
        policy: str | None) -> None:
    report = _topology(policy)
    assert report.topology is not None, report.problems
    topo = report.topology
    plan = build_plan(topo)
    site = plan.nodes["ams"]
    pki = credentials.paths(LAB_DIR)
    health = HealthConfig.model_validate(
        health_config(topo, plan, site, node_dir(LAB_DIR, "ams"), pki))
    service = introspect_config(plan, site, node_dir(LAB_DIR, "ams"), pki)
    assert health.saturation == (policy or "absorb")
    check = next(c for c in health.checks if c.type == "introspect")
    assert check.address in service["health_listen"] and check.port == service["health_port"]
    assert (check.address, check.port) not in {(a, service["port"]) for a in service["listen"]}


def test_an_unknown_saturation_policy_is_a_topology_problem() -> None:
    report = _topology("panic")
    assert report.topology is None
    assert any("health.saturation" in str(p) for p in report.problems)


def test_another_services_timeouts_count_while_this_one_is_saturated(tmp_path, daemons) -> None:
    """The introspection service keeps saying it is saturated while DNS has stopped
    answering: its load says nothing of DNS, whose timeouts take the site out at once."""
    raw = {
        "site": "site-a", "shim_socket": str(tmp_path / "speaker.sock"),
        "drain_file": str(tmp_path / "drain"), "state_file": str(tmp_path / "health-state.json"),
        "event_log": str(tmp_path / "health-events.jsonl"),
        "checks": [{"type": "tcp", "name": name, "host": "127.0.0.1", "port": 9,
                    "rise": 2, "fall": 2} for name in ("introspect", "dns")],
    }
    daemon = Daemon(HealthConfig.model_validate(raw))  # absorb
    daemons.append(daemon)
    for i in range(2):
        daemon.record("dns", Result(True, "ok", 0.001, None), i * 0.1)
    feed(daemon, saturated=True, times=2)
    assert daemon.site.healthy
    timeout = Result(False, "timeout", 0.1, None)
    for i in range(2):
        feed(daemon, saturated=True, times=1, start=1.0 + i * 0.2)
        daemon.record("dns", timeout, 1.1 + i * 0.2)
    assert daemon.site.checks["dns"].state == DOWN
    assert daemon.site.checks["introspect"].state == UP
    assert daemon.site.desired(2.0)[0] == WITHDRAW
