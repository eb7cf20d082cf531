"""The address plan: a pure, deterministic function from a validated topology to every
namespace, interface and address the lab will have.

Link order is fixed: router-to-router links in file order, then each site's attachment,
then each client's attachment, then the issuer's (last, so that adding an issuer moves
no other address). Link i gets the i-th /31 of `pools.links4` and the i-th /64 of
`pools.links6`; its first end (the router, for attachments) takes the lower
address. An interface is named after the node at its other end, so `ip -br addr` in
router r-eu shows `r-us`, `ams`, `c-eu`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from lab.model.errors import BadInput
from lab.model.names import netns_name
from lab.model.topology import Impairment, Topology

Role = Literal["router", "site", "client", "issuer"]
LinkKind = Literal["core", "site", "client", "issuer"]


@dataclass(frozen=True)
class Interface:
    node: str
    ifname: str
    peer: str
    peer_ifname: str
    v4: ipaddress.IPv4Interface
    v6: ipaddress.IPv6Interface
    link: int


@dataclass(frozen=True)
class LinkPlan:
    index: int
    kind: LinkKind
    a: str
    b: str
    net4: ipaddress.IPv4Network
    net6: ipaddress.IPv6Network
    impair: Impairment | None = None

    @property
    def name(self) -> str:
        return f"{self.a}--{self.b}"


@dataclass
class NodePlan:
    name: str
    role: Role
    netns: str
    asn: int | None = None
    router_id: str | None = None
    router: str | None = None  # the router a site or client attaches to
    interfaces: list[Interface] = field(default_factory=list)
    gateway4: ipaddress.IPv4Address | None = None
    gateway6: ipaddress.IPv6Address | None = None

    def iface(self, peer: str) -> Interface:
        return next(i for i in self.interfaces if i.peer == peer)


@dataclass
class AddressPlan:
    lab: str
    anycast4: ipaddress.IPv4Network
    anycast6: ipaddress.IPv6Network
    nodes: dict[str, NodePlan]
    links: list[LinkPlan]

    def by_role(self, role: Role) -> list[NodePlan]:
        return [n for n in self.nodes.values() if n.role == role]

    @property
    def anycast(self) -> list[str]:
        return [str(self.anycast4), str(self.anycast6)]

    @property
    def issuer(self) -> NodePlan | None:
        """The lab's issuer node, or None for a lab without one."""
        found = self.by_role("issuer")
        return found[0] if found else None

    def node_by_address(self) -> dict[str, str]:
        """Every interface address of the lab (both families, as text) -> its node."""
        return {str(ip): n.name for n in self.nodes.values() for i in n.interfaces
                for ip in (i.v4.ip, i.v6.ip)}


def require_site(plan: AddressPlan, name: str) -> NodePlan:
    """The site called `name`; BadInput naming the lab's sites when there is none."""
    node = plan.nodes.get(name)
    if node is None or node.role != "site":
        sites = ", ".join(n.name for n in plan.by_role("site"))
        raise BadInput(f"unknown site '{name}' (sites: {sites})")
    return node


def build_plan(topo: Topology) -> AddressPlan:
    """Every namespace, link and address of the lab (topology must be validated)."""
    pool4 = ipaddress.IPv4Network(topo.pools.links4)
    pool6 = ipaddress.IPv6Network(topo.pools.links6)
    nodes: dict[str, NodePlan] = {}
    for name, r in topo.routers.items():
        nodes[name] = NodePlan(name, "router", netns_name(topo.name, name), asn=r.asn,
                               router_id=r.router_id)
    for name, s in topo.sites.items():
        nodes[name] = NodePlan(name, "site", netns_name(topo.name, name), asn=s.asn,
                               router=s.router)
    for name, c in topo.clients.items():
        nodes[name] = NodePlan(name, "client", netns_name(topo.name, name), router=c.router)
    if topo.issuer is not None:
        nodes[topo.issuer.name] = NodePlan(topo.issuer.name, "issuer",
                                           netns_name(topo.name, topo.issuer.name),
                                           router=topo.issuer.router)

    pairs: list[tuple[LinkKind, str, str, Impairment | None]] = [
        ("core", ln.endpoints[0], ln.endpoints[1], ln.impair) for ln in topo.links]
    pairs += [("site", s.router, name, None) for name, s in topo.sites.items()]
    pairs += [("client", c.router, name, None) for name, c in topo.clients.items()]
    if topo.issuer is not None:
        pairs.append(("issuer", topo.issuer.router, topo.issuer.name, None))

    subnets4 = pool4.subnets(new_prefix=31)
    subnets6 = pool6.subnets(new_prefix=64)
    links: list[LinkPlan] = []
    for index, (kind, a, b, impair) in enumerate(pairs):
        net4, net6 = next(subnets4), next(subnets6)
        link = LinkPlan(index, kind, a, b, net4, net6, impair)
        links.append(link)
        a4 = ipaddress.IPv4Interface(f"{net4.network_address}/31")
        b4 = ipaddress.IPv4Interface(f"{net4.network_address + 1}/31")
        a6 = ipaddress.IPv6Interface(f"{net6.network_address + 1}/64")
        b6 = ipaddress.IPv6Interface(f"{net6.network_address + 2}/64")
        nodes[a].interfaces.append(Interface(a, b, b, a, a4, a6, index))
        nodes[b].interfaces.append(Interface(b, a, a, b, b4, b6, index))
        if kind != "core":
            nodes[b].gateway4, nodes[b].gateway6 = a4.ip, a6.ip

    for node in nodes.values():
        if node.router_id is None and node.role in ("router", "site") and node.interfaces:
            node.router_id = str(node.interfaces[0].v4.ip)
    return AddressPlan(topo.name, ipaddress.IPv4Network(topo.anycast.ipv4),
                       ipaddress.IPv6Network(topo.anycast.ipv6), nodes, links)


def find_link(plan: AddressPlan, name: str) -> LinkPlan:
    """A link `A--B` (either order: router to router, or a router to its site, client or
    issuer), or a site, client or issuer by name (its link to its router)."""
    if "--" in name:
        a, _, b = name.partition("--")
        for link in plan.links:
            if {link.a, link.b} == {a, b} and a != b:
                return link
    elif name in plan.nodes and plan.nodes[name].role != "router":
        return next(ln for ln in plan.links if ln.kind != "core" and ln.b == name)
    core = ", ".join(ln.name for ln in plan.links if ln.kind == "core")
    edges = ", ".join(ln.b for ln in plan.links if ln.kind != "core")
    raise BadInput(f"unknown link or node '{name}' (links: {core}; sites, clients and "
                   f"issuer by name: {edges})")
