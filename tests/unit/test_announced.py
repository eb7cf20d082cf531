"""Which site is announced: the routes its router holds (parsed from BIRD), compared with
what the site's speaker says it announces."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.host.birdctl import parse_routes
from lab.model.plan import AddressPlan
from lab.observe.routing import held_from_sites
from lab.observe.status import announcement

REPO = Path(__file__).resolve().parents[2]
PREFIX = "203.0.113.53/32"

# `birdc show route for 203.0.113.53/32 all` on r-eu of the default lab: its own site
# (best), and the two paths through the other routers.
R_EU = """BIRD 2.0.12 ready.
Table master4:
203.0.113.53/32      unicast [site_ams 17:01:13.753] * (100) [AS65100i]
\tvia 100.64.0.7 on ams
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65100
\tBGP.next_hop: 100.64.0.7
\tBGP.local_pref: 100
                     unicast [r_r_us_4 17:01:09.495] (100) [AS65100i]
\tvia 100.64.0.1 on r-us
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65020 65100
\tBGP.next_hop: 100.64.0.1
\tBGP.local_pref: 100
                     unicast [r_r_ap_4 17:01:09.642] (100) [AS65100i]
\tvia 100.64.0.4 on r-ap
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65030 65100
\tBGP.next_hop: 100.64.0.4
\tBGP.local_pref: 100
"""
# The same while ams is drained: its GRACEFUL_SHUTDOWN route is held but not best.
R_EU_DRAINED = """BIRD 2.0.12 ready.
Table master4:
203.0.113.53/32      unicast [r_r_us_4 17:01:09.495] * (100) [AS65100i]
\tvia 100.64.0.1 on r-us
\tBGP.as_path: 65020 65100
\tBGP.local_pref: 100
                     unicast [site_ams 17:05:13.753] (100) [AS65100i]
\tvia 100.64.0.7 on ams
\tBGP.as_path: 65100
\tBGP.community: (65535,0)
\tBGP.local_pref: 0
"""


def test_every_route_is_parsed_with_the_best_one_marked():
    routes = parse_routes(R_EU, PREFIX)
    assert [(r.protocol, r.primary, r.next_hop) for r in routes] == [
        ("site_ams", True, "100.64.0.7"), ("r_r_us_4", False, "100.64.0.1"),
        ("r_r_ap_4", False, "100.64.0.4")]
    assert routes[1].as_path == [65020, 65100]


def test_no_route_parses_to_nothing():
    assert parse_routes("BIRD 2.0.12 ready.\nNetwork not found\n", PREFIX) == []
    assert parse_routes("", PREFIX) == []  # BIRD not answering


@pytest.fixture(scope="module")
def plan(default_plan: AddressPlan) -> AddressPlan:
    return default_plan


def test_a_site_is_held_from_its_own_session_best_or_not(plan):
    v6 = str(plan.anycast6)
    routes = {("r-eu", PREFIX): parse_routes(R_EU_DRAINED, PREFIX), ("r-eu", v6): [],
              ("r-us", PREFIX): [], ("r-us", v6): []}
    held = held_from_sites(plan, routes)
    assert held["ams"] == {"v4": True, "v6": False}  # held though r-us's path is best
    assert held["nyc"] == {"v4": False, "v6": False}  # r-eu's path via r-us is not nyc's
    assert held["sin"] == {"v4": False, "v6": False}  # r-ap answered nothing


# ams's health is down under the backup-route policy: the /32 is withdrawn and BIRD's
# `show route for 203.0.113.53/32` answers with ams's covering /24.
R_EU_BACKUP_ONLY = """BIRD 2.0.12 ready.
Table master4:
203.0.113.0/24       unicast [site_ams 17:01:13.753] * (100) [AS65100i]
\tvia 100.64.0.7 on ams
\tBGP.as_path: 65100
\tBGP.local_pref: 100
"""


def test_a_covering_backup_route_is_not_the_anycast_prefix(plan):
    v6 = str(plan.anycast6)
    routes = {("r-eu", PREFIX): parse_routes(R_EU_BACKUP_ONLY, PREFIX), ("r-eu", v6): []}
    assert routes[("r-eu", PREFIX)][0].protocol == "site_ams"
    assert held_from_sites(plan, routes)["ams"] == {"v4": False, "v6": False}
    routes[("r-eu", PREFIX)] = parse_routes(R_EU, PREFIX)
    assert held_from_sites(plan, routes)["ams"]["v4"] is True


BOTH = ("v4", "v6")


def test_router_and_speaker_agree():
    seen = announcement("ams", "r-eu", {"v4": True, "v6": True}, BOTH, "announced")
    assert (seen.announced, seen.speaker_announced, seen.disagreement) == (True, True, None)
    seen = announcement("ams", "r-eu", {"v4": False, "v6": False}, BOTH, "withdrawn")
    assert (seen.announced, seen.speaker_announced, seen.disagreement) == (False, False, None)


def test_speaker_says_announced_but_the_router_holds_nothing():
    seen = announcement("ams", "r-eu", {"v4": False, "v6": False}, BOTH, "announced")
    assert seen.announced is False and seen.speaker_announced is True
    assert seen.disagreement == ("ams: speaker says announced, router r-eu holds no route "
                                 "from ams")


def test_one_family_missing_is_not_announced_and_named():
    seen = announcement("ams", "r-eu", {"v4": True, "v6": False}, BOTH, "announced-gshut")
    assert seen.announced is False and seen.by_family == {"v4": True, "v6": False}
    assert seen.speaker_announced is True
    assert seen.disagreement is not None and seen.disagreement.endswith("from ams for v6")


def test_router_still_holds_what_the_speaker_withdrew():
    seen = announcement("nyc", "r-us", {"v4": True, "v6": False}, BOTH, "withdrawn")
    assert seen.announced is False and seen.speaker_announced is False
    assert seen.disagreement == ("nyc: speaker says withdrawn, router r-us still holds its "
                                 "route (v4)")


@pytest.mark.parametrize("speaker", [None, "unknown"])
def test_a_speaker_that_cannot_say_is_not_compared(speaker):
    seen = announcement("ams", "r-eu", {"v4": True}, ("v4",), speaker)
    assert seen.announced is True and seen.speaker_announced is None
    assert seen.disagreement is None


def test_only_the_announced_families_count():
    """ExaBGP's bundled healthcheck announces IPv4 only: no IPv6 route is expected."""
    seen = announcement("ams", "r-eu", {"v4": True, "v6": False}, ("v4",), None)
    assert seen.announced is True and seen.by_family == {"v4": True}
