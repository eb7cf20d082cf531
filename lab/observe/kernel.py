"""Reading a running lab's kernel state (read-only): namespaces, links, addresses.

Used by `status` and by the tests. Never changes anything.
"""

from __future__ import annotations

from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from lab.model.plan import AddressPlan


def node_interfaces(ns: str) -> list[dict[str, Any]]:
    """Interfaces of a namespace with state and addresses (empty if it does not exist)."""
    if ns not in netns.listnetns():
        return []
    out: list[dict[str, Any]] = []
    try:
        with IPRoute(netns=ns, flags=0) as ipr:
            addrs: dict[int, list[str]] = {}
            for msg in ipr.get_addr():
                addrs.setdefault(msg["index"], []).append(
                    f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            for link in ipr.get_links():
                out.append({
                    "ifname": link.get_attr("IFLA_IFNAME"),
                    "state": link.get_attr("IFLA_OPERSTATE"),
                    "addresses": sorted(addrs.get(link["index"], [])),
                })
    except (NetlinkError, OSError):
        return []
    return out


def fabric_status(plan: AddressPlan) -> dict[str, Any]:
    """Per node: its namespace, whether it exists, and its interfaces."""
    present = set(netns.listnetns())
    nodes = {}
    for node in plan.nodes.values():
        nodes[node.name] = {
            "role": node.role,
            "netns": node.netns,
            "exists": node.netns in present,
            "interfaces": node_interfaces(node.netns) if node.netns in present else [],
        }
    links = [{"a": ln.a, "b": ln.b, "kind": ln.kind, "ipv4": str(ln.net4),
              "ipv6": str(ln.net6)} for ln in plan.links]
    return {"nodes": nodes, "links": links}
