"""Real BGP carries the anycast prefixes; every client reaches its nearest site,
moves when a site withdraws or its speaker dies, and comes back."""

from __future__ import annotations

import os
import signal

from lab.host.journal import Journal
from lab.host.procs import run_in
from lab.model import names
from lab.observe.routing import best_paths, sessions
from lab.shared.speaker_client import command as speaker

from .helpers import (
    DEFAULT,
    EXPECTED,
    FAILOVER,
    TOPOLOGY,
    nothing_left,
    sites_seen,
    static_copy,
    wait_for,
)


def test_every_session_established(default_lab):
    states = {(s.router, s.protocol): s.state for s in sessions(default_lab.plan,
                                                                 default_lab.journal.dir)}
    assert states and set(states.values()) == {"Established"}


def test_each_client_reaches_its_expected_site_on_both_families(default_lab):
    seen = sites_seen(default_lab.plan)
    assert seen == {c: (site, site) for c, site in EXPECTED.items()}


def test_routes_are_in_the_routers_kernel_fib(default_lab):
    plan = default_lab.plan
    for router in plan.by_role("router"):
        site = next(s for s in plan.by_role("site") if s.router == router.name)
        site_addr = site.iface(router.name)
        v4 = run_in(router.netns, ["ip", "-4", "route", "show", "203.0.113.53/32"]).stdout
        v6 = run_in(router.netns, ["ip", "-6", "route", "show", "2001:db8:53::53/128"]).stdout
        assert f"via {site_addr.v4.ip}" in v4 and "proto bird" in v4
        assert f"via {site_addr.v6.ip}" in v6 and "proto bird" in v6


def test_best_paths_name_the_site_and_as_path(default_lab):
    """Every router, both families: the best path is its own site's, learned over the
    site's session, with the site's AS as the whole AS path and the site as next hop."""
    plan = default_lab.plan
    paths = best_paths(plan, default_lab.journal.dir)
    prefixes = {"v4": TOPOLOGY["anycast"]["ipv4"], "v6": TOPOLOGY["anycast"]["ipv6"]}
    own_site = {s["router"]: name for name, s in TOPOLOGY["sites"].items()}
    assert set(paths) == set(TOPOLOGY["routers"])
    for router, per_prefix in paths.items():
        site = own_site[router]
        link = plan.nodes[site].iface(router)
        assert set(per_prefix) == set(prefixes.values()), router
        for family, prefix in prefixes.items():
            best = per_prefix[prefix]
            where = f"{router} {prefix}"
            assert best["site"] == site, where
            assert best["as_path"] == [TOPOLOGY["sites"][site]["asn"]], where
            assert best["protocol"] == f"site_{site}", where
            assert best["next_hop"] == str(getattr(link, family).ip), where


def test_withdraw_moves_clients_to_failover_and_announce_brings_them_back(make_lab, tmp_path):
    handle = make_lab(static_copy(DEFAULT, tmp_path))
    lab = handle.up()
    control = names.speaker_socket(lab.journal.dir, "ams")
    moved = [c for c, site in EXPECTED.items() if site == "ams"]
    assert moved, "the default topology has a client of ams"

    answer = speaker(control, "withdraw")
    assert answer["ok"] and answer["state"] == "withdrawn"
    assert answer["detail"] == ["done", "done"]  # ExaBGP acknowledged both prefixes
    want = {c: (FAILOVER[c], FAILOVER[c]) if c in moved else (s, s)
            for c, s in EXPECTED.items()}
    wait_for(lambda: sites_seen(lab.plan) == want, timeout=10, message="clients to move")

    assert speaker(control, "announce")["state"] == "announced"
    back = {c: (s, s) for c, s in EXPECTED.items()}
    wait_for(lambda: sites_seen(lab.plan) == back, timeout=10, message="clients to return")


def test_killed_speaker_takes_its_route_away(make_lab):
    handle = make_lab()
    lab = handle.up()
    record = next(r for r in Journal(handle.name).owned().processes if r.name == "exabgp@ams")
    os.kill(record.pid, signal.SIGKILL)

    def route_gone() -> bool:
        best = best_paths(lab.plan, lab.journal.dir)["r-eu"]
        return all(b["site"] != "ams" for b in best.values())

    wait_for(route_gone, timeout=10, message="r-eu to drop the route from ams")
    wait_for(lambda: sites_seen(lab.plan)["c-eu"] == (FAILOVER["c-eu"],) * 2, timeout=10,
             message="c-eu to move to its failover site")
    handle.down()
    assert nothing_left(handle.name, handle.dir)
