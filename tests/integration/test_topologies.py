"""The teaching topologies (topologies/two-sites.yaml, topologies/twelve-sites.yaml) do
what their files say: every client is answered by its `expect:` site on both families,
moves to its `failover:` site when that site withdraws, and comes back on announce.

Expectations come from the topology files themselves, never from code here.
"""

from __future__ import annotations

import time

import pytest
import yaml

from lab.model import names
from lab.shared.speaker_client import command as speaker

from .helpers import ROOT, nothing_left, sites_seen, static_copy, wait_for

TOPOLOGIES = ROOT / "topologies"
# One client per topology whose expected site is withdrawn and re-announced.
CASES = [("two-sites.yaml", "c-west"), ("twelve-sites.yaml", "c-east")]


def both(site: str | None) -> tuple[str | None, str | None]:
    return (site, site)


@pytest.mark.parametrize(("file", "client"), CASES, ids=[f for f, _ in CASES])
def test_catchment_and_failover_are_as_the_file_says(make_lab, tmp_path, file: str,
                                                     client: str):
    path = TOPOLOGIES / file
    clients = yaml.safe_load(path.read_text())["clients"]
    expected = {name: c["expect"] for name, c in clients.items()}
    failover = {name: c["failover"] for name, c in clients.items()}
    assert client in clients and failover[client], f"{file} has no failover for {client}"

    # Health daemons off: this test withdraws and re-announces by hand (pure BGP).
    handle = make_lab(static_copy(path, tmp_path), prefix="tp")
    started = time.monotonic()
    lab = handle.up()
    print(f"{file}: up in {time.monotonic() - started:.2f} s "
          f"(converged in {lab.state.get('converge_s')} s)")  # shown with pytest -rP
    assert lab.plan is not None

    # Every client, both families, answered by its expected site.
    home = {c: both(s) for c, s in expected.items()}
    assert sites_seen(lab.plan) == home

    # Withdraw the client's site: it (and every other client of that site) moves to its
    # failover site; every other client stays where it was.
    gone = expected[client]
    control = names.speaker_socket(lab.journal.dir, gone)
    # As in test_routing.py: the site's speaker API process, over its control socket.
    answer = speaker(control, "withdraw")
    assert answer["ok"] and answer["state"] == "withdrawn", answer
    assert answer["detail"] == ["done", "done"]  # ExaBGP acknowledged both prefixes
    moved = {c: both(failover[c]) if s == gone else both(s) for c, s in expected.items()}
    assert moved[client] == both(failover[client])
    wait_for(lambda: sites_seen(lab.plan) == moved, timeout=15,
             message=f"{client} to move from {gone} to {failover[client]}")

    # Announce again: everyone is back home.
    answer = speaker(control, "announce")
    assert answer["ok"] and answer["state"] == "announced", answer
    wait_for(lambda: sites_seen(lab.plan) == home, timeout=15,
             message=f"{client} to come back to {gone}")

    handle.down()
    assert nothing_left(handle.name, handle.dir)
