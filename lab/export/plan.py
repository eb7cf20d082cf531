"""A topology -> an export (pure: nothing is written but scratch files in a temporary
directory, nothing on this machine is asked).

The daemons' configs come from `lab.render.launch.specs_for`, the very function `up` uses,
given the container's lab directory and programs (`lab.export.paths`); the trust material
from `lab.render.credentials.material`, and the state every node starts with (the issuer's
revocation list, each site's list and keys) from `lab.render.issuer.seed_lab`, as at
`up`. Each node gets only the files it needs: the signing key reaches the issuer alone."""

from __future__ import annotations

import json
import os
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
from lab.render.issuer import seed_lab

VNI_BASE = 10_000  # link i between two hosts: VNI 10000 + i
# What a site's daemons read of the lab's trust material (never the CA's private key or
# the signing key, nor the clients' secrets); a client gets the CA to check TLS; the
# issuer node its certificate and key, the signing key (it alone signs), the client
# registry (the admin's hashed secret), and the CA for its readiness wait.
SITE_PKI = ("ca.pem", "server.pem", "server.key", "signing.pub", "clients.json",
            "healthd.secret", "canary-active.jwt", "canary-revoked.jwt")
CLIENT_PKI = ("ca.pem",)
ISSUER_PKI = ("ca.pem", "issuer.pem", "issuer.key", "signing.key", "signing.pub",
              "clients.json")
PKI_BY_ROLE = {"site": SITE_PKI, "client": CLIENT_PKI, "issuer": ISSUER_PKI}


def container_specs(topo: Topology, plan: AddressPlan,
                    runtime: Runtime = IMAGE_RUNTIME) -> list[DaemonSpec]:
    """Every daemon of the lab as `up` would start it, with the container's paths."""
    return launch.specs_for(topo, plan, Path(str(LAB_DIR)), runtime.tools, runtime.python,
                            runtime.speaker_run)


def starting_state(plan: AddressPlan,
                   material: dict[str, tuple[bytes, bool]]) -> dict[str, dict[str, bytes]]:
    """node -> {file name: bytes} of what `up` writes into node directories before any
    daemon runs (`seed_lab`, in a scratch lab directory): the revoked canary in the lab's
    revocation list(s), each site's replica seeded from the issuer. The canary is revoked
    when it was issued, so the same trust material always gives the same files."""
    canaries = json.loads(material["canaries.json"][0])
    issued = jwt.decode(canaries["revoked"], options={"verify_signature": False})["iat"]
    with tempfile.TemporaryDirectory() as tmp:
        lab_dir = Path(tmp)
        pki_dir = lab_dir / names.PKI
        pki_dir.mkdir(mode=0o700)
        for name, (data, private) in material.items():
            fd = os.open(pki_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                         0o600 if private else 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        seed_lab(lab_dir, plan, canaries["revoked_jti"], now=issued)
        out: dict[str, dict[str, bytes]] = {}
        for node in plan.nodes:
            node_dir = names.node_dir(lab_dir, node)
            if node_dir.is_dir():  # the writers' lock files are theirs, not state
                out[node] = {f.name: f.read_bytes() for f in sorted(node_dir.iterdir())
                             if f.is_file() and not f.name.endswith(".lock")}
        return out


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
    state = starting_state(plan, material)
    for node in plan.nodes.values():
        out = nodes[node.name]
        out.files += [pki_file(name) for name in PKI_BY_ROLE.get(node.role, ())]
        for name, data in state.get(node.name, {}).items():
            path = str(LAB_DIR / names.NODES / node.name / name)
            out.files.append(NodeFile(relative_to_lab(path), path, data, keep=True))
        mine = [s for s in specs if s.node == node.name]
        for spec in mine:
            for path, text in commands.spec_files(spec):
                out.files.append(NodeFile(relative_to_lab(path), path, text.encode()))
        # State a daemon replaces (a rename, which a bind-mounted file refuses) is never
        # bound: the exec list writes it when absent. Without binds, every file.
        out.exec += [commands.file_command(f) for f in out.files if clabernetes or f.keep]
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


