"""Identity-aware failover on real labs: the issuer node, sites replicating its keys and
revocations over the lab network, freshness-coupled health, the identity faults and
`audit`. Failing over to a site with stale revocation state accepts a revoked token
(coupling off) -- or, with coupling on, that site has withdrawn and the token is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab.host import labs
from lab.observe.routing import client_sites
from lab.ops import faults
from lab.render.credentials import SERVICE_NAME, paths
from lab.shared import https

from .helpers import DEFAULT, EXPECTED, LabHandle, curl, lab_cli, site_routes, unique_name, wait_for

TOPOLOGY = yaml.safe_load(DEFAULT.read_text())
MAX_STALENESS_S = 2.0  # the default topology's identity.max_staleness_ms
ANYCAST = "203.0.113.53"


def topology_copy(directory: Path, **identity: object) -> Path:
    data = yaml.safe_load(DEFAULT.read_text())
    data["identity"] = identity
    path = directory / "identity.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def identity_of(lab: labs.Lab, site: str) -> dict:
    """A site's /identity, asked over its unicast address from its router's namespace."""
    node = lab.plan.nodes[site]
    answer = https.request(str(node.interfaces[0].v4.ip), 443, "GET", "/identity",
                           ca_file=paths(lab.journal.dir).ca_cert, server_name=SERVICE_NAME,
                           netns=lab.plan.nodes[node.router].netns, timeout_s=2)
    assert answer.status == 200
    return answer.body


def site_of(lab: labs.Lab, client: str) -> str | None:
    return client_sites(lab.plan, timeout=0.3)[client]["v4"].site


def cli_json(lab: labs.Lab, *args: str) -> tuple[int, dict]:
    result = lab_cli(*args, "--lab", lab.name, "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}


def issue(lab: labs.Lab) -> tuple[str, str]:
    code, doc = cli_json(lab, "token", "issue", "--client", "lab-admin", "--scope", "api")
    assert code == 0, doc
    return doc["token"], doc["claims"]["jti"]


def introspect(lab: labs.Lab, client: str, token: str) -> tuple[bool | None, str | None]:
    """`curl` (a client no one here wrote) from a client's namespace to the anycast
    address: (active, the answering site)."""
    code, headers, body = curl(lab.plan.nodes[client].netns, lab.journal.dir, token, ANYCAST)
    assert code == 0, body
    return json.loads(body).get("active"), headers.get("x-anycast-site")


@pytest.fixture(scope="module")
def lab() -> Iterator[labs.Lab]:
    handle = LabHandle(unique_name("id"), DEFAULT)
    try:
        yield handle.up()
    finally:
        handle.down()


def _whole(lab: labs.Lab) -> None:
    for site in ("ams", "nyc", "sin", lab.plan.issuer.name):
        faults.heal(lab, site)
    for client, site in EXPECTED.items():
        wait_for(lambda c=client, s=site: site_of(lab, c) == s, timeout=30,
                 message=f"{client} back at {site}")


def test_the_default_lab_has_an_issuer_on_its_own_node(lab: labs.Lab) -> None:
    issuer = lab.plan.issuer
    assert issuer is not None and issuer.role == "issuer"
    assert issuer.router == TOPOLOGY["issuer"]["router"]
    held = {site: identity_of(lab, site) for site in ("ams", "nyc", "sin")}
    kids = {tuple(s["kids"]) for s in held.values()}
    assert len(kids) == 1 and all(s["kids"] == s["issuer_kids"] for s in held.values())
    assert all(s["replicated"] and s["revocation"]["ever_synced"] for s in held.values())


def test_revocation_propagates_to_every_site_within_the_bound(lab: labs.Lab) -> None:
    token, jti = issue(lab)
    for client in EXPECTED:
        assert introspect(lab, client, token)[0] is True
    code, doc = cli_json(lab, "token", "revoke", jti)
    assert code == 0, doc
    delays = doc["propagated_ms"]
    print(f"revocation propagation (ms, sync every 500 ms): {delays}")
    assert set(delays) == {"ams", "nyc", "sin"}
    assert all(ms is not None and ms <= MAX_STALENESS_S * 1000 for ms in delays.values())
    assert set(doc["versions"].values()) == {doc["issuer_version"]}
    for client in EXPECTED:
        assert introspect(lab, client, token)[0] is False
    code, listed = cli_json(lab, "token", "list")
    mine = next(t for t in listed["tokens"] if t["jti"] == jti)
    assert sorted(mine["revoked_on"]) == ["ams", "nyc", "sin"]
    code, again = cli_json(lab, "token", "revoke", jti)
    assert code == 0 and again["already_revoked"] is True
    assert again["issuer_version"] == doc["issuer_version"]


def test_a_partitioned_site_goes_stale_withdraws_and_its_clients_move(lab: labs.Lab) -> None:
    try:
        before = identity_of(lab, "ams")["revocation"]["age_s"]
        faults.inject(lab, "ams", "stale")
        wait_for(lambda: identity_of(lab, "ams")["revocation"]["age_s"] > MAX_STALENESS_S,
                 timeout=10, message="ams's revocation state older than max_staleness")
        assert identity_of(lab, "ams")["revocation"]["age_s"] > before
        assert identity_of(lab, "ams")["sync"]["last_error"]
        wait_for(lambda: site_routes(lab, "ams") == 0, timeout=10, message="ams withdrawn")
        wait_for(lambda: site_of(lab, "c-eu") == "nyc", timeout=10,
                 message="c-eu moved to nyc")
        # DNS and the other sites are untouched: only the path to the issuer is cut.
        assert identity_of(lab, "nyc")["revocation"]["age_s"] <= MAX_STALENESS_S
        state = json.loads((lab.journal.dir / "nodes/ams/health-state.json").read_text())
        assert state["checks"]["dns"]["state"] == "up"
        assert state["checks"]["identity"]["state"] == "down"
    finally:
        faults.heal(lab, "ams")
    wait_for(lambda: site_of(lab, "c-eu") == "ams", timeout=20, message="c-eu back at ams")


def test_audit_is_clean_on_a_healthy_lab_and_names_each_identity_fault(lab: labs.Lab) -> None:
    code, doc = cli_json(lab, "audit")
    assert code == 0 and doc["ok"] is True and doc["divergent"] == {}, doc["divergent"]
    expected = {"stale": "revocation_age_s", "wrong-key": "kids",
                "expired-cert": "tls_not_after"}
    try:
        for fault, prop in expected.items():
            faults.inject(lab, "nyc", fault)

            def diverges(p: str = prop) -> dict | None:
                code, doc = cli_json(lab, "audit")
                return doc if code == 1 and p in doc["divergent"].get("nyc", {}) else None

            doc = wait_for(diverges, timeout=15, interval=0.5,
                           message=f"audit naming nyc {prop} under {fault}")
            assert set(doc["divergent"]) == {"nyc"}, doc["divergent"]
            faults.heal(lab, "nyc")
            wait_for(lambda: cli_json(lab, "audit")[0] == 0, timeout=20, interval=0.5,
                     message=f"audit clean after healing {fault}")
    finally:
        _whole(lab)


def test_wrong_key_rejects_valid_tokens_at_that_site_only(lab: labs.Lab) -> None:
    token, _ = issue(lab)
    try:
        faults.inject(lab, "ams", "wrong-key")
        wait_for(lambda: site_routes(lab, "ams") == 0, timeout=10, message="ams withdrawn")
        # The answer at ams itself, over its unicast address: a valid token rejected.
        node = lab.plan.nodes["ams"]
        code, _, body = curl(lab.plan.nodes["c-eu"].netns, lab.journal.dir, token,
                             str(node.interfaces[0].v4.ip))
        assert code == 0 and json.loads(body)["active"] is False
        # Through the anycast address c-eu is answered by nyc, which holds the issuer's keys.
        assert introspect(lab, "c-eu", token) == (True, "nyc")
    finally:
        _whole(lab)


def test_the_issuer_down_fails_closed_every_site(lab: labs.Lab) -> None:
    try:
        faults.inject(lab, lab.plan.issuer.name, "issuer")
        for site in ("ams", "nyc", "sin"):
            wait_for(lambda s=site: site_routes(lab, s) == 0, timeout=15,
                     message=f"{site} withdrawn (fail-closed)")
        assert all(site_of(lab, c) is None for c in EXPECTED)
    finally:
        _whole(lab)


def test_contain_withdraws_a_site_at_once(lab: labs.Lab) -> None:
    try:
        code, doc = cli_json(lab, "contain", "ams")
        assert code == 0, doc
        assert doc["site"] == "ams" and doc["clients_before"] == ["c-eu"]
        assert doc["unreached_after_ms"] is not None
        print(f"contain ams: no client reaches it {doc['unreached_after_ms']} ms after")
        assert site_routes(lab, "ams") == 0 and site_of(lab, "c-eu") == "nyc"
    finally:
        _whole(lab)


@pytest.mark.parametrize("coupling", [False, True], ids=["coupling-off", "coupling-on"])
def test_failover_to_a_stale_site(make_lab, tmp_path: Path, coupling: bool) -> None:
    """c-us is answered by nyc; its failover site is ams. Cut ams off from the issuer,
    revoke a token, then take nyc out: c-us is now served by whatever site routing
    chooses. Coupling off: ams, stale, and the revoked token is active there. On: ams
    withdrew when it went stale, and the token is refused wherever c-us lands."""
    lab = make_lab(topology_copy(tmp_path, coupling=coupling), prefix="ix").up()
    token, jti = issue(lab)
    assert introspect(lab, "c-us", token) == (True, "nyc")
    faults.inject(lab, "ams", "stale")
    wait_for(lambda: identity_of(lab, "ams")["revocation"]["age_s"] > MAX_STALENESS_S,
             timeout=10, message="ams stale")
    code, doc = cli_json(lab, "token", "revoke", jti)
    assert code == 0, doc
    assert doc["propagated_ms"]["ams"] is None  # never reached the partitioned site
    assert doc["propagated_ms"]["nyc"] is not None and doc["propagated_ms"]["sin"] is not None
    faults.inject(lab, "nyc", "dns")  # nyc's health daemon withdraws it
    wait_for(lambda: site_routes(lab, "nyc") == 0, timeout=10, message="nyc withdrawn")
    if not coupling:
        assert site_routes(lab, "ams") > 0  # nothing tells ams it is stale
        wait_for(lambda: site_of(lab, "c-us") == "ams", timeout=10, message="c-us at ams")
        assert introspect(lab, "c-us", token) == (True, "ams")  # the hazard
    else:
        assert site_routes(lab, "ams") == 0
        landed = wait_for(lambda: site_of(lab, "c-us"), timeout=10, message="c-us answered")
        assert landed == "sin"
        active, answered_by = introspect(lab, "c-us", token)
        assert active is False and answered_by == "sin"
    started = time.monotonic()
    faults.heal(lab, "ams")
    wait_for(lambda: identity_of(lab, "ams")["revocation"]["version"]
             == doc["issuer_version"], timeout=10, message="ams caught up")
    print(f"ams caught up {time.monotonic() - started:.2f} s after the partition healed")


def test_measure_exposure_with_coupling_on_never_accepts_at_the_stale_site(
        lab: labs.Lab) -> None:
    try:
        code, doc = cli_json(lab, "measure", "exposure", "--site", "ams", "--window", "3")
        assert code == 0, doc
        assert doc["coupling"] is True and len(doc["trials"]) == 1
        trial = doc["trials"][0]
        assert trial["failover_forced_from"] == ["nyc"]
        print(f"exposure with coupling on: {trial['exposure_ms']} ms")
        assert trial["open_at_end"] is False
        for client, seen in trial["clients"].items():
            assert "ams" not in seen["sites"], (client, seen)
            assert seen["first_inactive_ms"] is not None, (client, seen)
    finally:
        _whole(lab)


def test_the_issuer_down_under_serve_stale_serves_until_the_bound(make_lab,
                                                                  tmp_path: Path) -> None:
    bound_s = 8.0
    lab = make_lab(topology_copy(tmp_path, issuer_unreachable="serve-stale",
                                 serve_stale_max_ms=int(bound_s * 1000)), prefix="is").up()
    faults.inject(lab, lab.plan.issuer.name, "issuer")
    sites = ("ams", "nyc", "sin")
    wait_for(lambda: all(identity_of(lab, s)["revocation"]["age_s"] > MAX_STALENESS_S + 1
                         for s in sites), timeout=15, message="every site stale")
    # Stale everywhere, and no site fresh: every site keeps serving (availability).
    assert all(site_routes(lab, s) > 0 for s in sites)
    assert all(site_of(lab, c) == s for c, s in EXPECTED.items())
    # Past the hard bound every site withdraws.
    for site in sites:
        wait_for(lambda s=site: site_routes(lab, s) == 0, timeout=bound_s + 10,
                 message=f"{site} withdrawn past the serve-stale bound")
    assert all(identity_of(lab, s)["revocation"]["age_s"] > bound_s for s in sites)
