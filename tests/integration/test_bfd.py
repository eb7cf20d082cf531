"""BFD with real BIRDs: with 100 ms x 3 a silent blackhole moves a client to the other site
well within the hold time (the bound is derived from the BFD timers, with margin), and a
frozen BFD responder takes the site's BGP session down at its router; `status` shows it."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from lab.host.birdctl import ask
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
                           "multiplier": MULTIPLIER}}
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
