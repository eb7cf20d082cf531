"""The BIRD parsers against answers captured from real BIRD 2.0.12 (tests/unit/data/bird/,
its README says how each was made): sessions in every state, best routes and their
alternatives, ECMP routes with several next hops, withdrawn routes, both families; and
the two readers built on them (sessions, best paths) fed those answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab.host.birdctl import (
    BirdUnavailable,
    Reply,
    bgp_state,
    fib_route_command,
    parse_best_route,
    parse_protocols,
    parse_routes,
)
from lab.model import load_text
from lab.model.names import KERNEL_PROTOCOLS
from lab.model.plan import build_plan
from lab.observe import routing as observe
from lab.render.bird import render_bird

DATA = Path(__file__).parent / "data" / "bird"
REPO = Path(__file__).resolve().parents[2]
V4, V6 = "203.0.113.53/32", "2001:db8:53::53/128"
ECMP4 = ["100.64.0.1", "100.64.0.4"]          # r-eu's neighbours r-us and r-ap
ECMP6 = ["fd00:a11c:ab::2", "fd00:a11c:ab:2::1"]


def answer(name: str) -> str:
    return (DATA / name).read_text()


def states(name: str) -> dict[str, tuple[str, str]]:
    """protocol -> (BIRD state, BGP state as the lab reports it)."""
    return {p.name: (p.state, bgp_state(p)) for p in parse_protocols(answer(name))}


def _topology(ecmp: bool):
    data = yaml.safe_load((REPO / "topologies" / "default.yaml").read_text())
    data["bgp"] = {"ecmp": ecmp}
    report = load_text(yaml.safe_dump(data), "<bird parsers>")
    assert report.ok and report.topology is not None
    return report.topology


# --- show protocols -----------------------------------------------------------------------

def test_every_protocol_of_an_established_router():
    got = states("protocols-established.txt")
    assert got == {
        "device1": ("up", "Established"), "direct1": ("up", "Established"),
        "kernel4": ("up", "Established"), "kernel6": ("up", "Established"),
        "r_r_us_4": ("up", "Established"), "r_r_us_6": ("up", "Established"),
        "r_r_ap_4": ("up", "Established"), "r_r_ap_6": ("up", "Established"),
        "site_ams": ("up", "Established"),
    }
    kernel4 = next(p for p in parse_protocols(answer("protocols-established.txt"))
                   if p.name == "kernel4")
    assert (kernel4.proto, kernel4.info) == ("Kernel", "")


@pytest.mark.parametrize("name, expected", [
    ("protocols-broken-r-eu.txt", {"site_ams": ("start", "Active"),
                                   "r_r_us_4": ("down", "down"),
                                   "r_r_us_6": ("up", "Established")}),
    ("protocols-broken-r-us.txt", {"site_nyc": ("start", "Connect"),
                                   "r_r_eu_4": ("start", "Active"),
                                   "r_r_ap_4": ("up", "Established")}),
    ("protocols-broken-r-ap.txt", {"site_sin": ("start", "Idle")}),
    ("protocols-standalone.txt", {"silent_peer": ("start", "OpenSent"),
                                  "open_only_peer": ("start", "OpenConfirm"),
                                  "wrong_as_peer": ("start", "Idle"),
                                  "passive_peer": ("start", "Passive"),
                                  "disabled_peer": ("down", "down")}),
])
def test_session_states(name, expected):
    got = states(name)
    assert {k: got.get(k) for k in expected} == expected


def test_info_keeps_the_reason_after_the_state():
    info = {p.name: p.info for p in parse_protocols(answer("protocols-broken-r-us.txt"))}
    assert info["site_nyc"].split(None, 1) == ["Connect", "BGP Error: Hold timer expired"]
    assert info["r_r_eu_4"].split(None, 1) == ["Active", "Socket: Connection reset by peer"]
    standalone = {p.name: p.info for p in parse_protocols(answer("protocols-standalone.txt"))}
    assert standalone["wrong_as_peer"].split(None, 1) == ["Idle", "BGP Error: Bad peer AS"]
    assert standalone["disabled_peer"] == ""


@pytest.mark.parametrize("name, protocols", [
    ("protocols-all-established.txt", ["site_ams"]),
    ("protocols-all-standalone.txt", ["device1", "silent_peer", "open_only_peer",
                                      "wrong_as_peer", "passive_peer", "disabled_peer"]),
])
def test_detail_lines_of_show_protocols_all_are_not_protocols(name, protocols):
    # "Route change stats: received rejected ..." has enough columns to pass for a row.
    assert [p.name for p in parse_protocols(answer(name))] == protocols


def test_names_wider_than_the_column_still_parse():
    protos = {p.name: p for p in parse_protocols(answer("protocols-standalone.txt"))}
    assert protos["open_only_peer"].proto == "BGP"


# --- show route ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, prefix, hop, iface", [
    ("route4-best-with-alternatives.txt", V4, "100.64.0.7", "ams"),
    ("route6-best-with-alternatives.txt", V6, "fd00:a11c:ab:3::2", "ams"),
    ("route4-export-single.txt", V4, "100.64.0.7", "ams"),
])
def test_best_route_from_the_own_site(name, prefix, hop, iface):
    best = parse_best_route(answer(name), prefix)
    assert best is not None
    assert (best.protocol, best.next_hop, best.interface) == ("site_ams", hop, iface)
    assert best.next_hops == [hop]
    assert (best.as_path, best.local_pref, best.communities) == ([65100], 100, [])
    assert best.net == prefix and best.prefix == prefix and best.primary


@pytest.mark.parametrize("family, prefix", [(4, V4), (6, V6)])
def test_alternatives_follow_the_best_route(family, prefix):
    routes = parse_routes(answer(f"route{family}-best-with-alternatives.txt"))
    first, *others = [(r.protocol, r.primary, r.as_path) for r in routes]
    assert first == ("site_ams", True, [65100])
    assert sorted(others) == [(f"r_r_ap_{family}", False, [65030, 65100]),
                              (f"r_r_us_{family}", False, [65020, 65100])]
    assert {r.net for r in routes} == {prefix}  # continuation lines carry no prefix


@pytest.mark.parametrize("name, prefix", [("route4-draining-alternative.txt", V4),
                                          ("route6-draining-alternative.txt", V6)])
def test_draining_site_is_an_alternative_with_graceful_shutdown(name, prefix):
    routes = {r.protocol: r for r in parse_routes(answer(name), prefix)}
    draining = routes["site_ams"]
    assert not draining.primary
    assert (draining.communities, draining.local_pref) == (["65535:0"], 0)
    best = parse_best_route(answer(name), prefix)
    assert best is not None and best.protocol.startswith("r_r_us_")
    assert best.communities == [] and best.local_pref == 100


@pytest.mark.parametrize("name, prefix, hops", [("route4-ecmp-export.txt", V4, ECMP4),
                                                ("route6-ecmp-export.txt", V6, ECMP6)])
def test_ecmp_route_keeps_every_next_hop(name, prefix, hops):
    best = parse_best_route(answer(name), prefix)
    assert best is not None
    assert best.next_hops == hops
    assert (best.next_hop, best.interface) == (hops[0], "r-us")
    assert best.as_path == [65020, 65100]


@pytest.mark.parametrize("name, prefix, hops", [("route4-ecmp-table.txt", V4, ECMP4),
                                                ("route6-ecmp-table.txt", V6, ECMP6)])
def test_the_table_holds_one_route_per_equal_path(name, prefix, hops):
    # Why the lab asks the kernel protocol's export: the table never shows the merge.
    routes = parse_routes(answer(name), prefix)
    assert [r.next_hops for r in routes] == [[h] for h in hops]
    assert len({len(r.as_path) for r in routes}) == 1


def test_connected_prefix_has_an_interface_and_no_next_hop():
    direct, learned = parse_routes(answer("route4-link-prefix.txt"))
    assert (direct.protocol, direct.primary, direct.next_hop, direct.interface) == (
        "direct1", True, None, "r-us")
    assert direct.next_hops == [] and direct.as_path == []
    assert (learned.protocol, learned.next_hop, learned.as_path) == (
        "r_r_us_4", "100.64.0.1", [65020])


@pytest.mark.parametrize("name", ["route4-withdrawn.txt", "route6-withdrawn.txt",
                                  "route4-export-withdrawn.txt"])
def test_withdrawn_prefix_has_no_route(name):
    assert "Network not found" in answer(name)
    assert parse_routes(answer(name)) == []
    assert parse_best_route(answer(name), V4) is None


def test_no_answer_at_all_is_no_route():
    assert parse_best_route("", V4) is None  # birdc failed (exit 1 for "not found")
    assert parse_protocols("") == []


# --- what the lab asks, and the readers built on the parsers -------------------------------

def test_fib_route_command_names_our_kernel_protocols():
    assert fib_route_command(V4) == f"show route for {V4} export kernel4 all"
    assert fib_route_command(V6) == f"show route for {V6} export kernel6 all"
    topo = _topology(ecmp=True)
    plan = build_plan(topo)
    config = render_bird(topo, plan, plan.nodes["r-eu"])
    for name in KERNEL_PROTOCOLS.values():
        assert f"protocol kernel {name} {{" in config


class FakeBirds:
    """The lab's BIRDs, answering from captured files: (router, command) -> file; BIRD
    does not answer any other question."""

    def __init__(self, files: dict[tuple[str, str], str]) -> None:
        self.files = files

    def ask(self, router: str, command: str) -> Reply:
        name = self.files.get((router, command))
        if name is None:
            raise BirdUnavailable(Path(router), "not captured")
        return Reply(0, tuple((1000, line) for line in answer(name).splitlines()))


def test_best_paths_report_every_ecmp_next_hop(tmp_path):
    files = {("r-eu", fib_route_command(V4)): "route4-ecmp-export.txt",
             ("r-eu", fib_route_command(V6)): "route6-ecmp-export.txt"}
    for router in ("r-us", "r-ap"):
        files[(router, fib_route_command(V4))] = f"route4-ecmp-export-{router}.txt"
        files[(router, fib_route_command(V6))] = f"route6-ecmp-export-{router}.txt"
    paths = observe.best_paths(build_plan(_topology(ecmp=True)), tmp_path, FakeBirds(files))
    r_eu = paths["r-eu"]
    assert r_eu[V4]["next_hops"] == ECMP4 and r_eu[V6]["next_hops"] == ECMP6
    assert r_eu[V4]["next_hop"] == ECMP4[0]
    assert r_eu[V4]["site"] == "nyc" and r_eu[V6]["site"] == "nyc"  # along the first hop
    assert paths["r-us"][V4]["site"] == "nyc" and paths["r-ap"][V6]["site"] == "sin"
    assert set(r_eu[V4]) == {"site", "sites", "next_hop_sites", "next_hop", "next_hops",
                             "as_path", "protocol", "communities", "local_pref"}
    # Every equal-cost next hop, each with the site it leads to.
    assert r_eu[V4]["next_hop_sites"] == {ECMP4[0]: ["nyc"], ECMP4[1]: ["sin"]}
    assert r_eu[V6]["next_hop_sites"] == {ECMP6[0]: ["nyc"], ECMP6[1]: ["sin"]}
    assert r_eu[V4]["sites"] == ["nyc", "sin"]
    assert paths["r-us"][V4]["sites"] == ["nyc"]


def test_sessions_read_the_broken_routers(tmp_path):
    files = {(f"r-{r}", "show protocols"): f"protocols-broken-r-{r}.txt"
             for r in ("eu", "us", "ap")}
    got = {(s.router, s.protocol): s.state
           for s in observe.sessions(build_plan(_topology(ecmp=True)), tmp_path,
                                     FakeBirds(files))}
    assert got[("r-eu", "site_ams")] == "Active"
    assert got[("r-eu", "r_r_us_4")] == "down"
    assert got[("r-us", "r_r_eu_4")] == "Active"
    assert got[("r-us", "site_nyc")] == "Connect"
    assert got[("r-ap", "site_sin")] == "Idle"
    assert got[("r-ap", "r_r_eu_6")] == "Established"
    assert len(got) == 15  # 3 links x 2 ends x 2 families, and 3 site sessions
