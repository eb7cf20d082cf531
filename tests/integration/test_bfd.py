"""BFD with real BIRDs: with 100 ms x 3 a silent blackhole moves a client to the other site
well within the hold time (the bound is derived from the BFD timers, with margin), and a
frozen BFD responder takes the site's BGP session down at its router; `status` shows it.
A heal (of the responder, or of a blackhole) returns once BFD is Up again in a state
entered after the heal, not one remembered from before the fault. With bgp.bfd.routers
the routers' sessions to each other run BFD too, Up at both ends."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from lab.host.birdctl import ask, parse_bfd_sessions, since_epoch
from lab.model import names
from lab.ops import faults
from lab.shared.dnsid import ask_identity

from .helpers import ROOT, LabHandle, lab_cli, unique_name, wait_for

INTERVAL_MS, MULTIPLIER = 100, 3
DETECT_S = INTERVAL_MS * MULTIPLIER / 1000
# Detection, then BGP's withdrawal and the client's next query: a second of margin on a
# loaded machine, still half the hold time (3 s) the lab would otherwise wait for.
BOUND_S = DETECT_S + 1.0
SITE, OTHER, CLIENT, ROUTER = "west", "east", "c-west", "r-west"


@pytest.fixture(scope="module")
def bfd_lab(tmp_path_factory):
    data = yaml.safe_load((ROOT / "topologies" / "two-sites.yaml").read_text())
    data["bgp"] = {"bfd": {"enabled": True, "interval_ms": INTERVAL_MS,
                           "multiplier": MULTIPLIER, "routers": True}}
    path = tmp_path_factory.mktemp("bfd") / "bfd.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    handle = LabHandle(unique_name("bfd"), path)
    try:
        yield handle.up()
    finally:
        handle.down()


def bfd_state(lab) -> dict:
    result = lab_cli("status", "--lab", lab.name, "--json")
    return json.loads(result.stdout)["sites"][SITE]["bfd"]


def site_answering(lab) -> str | None:
    return ask_identity(lab.plan.nodes[CLIENT].netns, str(lab.plan.anycast4.network_address),
                        timeout=0.05).site


def route_learned_at(lab) -> str | None:
    """When the router learned the site's IPv4 anycast route (BIRD's time of day)."""
    reply = ask(names.bird_socket(lab.journal.dir, ROUTER),
                f"show route for {lab.plan.anycast4} protocol {names.site_protocol(SITE)}")
    found = re.search(r"\[" + names.site_protocol(SITE) + r" (\S+)\]", reply.text)
    return found.group(1) if found else None


def test_bfd_is_up_and_blackhole_moves_the_client_within_the_bfd_bound(bfd_lab):
    lab = bfd_lab
    assert lab.topology.bgp.hold_time / 2 > BOUND_S
    wait_for(lambda: bfd_state(lab)["state"] == "Up", 10, message="BFD Up at the router")
    state = bfd_state(lab)
    assert (state["interval_ms"], state["multiplier"], state["responder"]) == (
        INTERVAL_MS, MULTIPLIER, "running")
    assert site_answering(lab) == SITE
    started = time.monotonic()
    faults.inject(lab, SITE, "blackhole")
    try:
        wait_for(lambda: site_answering(lab) == OTHER, BOUND_S, interval=0.005,
                 message=f"{CLIENT} answered by {OTHER} within {BOUND_S} s of the blackhole")
        moved_s = time.monotonic() - started
        print(f"blackhole with BFD {INTERVAL_MS} ms x {MULTIPLIER}: moved after "
              f"{moved_s * 1000:.0f} ms")
        assert bfd_state(lab)["state"] == "Down"
    finally:
        faults.heal(lab, SITE)
    wait_for(lambda: site_answering(lab) == SITE, 15, message=f"{CLIENT} back at {SITE}")
    wait_for(lambda: bfd_state(lab)["state"] == "Up", 10, message="BFD Up again")


def test_frozen_responder_takes_the_session_down_at_the_router(bfd_lab):
    lab = bfd_lab
    wait_for(lambda: bfd_state(lab)["state"] == "Up", 10, message="BFD Up at the router")
    learned = route_learned_at(lab)
    assert learned is not None
    result = lab_cli("fail", SITE, "bfd", "--lab", lab.name)
    assert result.returncode == 0, result.stderr
    try:
        wait_for(lambda: bfd_state(lab)["state"] == "Down", 10 * DETECT_S,
                 message="the router's BFD session Down")
        # BIRD dropped the site's BGP session (its route went) and let it come back:
        # the route the router holds now was learned after the fault.
        wait_for(lambda: route_learned_at(lab) not in (None, learned), 10,
                 message="the site's route withdrawn and learned again")
        status = json.loads(lab_cli("status", "--lab", lab.name, "--json").stdout)
        assert status["sites"][SITE]["bfd"]["responder"] == "frozen"
        assert any(f"{SITE}: BFD session is Down" in n for n in status["notes"])
    finally:
        result = lab_cli("heal", SITE, "bfd", "--lab", lab.name)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: bfd_state(lab)["state"] == "Up", 10, message="BFD Up after heal")


def test_bfd_fault_is_refused_where_bfd_is_off(default_lab):
    result = lab_cli("fail", "ams", "bfd", "--lab", default_lab.name)
    assert result.returncode == 2
    assert "BFD is off" in result.stderr and "Traceback" not in result.stderr


def bfd_sessions_at(ctl) -> dict:
    """address -> (state, since as a Unix time) of the BFD sessions BIRD at `ctl` holds."""
    now = time.time()
    return {s.address: (s.state, since_epoch(s.since, now))
            for s in parse_bfd_sessions(ask(ctl, "show bfd sessions").text)}


def both_ends(lab) -> tuple[tuple, tuple]:
    """The site's BFD session as its responder sees it, and as its router sees it."""
    node = lab.plan.nodes[SITE]
    responder = bfd_sessions_at(names.bfd_socket(lab.journal.dir, SITE))
    router = bfd_sessions_at(names.bird_socket(lab.journal.dir, ROUTER))
    return responder[str(node.gateway4)], router[str(node.interfaces[0].v4.ip)]


