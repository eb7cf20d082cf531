"""Last site standing: the health state machine under keep-last (pure), what the speaker
reads from ExaBGP's received-update lines, and what the topology's policy renders into the
routers', speakers' and health daemons' configs."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from lab.model import load_text
from lab.model.plan import build_plan
from lab.render.bird import render_bird
from lab.render.credentials import paths
from lab.render.exabgp import api_argv, render_exabgp
from lab.render.health import health_config
from lab.sites.health.state import ANNOUNCE, GSHUT, WITHDRAW, CheckTracker, Site
from lab.sites.speaker.api import Received

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"


def announced_site(**kw) -> tuple[Site, float]:
    dns = CheckTracker("dns", rise=1, fall=1)
    site = Site([dns], hold_down=0.0, keep_last=True, **kw)
    site.observe("dns", True, "ok", 0.0)
    site.applied(site.next_action(0.0).action, True, 0.0)
    assert site.route == "announced"
    return site, 0.0


def fail(site: Site, now: float) -> None:
    site.observe("dns", False, "refused", now)


def test_a_failing_site_withdraws_while_a_healthy_site_is_seen() -> None:
    site, _ = announced_site()
    site.set_others(healthy=True, any_route=True)
    fail(site, 1.0)
    assert site.next_action(1.0).action == WITHDRAW


def test_the_last_site_stays_announced_with_graceful_shutdown() -> None:
    site, _ = announced_site()
    site.set_others(healthy=False, any_route=False)
    fail(site, 1.0)
    decision = site.next_action(1.0)
    assert decision.action == GSHUT and decision.reason.startswith("last site standing")
    site.applied(GSHUT, True, 1.0)
    assert site.next_action(2.0).action is None and site.last_since == 1.0
    # Only other last-resort (GRACEFUL_SHUTDOWN) routes: still no healthy site, stay.
    site.set_others(healthy=False, any_route=True)
    assert site.next_action(3.0).action is None
    # A healthy site is back somewhere: withdraw.
    site.set_others(healthy=True, any_route=True)
    assert site.next_action(4.0).action == WITHDRAW


def test_a_withdrawn_failing_site_comes_back_only_when_it_sees_no_route_at_all() -> None:
    site, _ = announced_site()
    site.set_others(healthy=True, any_route=True)
    fail(site, 1.0)
    site.applied(site.next_action(1.0).action, True, 1.0)
    assert site.route == "withdrawn"
    site.set_others(healthy=False, any_route=True)  # another site kept as the last one
    assert site.next_action(2.0).action is None
    site.set_others(healthy=False, any_route=False)  # every site gone: come back
    assert site.next_action(3.0).action == GSHUT


def test_keeping_the_last_site_is_bounded() -> None:
    site, _ = announced_site(last_site_max=10.0)
    site.set_others(healthy=False, any_route=False)
    fail(site, 1.0)
    site.applied(site.next_action(1.0).action, True, 1.0)
    assert site.next_action(10.9).action is None
    assert site.next_action(10.9).wake_at == 11.0
    decision = site.next_action(11.0)
    assert decision.action == WITHDRAW and "the most allowed" in decision.reason
    site.applied(WITHDRAW, True, 11.0)
    assert site.next_action(20.0).action is None  # stays withdrawn while it fails
    site.observe("dns", True, "ok", 21.0)
    assert site.next_action(21.0).action == ANNOUNCE
    assert site.last_since is None and not site.last_expired


def test_nothing_is_kept_without_the_policy_or_before_routes_are_known() -> None:
    dns = CheckTracker("dns", rise=1, fall=1)
    plain = Site([dns], hold_down=0.0)
    plain.observe("dns", True, "ok", 0.0)
    plain.applied(ANNOUNCE, True, 0.0)
    plain.set_others(healthy=False, any_route=False)
    plain.observe("dns", False, "refused", 1.0)
    assert plain.next_action(1.0).action == WITHDRAW
    site, _ = announced_site()
    fail(site, 1.0)  # routes never asked
    assert site.next_action(1.0).action == WITHDRAW


def test_a_starting_site_never_announces_as_the_last_one() -> None:
    site = Site([CheckTracker("dns", rise=3, fall=2)], keep_last=True)
    site.set_others(healthy=False, any_route=False)
    assert site.next_action(0.0).action is None and site.route == "withdrawn"


def test_a_site_failing_before_it_was_ever_healthy_is_not_kept_as_the_last_one() -> None:
    """At start, BGP not converged (no other route seen yet), a check that fails before it
    was ever up must not put a broken site on the air as the last one standing."""
    site = Site([CheckTracker("dns", rise=3, fall=2)], hold_down=0.0, keep_last=True)
    site.set_others(healthy=False, any_route=False)
    site.observe("dns", False, "refused", 0.0)
    site.observe("dns", False, "refused", 0.1)
    assert site.health == "down"
    assert site.next_action(0.1).action is None and site.route == "withdrawn"


def test_a_drained_site_is_not_kept_as_the_last_one() -> None:
    """Drained and withdrawn, then failing with no other route seen: the operator took
    it out, and it stays out (as it would while healthy)."""
    site, _ = announced_site()
    site.set_drained(True, 1.0)
    site.applied(site.next_action(1.0).action, True, 1.0)  # GRACEFUL_SHUTDOWN first
    site.applied(site.next_action(4.0).action, True, 4.0)  # then withdrawn
    assert site.route == "withdrawn"
    site.set_others(healthy=False, any_route=False)
    fail(site, 5.0)
    decision = site.next_action(5.0)
    assert decision.action is None and site.route == "withdrawn", decision


def test_received_routes_from_exabgp_text_lines() -> None:
    r = Received()
    peer = "neighbor 100.64.0.6"
    assert r.feed(f"{peer} up")
    assert r.feed(f"{peer} receive update start")
    assert r.feed(f"{peer} receive update announced 203.0.113.53/32 next-hop 100.64.0.6 "
                  "origin igp as-path ( 65010 65020 65100 )")
    assert r.feed(f"{peer} receive update announced 2001:db8:53::53/128 next-hop fd00::1 "
                  "origin igp as-path [ 65010 65100 ] community 65535:0")
    assert r.feed(f"{peer} receive update end")
    assert r.session == "up"
    assert r.routes == {
        "203.0.113.53/32": {"gshut": False, "as_path": [65010, 65020, 65100]},
        "2001:db8:53::53/128": {"gshut": True, "as_path": [65010, 65100]}}
    r.feed(f"{peer} receive update withdrawn 203.0.113.53/32")
    assert list(r.routes) == ["2001:db8:53::53/128"]
    r.feed(f"{peer} down - peer reset")
    assert r.routes == {} and r.session == "down"
    assert not r.feed("done") and not r.feed("error")  # acks are not ours


def test_a_new_api_process_knows_no_session_until_exabgp_says() -> None:
    """ExaBGP tells a respawned API process neither of a session already up nor of the
    routes received before: its empty list says nothing, and is reported as unknown."""
    r = Received()
    assert r.report()["session"] == "unknown" and r.routes == {}
    r.feed("neighbor 100.64.0.6 up")
    assert r.report()["session"] == "up"


def test_graceful_shutdown_is_a_whole_community_not_part_of_a_large_one() -> None:
    r = Received()
    r.feed("neighbor 100.64.0.6 up")
    r.feed("neighbor 100.64.0.6 receive update announced 203.0.113.53/32 next-hop 100.64.0.6 "
           "origin igp as-path [ 65010 65100 ] large-community [ 65535:0:1 ]")
    assert r.routes["203.0.113.53/32"]["gshut"] is False


def test_exabgp_shutdown_line_with_its_pids_closes_the_channel() -> None:
    from lab.sites.speaker.api import ExaBGPChannel

    rfd, wfd = os.pipe()
    out_r, out_w = os.pipe()
    try:
        channel = ExaBGPChannel(rfd, out_w)
        os.write(wfd, b"shutdown 4242 4241\n")
        channel._fill()
        assert channel.closed
    finally:
        for fd in (rfd, wfd, out_r, out_w):
            os.close(fd)


def policy_topology(policy: str):
    data = yaml.safe_load(DEFAULT.read_text())
    data["health"] = {"last_site": policy}
    report = load_text(yaml.safe_dump(data))
    assert report.ok, [str(p) for p in report.problems]
    return report.topology


def test_backup_route_renders_covering_prefixes(tmp_path: Path) -> None:
    topo = policy_topology("backup-route")
    plan = build_plan(topo)
    conf = render_bird(topo, plan, plan.nodes["r-eu"])
    assert "define BACKUP4 = [ 203.0.113.0/24 ];" in conf
    assert "define BACKUP6 = [ 2001:db8:53::/48 ];" in conf
    argv = api_argv(plan, plan.nodes["ams"], tmp_path, "py", 300, backup=True)
    i = argv.index("--backup-route")
    assert argv[i + 1] == "203.0.113.0/24"
    assert argv.count("--backup-route") == 2
    assert "BACKUP4" not in render_bird(policy_topology("withdraw"), plan, plan.nodes["r-eu"])


def test_keep_last_renders_routes_to_sites_and_receiving_speakers(tmp_path: Path) -> None:
    topo = policy_topology("keep-last")
    plan = build_plan(topo)
    conf = render_bird(topo, plan, plan.nodes["r-eu"])
    assert "ipv4 table master4 sorted;" in conf
    site_session = conf.split("protocol bgp site_ams")[1]
    assert "secondary;" in site_session and "export none" not in site_session
    exa = render_exabgp(topo, plan, plan.nodes["ams"], ["py"])
    assert "receive {" in exa and "neighbor-changes;" in exa
    cfg = health_config(topo, plan, plan.nodes["ams"], tmp_path, paths(tmp_path))
    assert (cfg["last_site"], cfg["last_site_max_ms"]) == ("keep-last", 300_000)
    plain = policy_topology("withdraw")
    assert "receive {" not in render_exabgp(plain, plan, plan.nodes["ams"], ["py"])


def test_policies_need_healthd_and_pools_outside_the_backup_prefix() -> None:
    data = yaml.safe_load(DEFAULT.read_text())
    data["health"] = {"last_site": "keep-last", "enabled": False}
    report = load_text(yaml.safe_dump(data))
    assert [p.path for p in report.problems] == ["health.last_site"]
    data["health"] = {"last_site": "backup-route"}
    data["pools"] = {"links4": "203.0.113.0/25"}
    data["anycast"] = {"ipv4": "203.0.113.253/32"}
    report = load_text(yaml.safe_dump(data))
    assert any(p.path == "pools.links4" and "backup route" in p.message
               for p in report.problems), [str(p) for p in report.problems]


class _Shim:
    """The health daemon's link to the speaker, answering `routes` as given."""

    connected = True

    def __init__(self, reply: dict) -> None:
        self.reply = reply

    def command(self, line: str, timeout_s: float) -> dict:
        assert line == "routes"
        return self.reply


def test_routes_of_a_session_not_seen_up_leave_the_other_sites_unknown(tmp_path) -> None:
    from lab.sites.health.config import HealthConfig
    from lab.sites.health.daemon import Daemon

    daemon = Daemon(HealthConfig.model_validate({
        "site": "site-a", "shim_socket": str(tmp_path / "speaker.sock"),
        "drain_file": str(tmp_path / "drain"), "state_file": str(tmp_path / "state.json"),
        "event_log": str(tmp_path / "events.jsonl"), "last_site": "keep-last",
        "checks": [{"type": "tcp", "name": "dns", "host": "127.0.0.1", "port": 9}]}))
    try:
        daemon.link = _Shim({"ok": True, "routes": {}, "session": "up"})  # type: ignore
        daemon.poll_routes(1.0)
        assert daemon.site.others == (False, False)  # seen: nobody else
        daemon.link = _Shim({"ok": True, "routes": {}, "session": "unknown"})  # type: ignore
        daemon.poll_routes(2.0)
        assert daemon.site.others is None  # a respawned shim's empty list says nothing
    finally:
        daemon.events.close()
