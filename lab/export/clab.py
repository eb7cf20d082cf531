"""An export -> containerlab topology documents, one per host (pure).

Every node is `kind: linux` with the node image; its files are bound one by one
(`binds`, relative to the topology file), except the state a daemon replaces, which the
`exec` list writes, and except under clabernetes, which takes no host binds: there the
`exec` list writes them all first. Links on one host are veths (brief form);
a link between hosts is a `type: vxlan` link on each side with the link's VNI, towards
the other host's address, on containerlab's documented VXLAN port."""

from __future__ import annotations

from typing import Any

from lab.export.model import Export, ExportLink

VXLAN_PORT = 14789            # containerlab's default `dst-port` for vxlan links
CLABERNETES_RESTART = "unless-stopped"  # one of the two policies clabernetes supports


def documents(export: Export) -> dict[str, dict[str, Any]]:
    """Topology file (relative) -> its document, for every host that has nodes."""
    return {export.topology_file(h.name): document(export, h.name)
            for h in export.hosts if export.nodes_on(h.name)}


def document(export: Export, host: str) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for node in export.nodes_on(host):
        entry: dict[str, Any] = {"kind": "linux", "image": export.image,
                                 "labels": {"anycast-lab.role": node.role}}
        if export.clabernetes:
            entry["restart-policy"] = CLABERNETES_RESTART
        elif node.binds:
            entry["binds"] = node.binds
        if node.exec:
            entry["exec"] = node.exec
        nodes[node.name] = entry
    links = [link_entry(export, link, host) for link in export.links
             if host in (link.host_a, link.host_b)]
    topology: dict[str, Any] = {"nodes": nodes}
    if links:
        topology["links"] = links
    return {"name": export.lab, "topology": topology}


def link_entry(export: Export, link: ExportLink, host: str) -> dict[str, Any]:
    if not link.crosses_hosts:
        return {"endpoints": [f"{link.a.node}:{link.a.interface}",
                              f"{link.b.node}:{link.b.interface}"]}
    here, there = (link.a, link.host_b) if link.host_a == host else (link.b, link.host_a)
    remote = next(h.address for h in export.hosts if h.name == there)
    return {"type": "vxlan", "endpoint": {"node": here.node, "interface": here.interface},
            "remote": remote, "vni": link.vni, "dst-port": VXLAN_PORT}
