"""`status` explains: a site's reason from the health daemon's state file, whether the
daemon runs, the faults in force and what the router holds; a client on its declared
failover site while its expected site is unavailable is as expected."""

from __future__ import annotations

from typing import Any

import pytest

from lab.model.topology import Topology
from lab.observe import reasons
from lab.observe.reasons import FROZEN, GONE, RUNNING, SiteFacts
from lab.observe.routing import wrong_answers
from lab.shared.dnsid import Identity

NOW = 1_764_590_000.0  # an epoch; instants below are relative to it
BOTH = {"v4": True, "v6": True}
NONE = {"v4": False, "v6": False}


def at(offset: float) -> str:
    return reasons.iso(NOW + offset)  # type: ignore[return-value]


def state(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "updated": at(-0.5), "health": "up", "health_reason": "every required check is up",
        "drained": False, "drained_since": None, "route": "announced", "decision": "healthy",
        "checks": {"dns": {"state": "up", "since": at(-60), "reason": "3 consecutive successes"},
                   "introspect": {"state": "up", "since": at(-60), "reason": "ok"}},
    }
    doc.update(over)
    return doc


def facts(**over: Any) -> SiteFacts:
    base: dict[str, Any] = dict(name="ams", router="r-eu", mode="healthd", session="Established",
                                session_info="Established", held=BOTH, now=NOW, state=state(),
                                healthd=RUNNING, watchdog_ms=300)
    base.update(over)
    return SiteFacts(**base)


def test_healthy_site_is_announced_healthy():
    assert reasons.site_reason(facts()) == "announced: healthy"


def test_a_down_check_names_the_check_its_time_and_its_failures():
    down = state(health="down", route="withdrawn", checks={
        "dns": {"state": "down", "since": "2026-12-01T12:01:03.120Z",
                "reason": "timeout (2 consecutive failures)"},
        "introspect": {"state": "up", "since": at(-60), "reason": "ok"}})
    assert reasons.site_reason(facts(state=down, held=NONE)) == \
        "withdrawn: dns check down since 12:01:03 (timeout x2)"


def test_a_frozen_health_daemon_is_the_watchdog_with_its_silence():
    f = facts(healthd=FROZEN, held=NONE, state=state(updated=at(-5)),
              faults=[{"site": "ams", "fault": "healthd-hang", "t": NOW - 1.2}])
    assert reasons.site_reason(f) == "withdrawn: watchdog — health daemon frozen, silent 1.2 s"
    assert reasons.state_stale(f) is True


def test_a_dead_health_daemon_without_a_fault_counts_silence_from_its_last_write():
    f = facts(healthd=GONE, held=NONE, state=state(updated=at(-3.4)))
    assert reasons.site_reason(f) == "withdrawn: watchdog — health daemon gone, silent 3.4 s"


def test_an_old_state_file_of_a_running_daemon_is_not_stale():
    """The daemon writes its file only on a change: age alone says nothing."""
    f = facts(state=state(updated=at(-600)))
    assert reasons.state_stale(f) is False
    assert reasons.site_reason(f) == "announced: healthy"


def test_a_freshly_frozen_daemon_is_flagged_frozen_but_not_yet_stale():
    f = facts(healthd=FROZEN, state=state(updated=at(-0.1)))
    assert reasons.state_stale(f) is False
    assert reasons.site_reason(f).startswith("announced, but health daemon frozen")


def test_a_session_not_established_comes_first():
    f = facts(session="Connect", session_info="Socket: Connection timed out", held=NONE)
    assert reasons.site_reason(f) == "withdrawn: session Connect: Socket: Connection timed out"


def test_the_session_state_is_not_repeated_from_birds_info_column():
    f = facts(session="Connect", session_info="Connect       BGP Error: Hold timer expired",
              held=NONE)
    assert reasons.site_reason(f) == "withdrawn: session Connect: BGP Error: Hold timer expired"


def test_a_lost_session_names_the_fault_in_force_and_how_long_ago():
    f = facts(session="Connect", session_info="Connect", held=NONE,
              faults=[{"site": "ams", "fault": "blackhole", "t": NOW - 2.1}])
    assert reasons.site_reason(f) == \
        f"withdrawn: session Connect; blackhole since {reasons.clock(NOW - 2.1)} (2.1 s)"


def test_drained_and_draining():
    drained = state(drained=True, drained_since="2026-12-01T09:15:00.000Z", route="withdrawn")
    assert reasons.site_reason(facts(state=drained, held=NONE)) == "drained since 09:15:00"
    assert reasons.site_reason(facts(state=drained)).startswith("draining")


