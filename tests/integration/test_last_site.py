"""Every site's DNS fails, one site after the other, under each `health.last_site` policy
(real labs: every site's health daemon sees its own DNS check fail and acts). The service
answers HTTPS throughout, so what a client can still reach shows each policy:
- withdraw: every site withdraws, no route to the anycast address is left anywhere and
  an HTTPS client reaches nothing;
- backup-route: the host routes go, every site's covering /24 and /48 stay, and each
  client is answered over HTTPS by its nearest site, on both families;
- keep-last: the last site to fail stays announced (logged, counted), and every client is
  answered by it.
Healing every site brings the lab back to normal.

Each wait is for the condition itself: a health daemon writes its state file when a check
goes down, before it has acted on it, so "health down" is not yet "withdrawn" or "kept";
the test waits for the route the policy calls for. A failure adds every site's view
(health, route, decision, last-site state, the routes it sees, what its router holds)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import yaml

from lab.ops import faults
from lab.render.health import state_file

from .helpers import DEFAULT, EXPECTED, curl, events_since, log_size, site_routes, wait_for

SITES = ("ams", "nyc", "sin")  # failed in this order: sin is the last one standing
CLIENTS = tuple(EXPECTED)


def topology(tmp_path, policy: str):
    data = yaml.safe_load(DEFAULT.read_text())
    data["health"] = {"last_site": policy}
    path = tmp_path / f"last-site-{policy}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def answered_by(lab, client: str, family: int) -> str | None:
    """The site answering an HTTPS introspection request from the client, or None."""
    plan = lab.plan
    address = str((plan.anycast4 if family == 4 else plan.anycast6).network_address)
    code, headers, _ = curl(plan.nodes[client].netns, lab.journal.dir, "probe", address)
    return headers.get("x-anycast-site") if code == 0 else None


def state(lab, site: str) -> dict:
    return json.loads(state_file(lab.journal.dir / "nodes" / site).read_text())


def seen_from(lab, site: str, other: str) -> bool:
    """Does `site`'s health daemon see a route of `other` (the AS path's last AS before
    the sites' own is `other`'s router's: one site per router in this topology)?"""
    router_asn = lab.plan.nodes[lab.plan.nodes[other].router].asn
    routes = state(lab, site).get("last_site", {}).get("other_routes", {})
    return any(r["as_path"][-2:-1] == [router_asn] for r in routes.values())


def acted(lab, site: str, route: str) -> bool:
    """The site's health daemon saw its health go down and has acted: the route it
    holds is `route` (withdrawn, or gshut when kept as the last site)."""
    now = state(lab, site)
    return now["health"] == "down" and now["route"] == route


def snapshot(lab) -> str:
    """Every site's view, for a failure message."""
    lines = []
    for site in SITES:
        try:
            now = state(lab, site)
        except (OSError, ValueError) as exc:
            lines.append(f"  {site}: no state file ({exc})")
            continue
        last = now.get("last_site", {})
        seen = {p: r.get("as_path") for p, r in (last.get("other_routes") or {}).items()}
        lines.append(f"  {site}: health {now.get('health')}, route {now.get('route')}, "
                     f"decision {now.get('decision')!r}, kept {last.get('kept')}, "
                     f"router holds {site_routes(lab, site)} route(s), sees {seen}")
    return "\n".join(lines)


@contextmanager
def explained(lab) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe sites:\n{snapshot(lab)}") from exc


def fail_every_site(lab, policy: str) -> None:
    for n, site in enumerate(SITES):
        faults.inject(lab, site, "dns")
        last = n == len(SITES) - 1
        route = "gshut" if policy == "keep-last" and last else "withdrawn"
        if policy == "backup-route":
            # The host routes go, the covering ones stay: the speaker's state is "announced"
            # for them, so ask the router: the /32 and /128 gone, the /24 and /48 held.
            wait_for(lambda s=site: state(lab, s)["health"] == "down"
                     and site_routes(lab, s) == 2, 10,
                     message=f"{site}'s health down and its host routes withdrawn")
        else:
            wait_for(lambda s=site, r=route: acted(lab, s, r), 10,
                     message=f"{site}'s health down and its route {route}")
        # One after the other: the next sites see this one gone before they fail.
        if policy == "keep-last":
            for later in SITES[n + 1:]:
                wait_for(lambda a=later, b=site: not seen_from(lab, a, b), 10,
                         message=f"{later} no longer sees {site}'s route")


def heal_every_site(lab) -> None:
    for site in SITES:
        faults.heal(lab, site)
    for client, site in EXPECTED.items():
        wait_for(lambda c=client, s=site: answered_by(lab, c, 4) == s, 30,
                 interval=0.2, message=f"{client} back at {site}")


@pytest.mark.parametrize("policy", ["withdraw", "backup-route", "keep-last"])
def test_every_site_dns_down(make_lab, tmp_path, policy):
    lab = make_lab(topology(tmp_path, policy), prefix="ls").up()
    for client, site in EXPECTED.items():
        assert answered_by(lab, client, 4) == site
    events = {s: log_size(lab.journal.dir / "nodes" / s / "health-events.jsonl") for s in SITES}
    try:
        with explained(lab):
            fail_every_site(lab, policy)
            check_policy(lab, policy, events)
    finally:
        heal_every_site(lab)


def check_policy(lab, policy: str, events: dict[str, int]) -> None:
    """What each policy leaves clients when every site's DNS is down."""
    if policy == "withdraw":
        wait_for(lambda: all(site_routes(lab, s) == 0 for s in SITES), 10,
                 message="every site's routes withdrawn")
        assert all(answered_by(lab, c, 4) is None for c in CLIENTS)
    elif policy == "backup-route":
        # The /32 and /128 withdrawn, the covering /24 and /48 held: two routes each.
        wait_for(lambda: all(site_routes(lab, s) == 2 for s in SITES), 10,
                 message="only the backup routes left")
        for family in (4, 6):
            for client, site in EXPECTED.items():
                wait_for(lambda c=client, s=site, f=family: answered_by(lab, c, f) == s,
                         10, interval=0.2,
                         message=f"{client} answered by {site} over the backup route")
    else:
        # fail_every_site waited until sin's health daemon kept its route (gshut).
        wait_for(lambda: [site_routes(lab, s) for s in SITES] == [0, 0, 2], 10,
                 message="only sin announced")
        for client in CLIENTS:
            wait_for(lambda c=client: answered_by(lab, c, 4) == "sin", 10, interval=0.2,
                     message=f"{client} answered by sin, the last site standing")
        state = json.loads(state_file(lab.journal.dir / "nodes" / "sin").read_text())
        assert state["last_site"]["kept"] is True and state["route"] == "gshut"
        kept = [e for e in events_since(lab.journal.dir / "nodes" / "sin" /
                                        "health-events.jsonl", events["sin"])
                if e.get("event") == "last-site-kept"]
        assert kept, "sin logged no last-site-kept event"
        for site in ("ams", "nyc"):
            state = json.loads(state_file(lab.journal.dir / "nodes" / site).read_text())
            assert state["last_site"]["kept"] is False and state["route"] == "withdrawn"
