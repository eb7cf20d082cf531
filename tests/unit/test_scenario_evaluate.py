"""The expectation evaluator on recorded observations: `status --json` of real labs
(tests/unit/data/scenario/) and prober samples written out here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from lab.scenario import model as m
from lab.scenario.evaluate import Observation, describe, evaluate, judge, settle_point
from probes.dns import Sample

DATA = Path(__file__).parent / "data" / "scenario"
EXPECT = TypeAdapter(m.Expectation)


def status(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"status-{name}.json").read_text())


def expect(**fields: Any) -> Any:
    return EXPECT.validate_python(fields)


NORMAL = Observation(status=status("normal"))
KILLED = Observation(status=status("ams-dns-killed"))
ECMP = Observation(status=status("ecmp"))


@pytest.mark.parametrize(("fields", "normal", "killed"), [
    ({"client": "c-eu", "at": "ams"}, True, False),
    ({"client": "c-eu", "at": "nyc"}, False, True),
    ({"client": "c-eu", "at": ["ams", "nyc"]}, True, True),
    ({"client": "c-eu", "at": "nyc", "family": "v6"}, False, True),
    ({"client": "c-eu", "at": "none"}, False, False),
    ({"site": "ams", "announced": True}, True, False),
    ({"site": "ams", "announced": False}, False, True),
    ({"site": "ams", "check": "dns", "state": "down"}, False, True),
    ({"site": "ams", "check": "introspect", "state": "up"}, True, True),
    ({"site": "ams", "drained": False}, True, True),
    ({"site": "nyc", "health": "up"}, True, True),
    ({"router": "r-eu", "best": "ams", "as_path": [65100]}, True, False),
    ({"router": "r-eu", "best": "nyc", "as_path": [65020, 65100]}, False, True),
    ({"router": "r-eu", "family": "v6", "best": "nyc"}, False, True),
    ({"router": "r-eu", "best": "none"}, False, False),
    ({"session": ["r-eu", "ams"]}, True, True),
    ({"session": ["r-eu", "r-us"], "established": False}, False, False),
])
def test_status_expectations_on_recorded_labs(fields: dict[str, Any], normal: bool,
                                              killed: bool) -> None:
    exp = expect(**fields)
    assert evaluate(exp, NORMAL).ok is normal
    assert evaluate(exp, KILLED).ok is killed


def test_a_failing_verdict_says_what_was_observed() -> None:
    verdict = evaluate(expect(client="c-eu", at="ams"), KILLED)
    assert not verdict.ok and not verdict.final
    assert verdict.expected == "c-eu answered by ams (v4, v6)"
    assert verdict.observed == "v4 nyc, v6 nyc"
    site = evaluate(expect(site="ams", announced=True), KILLED)
    assert site.observed.startswith("withdrawn (") and "dns" in site.observed


def test_ecmp_spread_counts_every_site_that_answered() -> None:
    spread = ECMP.status["clients"]["c-d"]["sites"]  # type: ignore[index]
    answered = {s for s in spread if s != "none"}
    assert evaluate(expect(spread="c-d", min_sites=len(answered)), ECMP).ok
    assert not evaluate(expect(spread="c-d", min_sites=len(answered) + 1), ECMP).ok
    assert evaluate(expect(client="c-d", at=["a1", "a2", "c1"], family="v4"), ECMP).ok
    one = sorted(answered)[0]
    assert evaluate(expect(client="c-d", at=one, family="v4"), ECMP).ok is (len(answered) == 1)


def test_a_missing_subject_is_a_failure_not_a_crash() -> None:
    verdict = evaluate(expect(client="c-zz", at="ams"), NORMAL)
    assert not verdict.ok and "no client c-zz" in verdict.observed
    assert not evaluate(expect(site="ams", announced=True), Observation()).ok


def test_tokens() -> None:
    exp = expect(token="canary-revoked", active=False, at="ams")
    assert evaluate(exp, Observation()).observed == "not asked yet"
    key = ("canary-revoked", "at", "ams")
    fine = Observation(tokens={key: {"active": False, "site": "ams", "error": None}})
    stale = Observation(tokens={key: {"active": True, "site": "ams", "error": None}})
    broken = Observation(tokens={key: {"active": None, "site": None, "error": "HTTP 503"}})
    assert evaluate(exp, fine).ok
    assert not evaluate(exp, stale).ok
    assert evaluate(exp, broken).observed == "no answer (HTTP 503)"


def samples(*answers: str | None, start: float = 10.0, step: float = 0.02) -> list[Sample]:
    """One sample per answer, `step` s apart: a site, None (lost: timeout)."""
    return [Sample(i, start + i * step, rtt_ms=1.0 if a else None, site=a,
                   error=None if a else "timeout") for i, a in enumerate(answers)]


def measured(answers: list[str | None], t_action: float, **bounds: Any) -> Any:
    obs = Observation(samples={"c-eu": samples(*answers)}, t_action=t_action, rate_hz=50)
    return evaluate(expect(measured="c-eu", settles_at="nyc", **bounds), obs)


# ams answers until 10.10; 10.10-10.28 lost (10 queries); nyc from 10.30 on.
FAILOVER = ["ams"] * 5 + [None] * 10 + ["nyc"] * 10


def test_measured_outage_lost_and_settle_time() -> None:
    verdict = measured(FAILOVER, 10.09, max_outage_ms=400, max_lost=10, max_settle_ms=300)
    assert verdict.ok, verdict.observed
    assert verdict.values["site_before"] == "ams" and verdict.values["site"] == "nyc"
    assert verdict.values["lost"] == 10
    assert verdict.values["outage_ms"] == pytest.approx(200, abs=0.01)
    assert verdict.values["settle_ms"] == pytest.approx(210, abs=0.01)


def test_a_measured_bound_exceeded_is_final() -> None:
    verdict = measured(FAILOVER, 10.09, max_lost=3)
    assert not verdict.ok and verdict.final
    assert "10 lost" in verdict.observed
    assert not measured(FAILOVER, 10.09, min_settle_ms=500).ok
    assert measured(FAILOVER, 10.09, min_lost=1, min_outage_ms=100).ok


def test_not_settled_yet_is_not_final_so_the_step_polls_until_its_deadline() -> None:
    verdict = measured(["ams"] * 5 + [None] * 10 + ["nyc"], 10.09, max_lost=100)
    assert not verdict.ok and not verdict.final
    assert verdict.observed.startswith("not settled at nyc")


def test_only_answers_after_the_action_count() -> None:
    # nyc answered before the action too: the settle point is after it.
    before = ["nyc"] * 5 + ["ams"] * 5 + ["nyc"] * 5
    s = samples(*before)
    assert settle_point(s, 10.0, {"nyc"}, 3) == (0, 2)
    assert settle_point(s, 10.09, {"nyc"}, 3) == (10, 12)


def test_a_query_still_in_flight_ends_the_search() -> None:
    s = samples("nyc", "nyc")
    s.append(Sample(2, 10.04))  # sent, neither answered nor timed out yet
    s += samples("nyc", "nyc", start=10.06)
    assert settle_point(s, 10.0, {"nyc"}, 3) is None


def test_judge_reports_all_and_whether_a_failure_is_final() -> None:
    exps = [expect(client="c-eu", at="nyc"), expect(site="ams", announced=False)]
    ok, final, verdicts = judge(exps, KILLED)
    assert ok and not final and len(verdicts) == 2
    ok, final, _ = judge(exps, NORMAL)
    assert not ok and not final  # a timeout: the runner polls until `within`


def test_every_kind_is_described() -> None:
    for fields in ({"client": "c", "at": "none"}, {"spread": "c", "max_sites": 1},
                   {"site": "s", "drained": True}, {"router": "r", "best": "none"},
                   {"session": ["r", "s"], "established": False},
                   {"token": "t", "active": True, "via": "c"},
                   {"measured": "c", "settles_at": ["a", "b"], "min_lost": 1}):
        assert describe(expect(**fields))


def test_measured_reads_the_probe_it_names() -> None:
    """A measured expectation with `probe: https` reads the HTTPS probe's samples at that
    probe's rate; DNS stays the default."""
    https = samples(*(["ams"] * 3 + [None] * 4 + ["nyc"] * 8), step=0.05)
    obs = Observation(samples={"c-eu": samples(*(["nyc"] * 20))}, t_action=10.0,
                      rate_hz=50, by_kind={"https": {"c-eu": https}}, rates={"https": 20})
    dns = evaluate(expect(measured="c-eu", settles_at="nyc", max_lost=0), obs)
    assert dns.ok, dns.observed
    web = evaluate(expect(measured="c-eu", probe="https", settles_at="nyc", min_lost=4),
                   obs)
    assert web.ok and web.values["lost"] == 4, web.observed
    assert describe(expect(measured="c-eu", probe="https", settles_at="nyc")).startswith(
        "c-eu (https probe) settles at nyc")