def test_router_without_the_route_while_the_daemon_announces():
    assert reasons.site_reason(facts(held=NONE)) == \
        "withdrawn: the router holds no route from ams (health daemon: healthy)"


@pytest.mark.parametrize(("mode", "said"), [("static", "announced (static)"),
                                            ("exabgp-healthcheck",
                                             "announced (ExaBGP healthcheck)")])
def test_modes_without_the_health_daemon(mode, said):
    assert reasons.site_reason(facts(mode=mode, state=None, healthd=None)) == said


def test_short_failure():
    assert reasons.short_failure("refused (3 consecutive failures)") == "refused x3"
    assert reasons.short_failure("refused") == "refused"


@pytest.mark.parametrize(("got", "unavailable", "verdict"), [
    ("ams", set(), "expected"),
    ("nyc", {"ams"}, "failover"),
    ("nyc", set(), False),          # the expected site is up: the failover site is wrong
    ("sin", {"ams"}, False),        # not the declared failover site
    (None, {"ams"}, False),
])
def test_answer_verdict(got, unavailable, verdict):
    assert reasons.answer_verdict(got, "ams", "nyc", unavailable) == verdict


def test_answer_verdict_with_site_lists():
    assert reasons.answer_verdict("a2", ["a1", "a2"], None, set()) == "expected"
    assert reasons.answer_verdict("c1", ["a1", "a2"], ["c1"], {"a1"}) is False
    assert reasons.answer_verdict("c1", ["a1", "a2"], ["c1"], {"a1", "a2"}) == "failover"


def test_client_verdict():
    assert reasons.client_verdict(["expected", "expected"]) == "expected"
    assert reasons.client_verdict(["expected", "failover"]) == "failover"
    assert reasons.client_verdict(["failover", False]) is False


def _topo() -> Topology:
    return Topology.model_validate({
        "name": "t", "anycast": {"ipv4": "203.0.113.53/32", "ipv6": "2001:db8:53::53/128"},
        "routers": {"r1": {"asn": 65001}, "r2": {"asn": 65002}},
        "sites": {"ams": {"router": "r1", "asn": 65100}, "nyc": {"router": "r2", "asn": 65100}},
        "clients": {"c1": {"router": "r1", "expect": "ams", "failover": "nyc"}},
        "links": [{"endpoints": ["r1", "r2"]}]})


def test_wrong_answers_excuses_failover_only_when_told_the_expected_site_is_down():
    topo = _topo()
    on_nyc = {"c1": {"v4": Identity("nyc", 1.0), "v6": Identity("nyc", 1.0)}}
    assert [w.family for w in wrong_answers(topo, on_nyc)] == ["v4", "v6"]  # as `up` asks
    assert wrong_answers(topo, on_nyc, unavailable={"v4": {"ams"}, "v6": {"ams"}}) == []
    assert [w.family for w in wrong_answers(topo, on_nyc,
                                            unavailable={"v4": {"ams"}, "v6": set()})] == ["v6"]


def test_judge_client_over_an_ecmp_distribution():
    from lab.observe.status import judge_client

    client = _topo().clients["c1"].model_copy(update={"expect": ["ams", "nyc"],
                                                       "failover": None})
    answers = {"v4": Identity("ams", 1.0), "v6": Identity("nyc", 1.0)}
    spread = {"v4": {"ams": 9, "nyc": 7}, "v6": {"nyc": 16}}
    both_up = {"v4": set(), "v6": set()}
    assert judge_client("c1", client, answers, spread, both_up) == ("expected", [])
    stray = {"v4": {"ams": 9, "sin": 7}, "v6": {"nyc": 16}}
    verdict, problems = judge_client("c1", client, answers, stray, both_up)
    assert verdict is False
    assert problems == ["client c1 (v4) is answered by sin, expected ams or nyc (7 of 16 "
                        "queries)"]


def test_judge_client_on_its_failover_site_while_the_expected_one_is_faulted():
    from lab.observe.status import judge_client

    client = _topo().clients["c1"]
    answers = {"v4": Identity("nyc", 1.0), "v6": Identity("nyc", 1.0)}
    down = {"v4": {"ams"}, "v6": {"ams"}}
    assert judge_client("c1", client, answers, None, down) == ("failover", [])
    verdict, problems = judge_client("c1", client, answers, None, {"v4": set(), "v6": set()})
    assert verdict is False and problems == [
        "client c1 (v4) is answered by nyc, expected ams",
        "client c1 (v6) is answered by nyc, expected ams"]
