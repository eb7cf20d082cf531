"""The address plan: deterministic, unique addresses, consistent links and names."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path

import pytest
import yaml

from lab.model import Topology, load_file, load_text
from lab.model.generate import generate_topology
from lab.model.names import lab_netns_prefix, netns_name
from lab.model.plan import AddressPlan, build_plan
from lab.model.topology import MAX_NAME

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "topologies" / "default.yaml"
IMPAIRED = REPO / "tests" / "topologies" / "good" / "impaired.yaml"


def _load_default() -> Topology:
    report = load_file(DEFAULT)
    assert report.topology is not None, report.problems
    return report.topology


def _load_generated() -> Topology:
    text = yaml.safe_dump(generate_topology("gen", 50, 5), sort_keys=False)
    report = load_text(text, "<generated>")
    assert report.topology is not None, report.problems
    return report.topology


def _load_impaired() -> Topology:
    report = load_file(IMPAIRED)
    assert report.topology is not None, report.problems
    return report.topology


LOADERS = {"default": _load_default, "gen-50x5": _load_generated, "impaired": _load_impaired}


@pytest.fixture(params=sorted(LOADERS))
def topo(request: pytest.FixtureRequest) -> Topology:
    return LOADERS[request.param]()


@pytest.fixture
def plan(topo: Topology) -> AddressPlan:
    return build_plan(topo)


def test_plan_is_deterministic(topo: Topology) -> None:
    assert build_plan(topo) == build_plan(topo)


def test_plan_is_deterministic_across_loads() -> None:
    assert build_plan(_load_default()) == build_plan(_load_default())
    assert build_plan(_load_generated()) == build_plan(_load_generated())


def test_nodes_and_roles(topo: Topology, plan: AddressPlan) -> None:
    assert plan.lab == topo.name
    assert list(plan.nodes) == topo.node_names()
    assert [n.name for n in plan.by_role("router")] == list(topo.routers)
    assert [n.name for n in plan.by_role("site")] == list(topo.sites)
    assert [n.name for n in plan.by_role("client")] == list(topo.clients)
    for name, site in topo.sites.items():
        assert plan.nodes[name].asn == site.asn
        assert plan.nodes[name].router == site.router
    for name, router in topo.routers.items():
        assert plan.nodes[name].asn == router.asn


def test_link_order_and_count(topo: Topology, plan: AddressPlan) -> None:
    kinds = [ln.kind for ln in plan.links]
    n_core, n_site = len(topo.links), len(topo.sites)
    issuer = ["issuer"] if topo.issuer is not None else []
    assert kinds == ["core"] * n_core + ["site"] * n_site + ["client"] * len(topo.clients) \
        + issuer
    assert [ln.index for ln in plan.links] == list(range(len(plan.links)))
    for ln, spec in zip(plan.links, topo.links, strict=False):
        assert (ln.a, ln.b) == spec.endpoints
        assert ln.impair == spec.impair
    for ln in plan.links[n_core:]:
        assert ln.a in topo.routers and ln.impair is None


def test_interface_addresses_unique(plan: AddressPlan) -> None:
    ifaces = [i for n in plan.nodes.values() for i in n.interfaces]
    assert len(ifaces) == 2 * len(plan.links)
    v4 = Counter(i.v4.ip for i in ifaces)
    v6 = Counter(i.v6.ip for i in ifaces)
    assert [a for a, c in v4.items() if c > 1] == []
    assert [a for a, c in v6.items() if c > 1] == []
    anycast = {plan.anycast4.network_address, plan.anycast6.network_address}
    assert anycast.isdisjoint(set(v4) | set(v6))


def test_link_subnets_come_from_pools_and_are_distinct(topo: Topology,
                                                       plan: AddressPlan) -> None:
    pool4 = ipaddress.IPv4Network(topo.pools.links4)
    pool6 = ipaddress.IPv6Network(topo.pools.links6)
    for ln in plan.links:
        assert ln.net4.prefixlen == 31 and ln.net4.subnet_of(pool4)
        assert ln.net6.prefixlen == 64 and ln.net6.subnet_of(pool6)
    assert len({ln.net4 for ln in plan.links}) == len(plan.links)
    assert len({ln.net6 for ln in plan.links}) == len(plan.links)


def test_both_ends_of_each_link(plan: AddressPlan) -> None:
    for ln in plan.links:
        end_a = next(i for i in plan.nodes[ln.a].interfaces if i.link == ln.index)
        end_b = next(i for i in plan.nodes[ln.b].interfaces if i.link == ln.index)
        assert (end_a.node, end_a.peer, end_b.node, end_b.peer) == (ln.a, ln.b, ln.b, ln.a)
        assert end_a.v4.network == end_b.v4.network == ln.net4
        assert end_a.v6.network == end_b.v6.network == ln.net6
        assert end_a.v4.ip != end_b.v4.ip
        assert end_a.v6.ip != end_b.v6.ip
        assert end_a.v4.ip < end_b.v4.ip  # the first end takes the lower address
        assert (end_a.ifname, end_a.peer_ifname) == (end_b.peer_ifname, end_b.ifname)


def test_interface_names(plan: AddressPlan) -> None:
    for node in plan.nodes.values():
        names = [i.ifname for i in node.interfaces]
        assert len(names) == len(set(names)), node.name
        for iface in node.interfaces:
            assert iface.node == node.name
            assert iface.ifname == iface.peer
            assert iface.peer in plan.nodes
            assert 1 <= len(iface.ifname) <= MAX_NAME == 15
            assert iface.ifname not in {"lo", "all", "default"}


def test_sites_and_clients_use_their_router_as_gateway(plan: AddressPlan) -> None:
    for node in plan.by_role("site") + plan.by_role("client"):
        assert len(node.interfaces) == 1
        (iface,) = node.interfaces
        assert iface.peer == node.router
        router_end = plan.nodes[node.router].iface(node.name)
        assert node.gateway4 == router_end.v4.ip
        assert node.gateway6 == router_end.v6.ip
        assert node.gateway4 in iface.v4.network and node.gateway6 in iface.v6.network
    for router in plan.by_role("router"):
        assert router.gateway4 is None and router.gateway6 is None


def test_namespaces(plan: AddressPlan) -> None:
    for name, node in plan.nodes.items():
        assert node.netns == f"acl.{plan.lab}.{name}" == netns_name(plan.lab, name)
        assert node.netns.startswith(lab_netns_prefix(plan.lab))
        assert node.netns.count(".") == 2
    assert len({n.netns for n in plan.nodes.values()}) == len(plan.nodes)


def test_router_ids_unique_and_valid(plan: AddressPlan) -> None:
    speakers = plan.by_role("router") + plan.by_role("site")
    ids = [n.router_id for n in speakers]
    assert None not in ids
    for rid in ids:
        assert int(ipaddress.IPv4Address(rid)) != 0
    assert len(set(ids)) == len(ids), Counter(ids).most_common(3)
    for client in plan.by_role("client"):
        assert client.router_id is None


def test_explicit_router_ids_are_kept(topo: Topology, plan: AddressPlan) -> None:
    for name, router in topo.routers.items():
        if router.router_id is not None:
            assert plan.nodes[name].router_id == router.router_id
        else:
            assert plan.nodes[name].router_id == str(plan.nodes[name].interfaces[0].v4.ip)


def test_anycast(topo: Topology, plan: AddressPlan) -> None:
    assert plan.anycast == [topo.anycast.ipv4, topo.anycast.ipv6]


def test_default_plan_first_addresses() -> None:
    """Link 0 of default.yaml (r-eu -- r-us) takes the first /31 and /64 of the pools."""
    plan = build_plan(_load_default())
    first = plan.links[0]
    assert (first.a, first.b, first.kind) == ("r-eu", "r-us", "core")
    assert str(first.net4) == "100.64.0.0/31"
    assert str(first.net6) == "fd00:a11c:ab::/64"
    assert str(plan.nodes["r-eu"].iface("r-us").v4) == "100.64.0.0/31"
    assert str(plan.nodes["r-us"].iface("r-eu").v6) == "fd00:a11c:ab::2/64"
    assert plan.nodes["r-eu"].router_id == "100.127.0.1"