@dataclass
class FakeBreak:
    t: float


def test_broken_connections_since_the_action_are_counted_and_never_final() -> None:
    obs = Observation(by_kind={"tcp": {"c-eu": samples(*(["nyc"] * 10))}},
                      rates={"tcp": 50}, t_action=10.0,
                      breaks={"c-eu": [FakeBreak(9.5), FakeBreak(10.01), FakeBreak(10.02)]})
    verdict = evaluate(expect(measured="c-eu", probe="tcp", settles_at="nyc",
                              min_broken=2, max_broken=2), obs)
    assert verdict.ok and verdict.values["broken"] == 2, verdict.observed
    more = evaluate(expect(measured="c-eu", probe="tcp", settles_at="nyc", min_broken=3), obs)
    assert not more.ok and not more.final  # a later look may see more
    with pytest.raises(ValueError, match="need 'probe: tcp'"):
        expect(measured="c-eu", settles_at="nyc", min_broken=1)


def test_loss_share_since_the_action() -> None:
    # 10 answered, 5 lost, 5 answered; one still in flight is not counted.
    answers = ["nyc"] * 10 + [None] * 5 + ["nyc"] * 5
    data = samples(*answers)
    data.append(Sample(len(data), 10.0 + len(data) * 0.02))
    obs = Observation(samples={"c-eu": data}, t_action=10.0, rate_hz=50)
    verdict = evaluate(expect(measured="c-eu", settles_at="nyc", min_loss_pct=20,
                              max_loss_pct=30), obs)
    assert verdict.ok and verdict.values["loss_pct"] == 25.0, verdict.observed
    assert verdict.values["loss_of"] == 20
    assert not evaluate(expect(measured="c-eu", settles_at="nyc", max_loss_pct=10), obs).ok


