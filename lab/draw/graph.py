"""The topology graph, as data: a pure function from a lab's topology and address plan (and,
for a running lab, its `status --json` report) to nodes and edges. DOT and Mermaid text
are made from this model (`lab.draw.text`); nothing here draws or asks the lab.

Nodes: routers, sites and clients (role, name, AS number). Edges:
- `link`: every link of the address plan (router-to-router with its impairments, from
  the topology and from run-time `impair`; a site's and a client's attachment);
  `best` lists the families ("ipv4", "ipv6") whose best path to the anycast prefix
  leaves `a` for `b` (or `b` for `a`: `towards` says which end it points at);
- `answer`: with a status report, client -> each site that answered it, per family,
  with the share of its queries under ECMP.

A site's `state` (with a status report): `faulted` (a fault of `fail` in force), else
`drained`, else `announced` (its router holds its route for every prefix), else
`withdrawn` (`unknown` when the report lacks the site); without a report, no state."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lab.model.plan import AddressPlan
from lab.model.topology import Impairment, Topology

FAMILIES = {"v4": "ipv4", "v6": "ipv6"}


@dataclass(frozen=True)
class Node:
    name: str
    role: str  # router, site, client
    asn: int | None = None
    state: str | None = None  # sites only: announced, withdrawn, drained, faulted, unknown
    detail: str = ""  # one short line under the name: "faulted: dns", "health down"


@dataclass(frozen=True)
class Edge:
    kind: str  # link, answer
    a: str
    b: str
    label: str = ""
    link: str = ""  # link: the kind of link (core, site, client)
    best: tuple[str, ...] = ()  # link: the families whose best path uses it
    towards: str = ""  # link: the end the best path points at
    families: dict[str, float] = field(default_factory=dict)  # answer: family -> share


@dataclass
class Graph:
    lab: str
    anycast: list[str]
    nodes: list[Node]
    edges: list[Edge]
    live: bool  # drawn with a running lab's state

    def to_json(self) -> dict[str, Any]:
        return {"lab": self.lab, "anycast": self.anycast, "live": self.live,
                "nodes": [asdict(n) for n in self.nodes],
                "edges": [asdict(e) for e in self.edges]}

    def count(self, kind: str) -> int:
        return sum(1 for e in self.edges if e.kind == kind)


def impairment_text(imp: Impairment | dict[str, Any] | None) -> str:
    """'delay 20ms ±5ms, loss 1%, rate 10mbit' (empty without an impairment)."""
    if imp is None:
        return ""
    get = imp.get if isinstance(imp, dict) else (lambda k: getattr(imp, k, None))
    parts = []
    if get("delay"):
        parts.append(f"delay {get('delay')}" + (f" ±{get('jitter')}" if get("jitter") else ""))
    if get("loss"):
        parts.append(f"loss {get('loss'):g}%")
    if get("rate"):
        parts.append(f"rate {get('rate')}")
    return ", ".join(parts)


def site_state(site: dict[str, Any]) -> tuple[str, str]:
    """(state, detail) of one site of a status report."""
    faults = [f.get("fault") for f in site.get("faults") or [] if f.get("fault")]
    routed = "announced" if site.get("announced") else "withdrawn"
    if faults:
        return "faulted", f"{', '.join(faults)}; {routed}"
    if site.get("drained"):
        return "drained", routed
    health = site.get("health")
    detail = f"health {health}" if health and health not in ("up", "static") else ""
    return routed, detail


def build(topo: Topology, plan: AddressPlan, status: dict[str, Any] | None = None) -> Graph:
    """The graph of a lab: its topology, and with `status` its live state."""
    sites = (status or {}).get("sites", {})
    nodes = []
    for name, node in plan.nodes.items():
        state, detail = None, ""
        if node.role == "site" and status is not None:
            state, detail = site_state(sites[name]) if name in sites else ("unknown", "")
        nodes.append(Node(name, node.role, node.asn, state, detail))
    best = best_links(plan, status) if status else {}
    run_time = (status or {}).get("impairments") or {}
    edges = []
    for link in plan.links:
        label = impairment_text(run_time.get(link.name)) or impairment_text(link.impair)
        if link.name in run_time and label:
            label += " (impair)"
        families, towards = best.get(frozenset((link.a, link.b)), ((), ""))
        edges.append(Edge("link", link.a, link.b, label, link.kind, families, towards))
    if status:
        edges += answer_edges(status)
    return Graph(topo.name, plan.anycast, nodes, edges, status is not None)


def best_links(plan: AddressPlan, status: dict[str, Any]
               ) -> dict[frozenset[str], tuple[tuple[str, ...], str]]:
    """The links the routers' best paths to the anycast prefixes leave by: {the link's two
    ends: (families, the end the path points at)}, every next hop under ECMP."""
    by_address = plan.node_by_address()
    family_of = {plan.anycast[0]: "ipv4", plan.anycast[1]: "ipv6"}
    found: dict[frozenset[str], tuple[set[str], str]] = {}
    for router, prefixes in (status.get("routers") or {}).items():
        for prefix, best in (prefixes.get("best") or {}).items():
            hops = best.get("next_hops") or ([best["next_hop"]] if best.get("next_hop") else [])
            for hop in hops:
                peer = by_address.get(hop)
                if peer is None or router not in plan.nodes:
                    continue
                key = frozenset((router, peer))
                fams, _ = found.get(key, (set(), peer))
                fams.add(family_of.get(prefix, prefix))
                found[key] = (fams, peer)
    return {k: (tuple(sorted(f)), towards) for k, (f, towards) in found.items()}


def answer_edges(status: dict[str, Any]) -> list[Edge]:
    """Client -> site for each site that answered it: per family its share of the
    queries (1.0 without ECMP; the distribution of `sites`/`sites6` under ECMP)."""
    edges = []
    for client, c in (status.get("clients") or {}).items():
        shares: dict[str, dict[str, float]] = {}
        for fam, key, spread_key in (("ipv4", "site", "sites"), ("ipv6", "site6", "sites6")):
            spread = {s: n for s, n in (c.get(spread_key) or {}).items() if s != "none"}
            total = sum((c.get(spread_key) or {}).values())
            if spread and total:
                for site, n in spread.items():
                    shares.setdefault(site, {})[fam] = round(n / total, 3)
            elif c.get(key):
                shares.setdefault(c[key], {})[fam] = 1.0
        for site, fams in sorted(shares.items()):
            edges.append(Edge("answer", client, site, answer_label(fams), families=fams))
    return edges


def answer_label(families: dict[str, float]) -> str:
    """'v4 v6', or with shares under ECMP 'v4 56% v6 100%'."""
    if all(share == 1.0 for share in families.values()):
        return " ".join(f.replace("ip", "") for f in families)
    return " ".join(f"{f.replace('ip', '')} {share:.0%}" for f, share in families.items())
