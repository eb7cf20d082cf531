"""A topology -> an export (pure: nothing is written but scratch files in a temporary
directory, nothing on this machine is asked).

The daemons' configs come from `lab.render.launch.specs_for`, the very function `up` uses,
given the container's lab directory and programs (`lab.export.paths`); the trust material
from `lab.render.credentials.material`, and each site's first revocation list from
`lab.shared.revocation`, as at `up`. Each node gets only the files it needs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import jwt
import yaml

from lab.export import commands, hosts
from lab.export.model import Endpoint, Export, ExportLink, ExportNode, Host, NodeFile
from lab.export.paths import DEFAULT_IMAGE, IMAGE_RUNTIME, LAB_DIR, Runtime, relative_to_lab
from lab.model import names
from lab.model.plan import AddressPlan, build_plan
from lab.model.topology import Impairment, Topology
from lab.render import credentials, launch
from lab.render.base import DaemonSpec
from lab.shared import revocation

VNI_BASE = 10_000  # link i between two hosts: VNI 10000 + i
# What a site's daemons read of the lab's trust material (never the CA's or the token
# issuer's private key, nor the clients' secrets); a client gets the CA to check TLS.
SITE_PKI = ("ca.pem", "server.pem", "server.key", "signing.pub", "clients.json",
            "healthd.secret", "canary-active.jwt", "canary-revoked.jwt")
CLIENT_PKI = ("ca.pem",)


def container_specs(topo: Topology, plan: AddressPlan,
                    runtime: Runtime = IMAGE_RUNTIME) -> list[DaemonSpec]:
    """Every daemon of the lab as `up` would start it, with the container's paths."""
    return launch.specs_for(topo, plan, Path(str(LAB_DIR)), runtime.tools, runtime.python)


def first_revocations(canaries: dict[str, str]) -> bytes:
    """A site's revocation list as `up` starts it: the revoked canary alone, revoked when
    it was issued (so the same trust material always gives the same file)."""
    issued = jwt.decode(canaries["revoked"], options={"verify_signature": False})["iat"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / names.REVOCATION
        revocation.revoke(path, canaries["revoked_jti"], now=issued)
        return path.read_bytes()


def plan_export(topo: Topology, *, image: str = DEFAULT_IMAGE, clabernetes: bool = False,
                host_count: int | None = None, split_file: Path | None = None,
                runtime: Runtime = IMAGE_RUNTIME,
                pki: dict[str, tuple[bytes, bool]] | None = None) -> Export:
    plan = build_plan(topo)
    if split_file is not None:
        host_list, where = hosts.from_file(plan, split_file)
    elif host_count is not None:
        host_list, where = hosts.by_count(plan, host_count)
    else:
        host_list, where = hosts.one_host()
    placed = hosts.place(plan, host_list, where)
    material = pki if pki is not None else credentials.material(plan)
    pki_dir = LAB_DIR / names.PKI

    def pki_file(name: str) -> NodeFile:
        data, private = material[name]
        return NodeFile(f"{names.PKI}/{name}", str(pki_dir / name), data,
                        0o600 if private else 0o644)

    nodes = {n.name: ExportNode(n.name, n.role, placed[n.name]) for n in plan.nodes.values()}
    specs = container_specs(topo, plan, runtime)
    revoked = first_revocations(json.loads(material["canaries.json"][0]))
    for node in plan.nodes.values():
        out = nodes[node.name]
        wanted = SITE_PKI if node.role == "site" else CLIENT_PKI if node.role == "client" else ()
        out.files += [pki_file(name) for name in wanted]
        if node.role == "site":
            path = str(LAB_DIR / names.NODES / node.name / names.REVOCATION)
            out.files.append(NodeFile(relative_to_lab(path), path, revoked, keep=True))
        mine = [s for s in specs if s.node == node.name]
        for spec in mine:
            for path, text in commands.spec_files(spec):
                out.files.append(NodeFile(relative_to_lab(path), path, text.encode()))
        if clabernetes:
            out.exec += [commands.file_command(f) for f in out.files]
        out.exec += commands.fabric_commands(plan, node, topo.bgp.multipath_hash,
                                             impairments_of(plan, node.name))
        for spec in mine:
            out.exec += commands.daemon_commands(plan, spec, LAB_DIR)
    links = []
    for link in plan.links:
        a, b = plan.nodes[link.a], plan.nodes[link.b]
        ha, hb = placed[a.name], placed[b.name]
        links.append(ExportLink(link.index, Endpoint(a.name, a.iface(b.name).ifname),
                                Endpoint(b.name, b.iface(a.name).ifname), ha, hb,
                                VNI_BASE + link.index if ha != hb else None))
    shared = [NodeFile(f"{names.PKI}/{name}", str(pki_dir / name), data,
                       0o600 if private else 0o644) for name, (data, private) in material.items()]
    shared.append(NodeFile(names.TOPOLOGY_COPY, "", yaml.safe_dump(
        topo.model_dump(mode="json"), sort_keys=False).encode()))
    return Export(topo.name, image, clabernetes, host_list, nodes, links, shared)


def impairments_of(plan: AddressPlan, node: str) -> dict[str, Impairment]:
    """A node's interfaces that carry an impairment (both ends of an impaired link)."""
    out = {}
    for link in plan.links:
        if link.impair and node in (link.a, link.b):
            out[link.b if node == link.a else link.a] = link.impair
    return out


def used_hosts(export: Export) -> list[Host]:
    return [h for h in export.hosts if export.nodes_on(h.name)]