@dataclass
class FakeBreakAt:
    t: float
    site_before: str | None


def test_broken_from_requires_every_break_at_the_named_sites_and_is_final() -> None:
    obs = Observation(by_kind={"tcp": {"c-a": samples(*(["a2"] * 10))}},
                      rates={"tcp": 50}, t_action=10.0,
                      breaks={"c-a": [FakeBreakAt(9.0, "a2"), FakeBreakAt(10.01, "a1"),
                                      FakeBreakAt(10.02, "a1")]})
    only = evaluate(expect(measured="c-a", probe="tcp", settles_at="a2", broken_from="a1"),
                    obs)
    assert only.ok and only.values["broken_from"] == ["a1"], only.observed
    obs.breaks["c-a"].append(FakeBreakAt(10.5, "a2"))  # a2 closed one of its own flows
    wrong = evaluate(expect(measured="c-a", probe="tcp", settles_at="a2", broken_from="a1"),
                     obs)
    assert not wrong.ok and wrong.final and wrong.values["broken_from"] == ["a1", "a2"]
    assert "broken only at a1" in describe(
        expect(measured="c-a", probe="tcp", settles_at="a2", broken_from="a1"))
    with pytest.raises(ValueError, match="need 'probe: tcp'"):
        expect(measured="c-a", settles_at="a2", broken_from="a1")
