"""What an export is, before anything is written: nodes (their files, binds and exec
commands), links (veth on one host, VXLAN between hosts) and the hosts that deploy them.
Pure data: built by `lab.export.plan`, turned into containerlab documents by
`lab.export.clab`, written by `lab.export.write`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeFile:
    """One file a node needs: where it lives in the export directory (relative, POSIX),
    where the node sees it, its bytes and mode; `keep` files are state a daemon replaces
    (a site's revocation list and keys, the issuer's list): never bound (a rename onto a
    bind-mounted file fails), they are written by the exec list, only when absent."""

    export_path: str
    container_path: str
    data: bytes
    mode: int = 0o644
    keep: bool = False


@dataclass
class ExportNode:
    name: str
    role: str                       # router, site, client, issuer
    host: str
    files: list[NodeFile] = field(default_factory=list)
    exec: list[str] = field(default_factory=list)

    @property
    def binds(self) -> list[str]:
        """Docker `-v` binds, relative to the topology file, read-only: one per file but
        the `keep` ones (private keys and the lab's secrets never reach a node that does
        not need them)."""
        return [f"{f.export_path}:{f.container_path}:ro" for f in self.files if not f.keep]


@dataclass(frozen=True)
class Endpoint:
    node: str
    interface: str


@dataclass(frozen=True)
class ExportLink:
    """A lab link: both ends on one host (a veth), or on two hosts (a VXLAN tunnel per
    end, with one VNI)."""

    index: int
    a: Endpoint
    b: Endpoint
    host_a: str
    host_b: str
    vni: int | None = None          # set when the ends are on different hosts

    @property
    def crosses_hosts(self) -> bool:
        return self.host_a != self.host_b


@dataclass(frozen=True)
class Host:
    name: str
    address: str | None             # how the other hosts reach it (VXLAN remote)


@dataclass
class Export:
    lab: str
    image: str
    clabernetes: bool
    hosts: list[Host]
    nodes: dict[str, ExportNode]
    links: list[ExportLink]
    shared_files: list[NodeFile] = field(default_factory=list)  # kept beside, bound nowhere

    def topology_file(self, host: str) -> str:
        """The containerlab topology file a host deploys (relative to the export dir)."""
        if len(self.hosts) == 1:
            return f"{self.lab}.clab.yml"
        return f"{self.lab}.{host}.clab.yml"

    def nodes_on(self, host: str) -> list[ExportNode]:
        return [n for n in self.nodes.values() if n.host == host]
