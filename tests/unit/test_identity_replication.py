"""The pure parts of identity replication: kids and JWKS, feed versions and entity tags,
the identity check's staleness decision, audit's divergence rules, the issuer in a
topology and its plan."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml

from lab.model import load_text
from lab.model.plan import build_plan
from lab.shared import identity, tokens
from lab.shared.pki import create_signing_key
from lab.sites.health.identity import decide

from .helpers import ROOT

DEFAULT = (ROOT / "topologies" / "default.yaml").read_text()


# --- kids, JWKS, feed --------------------------------------------------------------------

def test_a_key_has_one_kid_from_its_private_or_public_form() -> None:
    from lab.shared.pki import public_pem

    key = create_signing_key()
    assert identity.kid_of(key) == identity.kid_of(public_pem(key))
    assert identity.kid_of(key) != identity.kid_of(create_signing_key())


def test_a_jwks_round_trips_to_the_same_public_keys() -> None:
    keys = [create_signing_key(), create_signing_key()]
    parsed = identity.parse_jwks(identity.jwks_of(keys))
    assert set(parsed) == {identity.kid_of(k) for k in keys}
    token, _ = tokens.issue_token(keys[1], issuer="i", audience="a", client_id="c", sub="s",
                                  scope="x", ttl_s=60, kid=identity.kid_of(keys[1]))
    kid = tokens.kid_of_token(token)
    assert kid == identity.kid_of(keys[1])
    assert tokens.verify_token(token, parsed[kid], issuer="i", audience="a",
                               revoked=set())["active"] is True


def test_a_jwks_whose_kid_is_not_the_thumbprint_is_refused() -> None:
    doc = identity.jwks_of([create_signing_key()])
    doc["keys"][0]["kid"] = "someone-elses"
    with pytest.raises(ValueError, match="thumbprint"):
        identity.parse_jwks(doc)
    doubled = identity.jwks_of([create_signing_key()])
    doubled["keys"] *= 2
    with pytest.raises(ValueError, match="twice"):
        identity.parse_jwks(doubled)


def test_entity_tags_follow_the_kid_set_and_the_version() -> None:
    assert identity.jwks_etag(["b", "a"]) == identity.jwks_etag(["a", "b"])
    assert identity.jwks_etag(["a"]) != identity.jwks_etag(["a", "b"])
    assert identity.revocation_etag(3) != identity.revocation_etag(4)


def test_a_feed_never_goes_back() -> None:
    assert identity.parse_feed({"version": 5, "revoked": {"j": 1}}, held_version=5).version == 5
    with pytest.raises(ValueError, match="went back"):
        identity.parse_feed({"version": 4, "revoked": {}}, held_version=5)
    for bad in ({"version": -1, "revoked": {}}, {"version": True, "revoked": {}},
                {"version": 1, "revoked": {"": 1}}, {"version": 1, "revoked": []}, []):
        with pytest.raises(ValueError):
            identity.parse_feed(bad)


# --- the identity check's decision -------------------------------------------------------

def state(age: float, kids: tuple[str, ...] = ("k1",), issuer_kids: tuple[str, ...] = ("k1",),
          synced: bool = True) -> dict[str, Any]:
    return {"replicated": True, "kids": list(kids), "issuer_kids": list(issuer_kids),
            "revocation": {"version": 3, "age_s": age, "ever_synced": synced}}


def verdict(own: dict[str, Any], peers: list | None = None, policy: str = "fail-closed",
            bound: float = 30.0) -> tuple[bool, str]:
    return decide(own, peers, max_staleness_s=2.0, policy=policy, serve_stale_max_s=bound)


def test_fresh_state_with_the_issuers_keys_is_up() -> None:
    assert verdict(state(0.4)) == (True, "ok")


def test_keys_that_differ_from_the_issuers_are_down_however_fresh() -> None:
    ok, reason = verdict(state(0.1, kids=("rogue",)))
    assert not ok and "differs from the issuer's" in reason and "rogue" in reason
    assert not verdict(state(0.1, kids=()))[0]


def test_stale_state_is_down_under_fail_closed() -> None:
    ok, reason = verdict(state(2.5), peers=[None, None])
    assert not ok and "2.5 s old" in reason
    assert not verdict(state(0.5, synced=False))[0]  # never synced: not fresh


def test_a_peer_fresh_only_by_the_phase_of_its_sync_is_no_proof_of_a_partition() -> None:
    # The issuer went down: sites stop syncing within one 0.5 s interval of each other.
    def synced(age: float) -> dict[str, Any]:
        return {**state(age), "sync": {"interval_s": 0.5}}

    first_stale = verdict(synced(2.05), peers=[synced(1.7), synced(1.9)], policy="serve-stale")
    assert first_stale[0] and "unreachable from every site" in first_stale[1]
    # A peer that synced well after this site did reached the issuer: this site is cut off.
    cut_off = verdict(synced(2.05), peers=[synced(0.3)], policy="serve-stale")
    assert not cut_off[0] and "cut off from the issuer" in cut_off[1]
    # A site that never synced counts any fresh peer (it has nothing to compare).
    never = {**state(0.4, synced=False), "sync": {"interval_s": 0.5}}
    assert not verdict(never, peers=[synced(0.3)], policy="serve-stale")[0]


def test_serve_stale_serves_only_while_no_site_is_fresh_and_within_the_bound() -> None:
    alone = verdict(state(5.0), peers=[state(6.0), None], policy="serve-stale")
    assert alone[0] and "unreachable from every site" in alone[1]
    cut_off = verdict(state(5.0), peers=[state(0.3), None], policy="serve-stale")
    assert not cut_off[0] and "cut off from the issuer" in cut_off[1]
    past = verdict(state(31.0), peers=[None], policy="serve-stale", bound=30.0)
    assert not past[0] and "bound" in past[1]


# --- audit's divergence rules ------------------------------------------------------------

NOW = dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.UTC)


def facts(site: str, **changes: Any) -> dict[str, Any]:
    base = {"kids": ["k1"], "revocation_version": 4, "revocation_age_s": 0.3,
            "revoked_canary": False, "active_canary": True, "tls_spki": "aa",
            "tls_not_after": "2026-12-31T00:00:00+00:00", "tls_verified": True,
            "dns_identity": site, "soa_serial": 1, "errors": {}}
    return {**base, **changes}


def divergent(**sites: dict[str, Any]) -> dict[str, dict[str, str]]:
    from lab.observe.audit import divergences

    return divergences(sites, {"reachable": True, "version": 4, "kids": ["k1"]},
                       max_staleness_s=2.0, now=NOW)


def test_agreeing_sites_have_no_divergence() -> None:
    assert divergent(ams=facts("ams"), nyc=facts("nyc"), sin=facts("sin")) == {}


@pytest.mark.parametrize(("change", "prop"), [
    ({"kids": ["rogue"]}, "kids"),
    ({"revocation_version": 3}, "revocation_version"),
    ({"revocation_age_s": 9.0}, "revocation_age_s"),
    ({"revoked_canary": True}, "revoked_canary"),
    ({"active_canary": False}, "active_canary"),
    ({"tls_spki": "bb"}, "tls_spki"),
    ({"tls_not_after": "2026-11-30T00:00:00+00:00"}, "tls_not_after"),
    ({"tls_verified": False}, "tls_verified"),
    ({"dns_identity": "ams"}, "dns_identity"),
    ({"soa_serial": 2}, "soa_serial"),
])
def test_each_divergence_names_the_site_and_the_property(change: dict, prop: str) -> None:
    found = divergent(ams=facts("ams"), nyc=facts("nyc", **change), sin=facts("sin"))
    assert set(found) == {"nyc"} and prop in found["nyc"], found


def test_a_site_that_does_not_answer_diverges_on_what_it_could_not_say() -> None:
    silent = facts("nyc", kids=None, revocation_version=None,
                   errors={"kids": "timed out", "revocation_version": "timed out"})
    found = divergent(ams=facts("ams"), nyc=silent, sin=facts("sin"))
    assert found["nyc"]["kids"] == "timed out"


# --- the issuer in a topology and its plan -----------------------------------------------

def test_the_default_topology_puts_its_issuer_on_its_own_node_last_in_the_plan() -> None:
    report = load_text(DEFAULT, "default.yaml")
    assert report.ok and report.topology is not None
    plan = build_plan(report.topology)
    issuer = plan.issuer
    assert issuer is not None and issuer.role == "issuer" and issuer.netns.endswith(".issuer")
    assert plan.links[-1].kind == "issuer" and plan.links[-1].b == issuer.name
    assert issuer.gateway4 == plan.nodes[issuer.router].iface(issuer.name).v4.ip
    without = yaml.safe_load(DEFAULT)
    del without["issuer"]
    other = build_plan(load_text(yaml.safe_dump(without, sort_keys=False), "x.yaml").topology)
    assert other.issuer is None
    # Adding an issuer moves no other address.
    assert {n: [i.v4 for i in node.interfaces] for n, node in other.nodes.items()} == {
        n: [i.v4 for i in node.interfaces if i.peer != issuer.name]
        for n, node in plan.nodes.items() if n != issuer.name}


@pytest.mark.parametrize(("issuer", "message"), [
    ({"router": "r-zz"}, "unknown router 'r-zz'"),
    ({"router": "r-eu", "name": "ams"}, "duplicate name 'ams'"),
    ({"router": "r-eu", "name": "Bad_Name"}, "not a usable node name"),
])
def test_a_bad_issuer_is_reported_with_its_path(issuer: dict, message: str) -> None:
    data = yaml.safe_load(DEFAULT)
    data["issuer"] = issuer
    report = load_text(yaml.safe_dump(data), "x.yaml")
    assert not report.ok
    assert any(message in str(p) and "issuer" in str(p.path) for p in report.problems), \
        [str(p) for p in report.problems]


def test_identity_settings_are_bounded() -> None:
    data = yaml.safe_load(DEFAULT)
    data["identity"] = {"issuer_unreachable": "pray"}
    assert not load_text(yaml.safe_dump(data), "x.yaml").ok
    data["identity"] = {"sync_interval_ms": 10}
    assert not load_text(yaml.safe_dump(data), "x.yaml").ok
    data["identity"] = {"issuer_unreachable": "serve-stale", "serve_stale_max_ms": 5000}
    assert load_text(yaml.safe_dump(data), "x.yaml").ok
