"""Which host deploys which node: one host; `--hosts N` (the routers in file order cut into
N runs, each site and client on its router's host); or a split file naming each host's
address and routers (and, optionally, sites and clients placed elsewhere than their router).
A link whose ends are on different hosts becomes a VXLAN tunnel."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

from lab.export.model import Host
from lab.model import Problem
from lab.model.errors import BadInput
from lab.model.load import read_bounded
from lab.model.plan import AddressPlan
from lab.model.safeyaml import MAX_FILE_BYTES, safe_load

ONE_HOST = "host1"
# Placeholders for `--hosts N` (TEST-NET-2, RFC 5737): to be replaced by the hosts' real
# addresses, or given in a split file.
PLACEHOLDER_NET = ipaddress.IPv4Network("198.51.100.0/24")
MAX_HOSTS = 64


def one_host() -> tuple[list[Host], dict[str, str]]:
    return [Host(ONE_HOST, None)], {}


def by_count(plan: AddressPlan, count: int) -> tuple[list[Host], dict[str, str]]:
    routers = [n.name for n in plan.by_role("router")]
    if not 1 <= count <= min(MAX_HOSTS, len(routers)):
        raise BadInput(f"--hosts must be between 1 and the number of routers "
                       f"({len(routers)}, at most {MAX_HOSTS}); got {count}")
    hosts = [Host(f"host{i + 1}", str(PLACEHOLDER_NET.network_address + i + 1))
             for i in range(count)]
    where: dict[str, str] = {}
    for i, router in enumerate(routers):
        where[router] = hosts[i * count // len(routers)].name
    return hosts, where


def from_file(plan: AddressPlan, path: Path) -> tuple[list[Host], dict[str, str]]:
    """A split file: `hosts: {NAME: {address: IP, nodes: [NODE, ...]}}`; every router on
    exactly one host; sites and clients not named go with their router."""
    text = read_bounded(path, f"larger than {MAX_FILE_BYTES // 1024} KiB", "a split file")
    if isinstance(text, Problem):
        raise BadInput(f"the split file: {text.message}")
    try:
        doc = safe_load(text)
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not a YAML split file ({exc})") from None
    hosts_doc = doc.get("hosts") if isinstance(doc, dict) else None
    if not isinstance(hosts_doc, dict) or not hosts_doc:
        raise BadInput(f"{path}: expected `hosts: {{NAME: {{address: IP, nodes: [...]}}}}`")
    hosts, where = [], {}
    for name, spec in hosts_doc.items():
        hosts.append(_host(path, name, spec))
        for node in spec["nodes"]:
            if node not in plan.nodes:
                raise BadInput(f"{path}: hosts.{name}: unknown node {node!r}")
            if node in where:
                raise BadInput(f"{path}: node {node!r} is on two hosts ({where[node]}, {name})")
            where[node] = name
    addresses = [h.address for h in hosts]
    if len(set(addresses)) != len(addresses):
        raise BadInput(f"{path}: two hosts have the same address")
    missing = [r.name for r in plan.by_role("router") if r.name not in where]
    if missing:
        raise BadInput(f"{path}: router(s) on no host: {', '.join(missing)}")
    return hosts, where


def _host(path: Path, name: Any, spec: Any) -> Host:
    if not isinstance(name, str) or not name.replace("-", "").isalnum():
        raise BadInput(f"{path}: host name {name!r}: letters, digits and '-' only")
    if (not isinstance(spec, dict) or set(spec) - {"address", "nodes"}
            or not isinstance(spec.get("nodes"), list)
            or not all(isinstance(n, str) for n in spec["nodes"])):
        raise BadInput(f"{path}: hosts.{name}: expected {{address: IP, nodes: [NODE, ...]}}")
    try:
        address = ipaddress.ip_address(str(spec.get("address")))
    except ValueError:
        raise BadInput(f"{path}: hosts.{name}.address: {spec.get('address')!r} is not an "
                       "IP address") from None
    return Host(name, str(address))


def place(plan: AddressPlan, hosts: list[Host], where: dict[str, str]) -> dict[str, str]:
    """Every node's host: as given, else its router's, else the first host."""
    first = hosts[0].name
    out = {}
    for node in plan.nodes.values():
        out[node.name] = where.get(node.name) or where.get(node.router or "", first)
    return out
