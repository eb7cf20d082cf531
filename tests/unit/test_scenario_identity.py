"""Scenario expectations about identity: `audit` (on recorded `anycast-lab audit --json`
documents of a real lab, healthy and with nyc serving the wrong keys), the identity
health check, and faults made at the issuer node (`fail issuer issuer`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from lab.observe.audit import PROPERTIES
from lab.scenario import model as m
from lab.scenario.evaluate import Observation, describe, evaluate
from lab.scenario.load import TOPOLOGIES, load_text

DATA = Path(__file__).parent / "data" / "scenario"
EXPECT = TypeAdapter(m.Expectation)


def audit(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"audit-{name}.json").read_text())


NORMAL = Observation(audit=audit("normal"))
WRONG_KEY = Observation(audit=audit("nyc-wrong-key"))


def expect(**fields: Any) -> Any:
    return EXPECT.validate_python(fields)


def test_the_scenario_model_knows_every_audited_property() -> None:
    assert m.AUDIT_PROPERTIES == PROPERTIES


@pytest.mark.parametrize(("fields", "normal", "wrong_key"), [
    ({"audit": "nyc", "diverges": False}, True, False),
    ({"audit": "nyc", "diverges": True}, False, True),
    ({"audit": "nyc", "property": "kids", "diverges": True}, False, True),
    ({"audit": "nyc", "property": "active_canary", "diverges": True}, False, True),
    ({"audit": "nyc", "property": "revocation_age_s", "diverges": False}, True, True),
    ({"audit": "ams", "diverges": False}, True, True),
])
def test_audit_expectations_on_recorded_audits(fields: dict[str, Any], normal: bool,
                                               wrong_key: bool) -> None:
    exp = expect(**fields)
    assert evaluate(exp, NORMAL).ok is normal
    assert evaluate(exp, WRONG_KEY).ok is wrong_key


def test_an_audit_verdict_says_why_it_diverges() -> None:
    verdict = evaluate(expect(audit="nyc", property="kids", diverges=False), WRONG_KEY)
    assert not verdict.ok
    assert verdict.expected == "audit of nyc: kids agrees"
    assert verdict.observed == "kids diverges: not the issuer's key set"
    whole = evaluate(expect(audit="nyc", diverges=False), WRONG_KEY)
    assert "kids: not the issuer's key set" in whole.observed
    assert "active_canary: a valid token is rejected here" in whole.observed
    assert describe(expect(audit="ams", diverges=True)) == \
        "audit of ams: every property diverges"


def test_without_an_audit_the_expectation_waits() -> None:
    verdict = evaluate(expect(audit="ams", diverges=False), Observation())
    assert not verdict.ok and not verdict.final
    assert verdict.observed == "no audit of site ams yet"


def test_an_unknown_audited_property_is_refused() -> None:
    with pytest.raises(ValidationError):
        expect(audit="ams", property="colour", diverges=True)
    with pytest.raises(ValidationError):
        expect(audit="ams", property="kids")  # diverges is required


def test_the_identity_check_is_a_site_check() -> None:
    exp = expect(site="ams", check="identity", state="down")
    status = {"sites": {"ams": {"checks": {"identity": {"state": "down"}}}}}
    assert evaluate(exp, Observation(status=status)).ok


def scenario(topology: str, do: str, expect_line: str = "") -> str:
    return (f"name: t\ntitle: t\ntopology: {topology}\nsteps:\n  - name: s\n    do: {do}\n"
            + (f"    expect:\n      - {expect_line}\n" if expect_line else ""))


def problems(text: str) -> list[str]:
    return [str(p) for p in load_text(text, base=TOPOLOGIES.parent / "scenarios").problems]


@pytest.mark.parametrize("do", ["fail issuer issuer", "heal issuer", "heal issuer issuer",
                                "fail ams stale", "heal ams"])
def test_faults_at_the_issuer_node_name_it(do: str) -> None:
    assert problems(scenario("default", do)) == []


def test_an_issuer_fault_at_a_site_says_where_it_is_made() -> None:
    assert problems(scenario("default", "fail ams issuer")) == [
        "steps[0].do: fault 'issuer' is made at the issuer node: write 'fail issuer issuer'"]


def test_an_issuer_fault_in_a_lab_without_an_issuer_is_refused() -> None:
    found = problems(scenario("two-sites", "fail issuer issuer"))
    assert len(found) == 1 and "has none" in found[0]


def test_the_issuer_is_no_site_for_a_site_fault() -> None:
    found = problems(scenario("default", "fail issuer dns"))
    assert found == ["steps[0].do: unknown site 'issuer' in topology 'default' "
                     "(known: ams, nyc, sin)"]


def test_the_identity_check_needs_coupling() -> None:
    line = "{site: ams, check: identity, state: down}"
    assert problems(scenario("default", "fail ams stale", line)) == []
    found = problems(scenario("identity-uncoupled", "fail ams stale", line))
    assert len(found) == 1 and "runs no identity check" in found[0]


def test_an_audit_of_an_unknown_site_is_refused() -> None:
    found = problems(scenario("default", "fail ams stale", "{audit: lon, diverges: true}"))
    assert len(found) == 1 and "unknown site 'lon'" in found[0]


def test_a_revocation_at_the_issuer_says_when_each_site_held_it() -> None:
    from lab.ops.tokenstore import issuer_revoke_text

    doc = {"version": 2, "added": True,
           "propagated_ms": {"ams": None, "nyc": 312.4, "sin": 350.0}}
    assert issuer_revoke_text("student", doc) == (
        "revoked student at the issuer (version 2): nyc after 312 ms, sin after 350 ms; "
        "not at ams within 10 s (cut off or stale)")
    again = {"version": 2, "added": False, "propagated_ms": {"ams": 1.0}}
    assert issuer_revoke_text("student", again) == \
        "student was already revoked at the issuer (version 2)"


def _with_identity(**ams: Any) -> Observation:
    entry = {"version": 5, "issuer_version": 5, "current": True, "sync_age_s": 0.3,
             "ever_synced": True, "stale": False, "keys_match": True, **ams}
    return Observation(status={"sites": {"ams": {"identity": entry}}})


@pytest.mark.parametrize(("fields", "fresh", "cut_off"), [
    ({"identity": "ams", "stale": False}, True, False),
    ({"identity": "ams", "stale": True, "current": False}, False, True),
    ({"identity": "ams", "keys_match": True}, True, True),
    ({"identity": "ams", "current": True, "keys_match": True}, True, False),
])
def test_identity_expectations_read_status(fields: dict[str, Any], fresh: bool,
                                           cut_off: bool) -> None:
    exp = expect(**fields)
    assert evaluate(exp, _with_identity()).ok is fresh
    stale = _with_identity(version=4, current=False, stale=True, sync_age_s=9.5)
    assert evaluate(exp, stale).ok is cut_off


def test_an_identity_verdict_shows_the_version_and_age() -> None:
    stale = _with_identity(version=4, current=False, stale=True, sync_age_s=9.5)
    verdict = evaluate(expect(identity="ams", stale=False), stale)
    assert verdict.expected == "ams's identity: fresh"
    assert verdict.observed == "stale true (v4 of v5, synced 9.5 s ago)"
    none = Observation(status={"sites": {"ams": {"identity": None}}})
    assert evaluate(expect(identity="ams", stale=False), none).observed == \
        "no identity in the lab's status"


def test_an_identity_expectation_needs_something_and_an_issuer() -> None:
    with pytest.raises(ValidationError):
        expect(identity="ams")
    found = problems(scenario("two-sites", "heal west", "{identity: west, stale: false}"))
    assert len(found) == 1 and "has no issuer" in found[0]
