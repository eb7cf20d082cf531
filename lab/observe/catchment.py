"""`catchment`: for every client, which site answers (from DNS identity) on each family,
the RTT, and the router path the packets take (traceroute with scapy)."""

from __future__ import annotations

from typing import Any

from lab.host.labs import Lab
from lab.observe.routing import client_sites
from probes.trace import trace


def collect(lab: Lab) -> dict[str, Any]:
    assert lab.plan is not None and lab.topology is not None
    plan = lab.plan
    answers = client_sites(plan)
    names = plan.node_by_address()
    clients: dict[str, Any] = {}
    ok = True
    for name, client in lab.topology.clients.items():
        netns = plan.nodes[name].netns
        entry: dict[str, Any] = {"expected": client.expect}
        for fam, address in (("ipv4", str(plan.anycast4.network_address)),
                             ("ipv6", str(plan.anycast6.network_address))):
            ident = answers[name]["v4" if fam == "ipv4" else "v6"]
            hops = trace(netns, address)
            entry[fam] = {"site": ident.site, "rtt_ms": ident.rtt_ms, "error": ident.error,
                          "path": [names.get(h, h) if h else None for h in hops]}
            ok &= ident.site in client.expect_sites
        clients[name] = entry
    return {"lab": lab.name, "anycast": plan.anycast, "clients": clients, "ok": ok}
