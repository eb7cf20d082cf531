"""`catchment`: for every client, which site answers (from DNS identity) on each family,
the RTT, and the router path the packets take (traceroute with scapy).

A path is the names of the nodes that answered each TTL, None where nothing did. The
anycast address answers the last probe from whichever site the route leads to, so the
path never ends in that address: it ends in the site that answered (the site whose DNS
identity the client got, when that site hangs off the last router on the path; else the
router's one site, if it has one; else None). `path_text` writes a path for people:
`r-d > r-a > a1`, `?` for a silent hop, a run of N silent hops at the end as
`? (N silent hops)`."""

from __future__ import annotations

from typing import Any

from lab.host.labs import Lab
from lab.model.topology import Topology
from lab.observe.routing import client_sites
from probes.trace import trace


def named_path(hops: list[str | None], anycast: str, names: dict[str, str],
               answered: str | None, topo: Topology) -> list[str | None]:
    """Traceroute hops (addresses, None for silence) as node names, the anycast address at
    the end replaced by the site behind it (see the module docstring)."""
    path: list[str | None] = [names.get(h, h) if h else None for h in hops]
    if not hops or hops[-1] != anycast:
        return path
    before = path[-2] if len(path) > 1 else None
    behind = [s for s, site in topo.sites.items() if site.router == before]
    if answered is not None and (before is None or answered in behind):
        path[-1] = answered
    elif len(behind) == 1:
        path[-1] = behind[0]
    else:
        path[-1] = None
    return path


def path_text(path: list[str | None]) -> str:
    """['r-d', 'r-a', 'a1'] -> 'r-d > r-a > a1'; a silent hop is '?', a silent tail of N
    hops '? (N silent hops)'."""
    if not path:
        return "?"
    shown = list(path)
    tail = 0
    while shown and shown[-1] is None:
        shown.pop()
        tail += 1
    parts = [hop or "?" for hop in shown]
    if tail == 1:
        parts.append("?")
    elif tail > 1:
        parts.append(f"? ({tail} silent hops)")
    return " > ".join(parts)


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
                          "path": named_path(hops, address, names, ident.site,
                                             lab.topology)}
            ok &= ident.site in client.expect_sites
        clients[name] = entry
    return {"lab": lab.name, "anycast": plan.anycast, "clients": clients, "ok": ok}