def test_heal_of_a_frozen_responder_returns_on_a_fresh_up(bfd_lab):
    lab = bfd_lab
    wait_for(lambda: bfd_state(lab)["state"] == "Up", 10, message="BFD Up at the router")
    faults.inject(lab, SITE, "bfd")
    try:
        wait_for(lambda: bfd_state(lab)["state"] == "Down", 10 * DETECT_S,
                 message="the router's BFD session Down")
    finally:
        healing = time.time()
        healed = faults.heal(lab, SITE, "bfd")
    (own, own_since), (router, router_since) = both_ends(lab)  # at once, in this process
    assert healed and healed[0]["ready"], healed
    # The responder, continued, still remembers the Up from before its freeze for a few
    # milliseconds: the heal must not have taken that for its answer. It says what it
    # saw at both ends.
    assert f"{ROUTER}: BFD session to" in healed[0]["detail"], healed[0]["detail"]
    print(f"after heal: responder {own} since {own_since}, router {router} since "
          f"{router_since} (heal at {healing:.3f}): {healed[0]['detail']}")
    assert own == "Up" and own_since >= healing - 0.01, healed[0]["detail"]
    assert router == "Up" and router_since >= healing - 0.01, healed[0]["detail"]


def test_heal_of_a_blackhole_returns_with_bfd_up_again(bfd_lab):
    lab = bfd_lab
    wait_for(lambda: bfd_state(lab)["state"] == "Up", 10, message="BFD Up at the router")
    faults.inject(lab, SITE, "blackhole")
    try:
        wait_for(lambda: bfd_state(lab)["state"] == "Down", 10 * DETECT_S,
                 message="the router's BFD session Down")
    finally:
        healing = time.time()
        healed = faults.heal(lab, SITE, "blackhole")
    # Asked at once, in this process: BFD comes back ~0.3-1 s after the drop is lifted
    # (its Down state sends one packet a second), so a heal that returned at the lift
    # would be seen here with the router's session still Down.
    _, (router, router_since) = both_ends(lab)
    assert healed and healed[0]["ready"], healed
    assert router == "Up" and router_since >= healing - 0.01, (router, healed[0]["detail"])
    assert f"{ROUTER}: BFD session to" in healed[0]["detail"]


def test_router_sessions_run_bfd_at_both_ends(bfd_lab):
    lab = bfd_lab
    routers = lab.topology.routers

    def all_up() -> bool:
        status = json.loads(lab_cli("status", "--lab", lab.name, "--json").stdout)
        return all(st == "Up" for r in routers
                   for fams in (status["routers"][r]["bfd"] or {"-": {"-": "none"}}).values()
                   for st in fams.values())

    wait_for(all_up, 15, interval=0.2, message="every router-router BFD session Up")
    status = json.loads(lab_cli("status", "--lab", lab.name, "--json").stdout)
    assert status["routers"]["r-west"]["bfd"] == {"r-east": {"v4": "Up", "v6": "Up"}}
    assert status["routers"]["r-east"]["bfd"] == {"r-west": {"v4": "Up", "v6": "Up"}}
    # BIRD's own word at r-west: sessions to r-east's IPv4 and IPv6 link addresses.
    east = lab.plan.nodes["r-east"].iface("r-west")
    held = bfd_sessions_at(names.bird_socket(lab.journal.dir, "r-west"))
    assert held[str(east.v4.ip)][0] == "Up" and held[str(east.v6.ip)][0] == "Up"
