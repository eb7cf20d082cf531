"""The fabric: namespaces, veth links, addresses, routes, sysctls and impairments.

The only module that changes kernel network state. Every call goes to a lab namespace:
netlink sockets and sysctl writes are made by this thread from inside it (`entered`
opens /run/netns/NAME, so a missing namespace is an error, never silently created; the
thread is always moved back), elsewhere pyroute2 with flags=0; the root namespace is
never opened for writing. Each namespace and link is written to
the journal before it is created.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from lab.host.journal import Journal, valid_lab_name
from lab.host.procs import run_in
from lab.model.errors import EnvironmentProblem, LabError
from lab.model.names import lab_netns_prefix, lab_of_netns
from lab.model.plan import AddressPlan, LinkPlan, NodePlan
from lab.model.topology import Impairment, parse_duration_us
from lab.shared.nsnet import entered, go_home, unshare_net

IFA_F_NODAD = 0x02
MARKER_ALIAS = "anycast-lab:{lab}"
# tbf for a rate limit: a 32 KiB burst, packets wait at most 50 ms in its queue.
TBF_BURST = 32 * 1024
TBF_LATENCY_US = 50_000

Progress = Callable[[str], None]


def netlink_in(netns_name: str) -> IPRoute:
    """A netlink socket (pyroute2) in a namespace, opened by this thread from inside it:
    `IPRoute(netns=...)` forks a helper per namespace instead (~11 ms each, measured)."""
    with entered(netns_name):
        ipr = IPRoute()
        ipr.link_lookup(ifname="lo")  # the socket exists, in this namespace, from here on
    return ipr


def create_namespace(name: str) -> None:
    """A new network namespace mounted at /run/netns/NAME: made by this thread (unshare)
    and bind-mounted (pyroute2's attach), the thread moved straight back. pyroute2's
    create forks a helper for it instead, ~9 ms a namespace (measured). FileExistsError
    when the name is taken."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:  # the move inside: an exception raised just after it still moves back
            unshare_net()
            netns.attach(name, threading.get_native_id())
        finally:
            go_home(home)
    finally:
        os.close(home)


def write_sysctls(netns_name: str, values: dict[str, str]) -> None:
    """Write sysctls (dotted names) in a namespace from this thread: /proc/sys/net is the
    writing thread's namespace's. No `sysctl` process forked per namespace."""
    with entered(netns_name):
        for key, value in values.items():
            path = "/proc/sys/" + key.replace(".", "/")
            try:
                with open(path, "w") as f:
                    f.write(value)
            except OSError as exc:
                raise EnvironmentProblem(f"setting {key}={value} in namespace {netns_name} "
                                         f"failed: {exc.strerror or exc}") from None


def hash_seed_available() -> bool:
    """Can a namespace hash multipath flows with its own seed and chosen fields (the seed
    since Linux 6.11, the custom fields since 5.12)?"""
    return all(Path(f"/proc/sys/net/ipv4/{name}").exists()
               for name in ("fib_multipath_hash_seed", "fib_multipath_hash_fields"))


def hash_seed(node: NodePlan) -> int:
    """A router's own multipath hash seed, fixed by its name (the same on every run)."""
    return zlib.crc32(node.name.encode()) or 1


# Source and destination address, protocol, source and destination port: the 5-tuple.
L4_FIELDS = "0x0037"


def sysctls_for(node: NodePlan, multipath_hash: str,
                own_hash_seed: bool = False) -> dict[str, str]:
    """Sysctls a node's namespace needs; set before its interfaces exist so they inherit.

    `own_hash_seed` (where the kernel allows it): each router hashes with its own seed,
    and an L4 hash is the custom-fields policy over the 5-tuple rather than policy 1.
    Policy 1 reuses a hash the packet already carries, and a packet keeps the sender's
    hash across veths: every router on a path would then pick alike, so a router behind
    another only ever sees one of its equal-cost members (measured: 0 of 50 queries).
    """
    values = {
        # Anycast paths are asymmetric: no reverse-path filtering anywhere in the lab.
        "net.ipv4.conf.all.rp_filter": "0",
        "net.ipv4.conf.default.rp_filter": "0",
        # No duplicate address detection: addresses usable at once (with DAD a veth
        # address was unusable for ~2.9 s, measured on this machine).
        "net.ipv6.conf.all.accept_dad": "0",
        "net.ipv6.conf.default.accept_dad": "0",
        # Keep IPv6 addresses when a link goes down (the `link` fault), as IPv4 does.
        "net.ipv6.conf.all.keep_addr_on_down": "1",
        "net.ipv6.conf.default.keep_addr_on_down": "1",
        "net.ipv6.conf.all.accept_ra": "0",
        "net.ipv6.conf.default.accept_ra": "0",
        # Traceroute and probes should not be rate limited inside the lab.
        "net.ipv4.icmp_ratelimit": "0",
        "net.ipv6.icmp.ratelimit": "0",
    }
    if node.role == "router":
        l4 = multipath_hash == "l4"
        policy = ("3" if own_hash_seed else "1") if l4 else "0"
        values |= {
            "net.ipv4.ip_forward": "1",
            "net.ipv6.conf.all.forwarding": "1",
            "net.ipv4.fib_multipath_hash_policy": policy,
            "net.ipv6.fib_multipath_hash_policy": policy,
        }
        if own_hash_seed:  # IPv6's multipath hash uses this seed too
            values["net.ipv4.fib_multipath_hash_seed"] = str(hash_seed(node))
            if l4:
                values["net.ipv4.fib_multipath_hash_fields"] = L4_FIELDS
                values["net.ipv6.fib_multipath_hash_fields"] = L4_FIELDS
    return values


def netem_available() -> bool:
    """Can this kernel attach a netem qdisc? Probed in a throwaway anonymous namespace."""
    probe = subprocess.run(
        ["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
         "1ms"], capture_output=True, text=True, check=False)
    return probe.returncode == 0


def check_impairments(plan: AddressPlan) -> None:
    """Refuse, before anything is created, impairments this kernel cannot apply."""
    needs_netem = [ln for ln in plan.links if ln.impair and (
        ln.impair.delay or ln.impair.jitter or ln.impair.loss)]
    if needs_netem and not netem_available():
        link = needs_netem[0]
        raise EnvironmentProblem(
            f"links[{link.index}] ({link.a}--{link.b}) asks for delay, jitter or loss, but "
            "this kernel has no sch_netem (netem) qdisc: remove the impairment or use a "
            "kernel with netem")


class NamespaceTaken(LabError):
    """A namespace of the lab's name appeared while `up` was building it: another lab's,
    so rolling back must not sweep by name or marker (those would find that lab)."""

    def __init__(self, netns_name: str, lab: str) -> None:
        super().__init__(f"namespace {netns_name} already exists: a lab named '{lab}' is up "
                         "or being built, perhaps from another run directory; choose "
                         f"another name with --name (or, if it is a leftover of a crash, "
                         f"run `anycast-lab down --lab {lab}` first)")


class Fabric:
    """Builds a plan's namespaces and links, recording each in the journal first."""

    def __init__(self, plan: AddressPlan, journal: Journal, multipath_hash: str = "l3",
                 progress: Progress | None = None) -> None:
        self.plan = plan
        self.journal = journal
        self.multipath_hash = multipath_hash
        self.progress = progress or (lambda _msg: None)

    def build(self) -> None:
        nodes = list(self.plan.nodes.values())
        for node in nodes:
            self.journal.record("netns", name=node.netns, node=node.name)
            try:
                create_namespace(node.netns)
            except FileExistsError:
                # Not ours: somebody made it since `up` looked (another `up` of this name,
                # from another run directory). The record above is taken back, so that
                # the roll-back removes only what this run made.
                self.journal.record("netns", op="gone", name=node.netns)
                raise NamespaceTaken(node.netns, self.plan.lab) from None
        self.progress(f"{len(nodes)} namespaces")
        for node in nodes:
            self.set_sysctls(node)
        self.progress("sysctls")
        with ExitStack() as stack:
            ipr = {n.name: stack.enter_context(netlink_in(n.netns)) for n in nodes}
            for link in self.plan.links:
                self._veth(ipr, link)
            self.progress(f"{len(self.plan.links)} links")
            for node in nodes:
                self._addresses(ipr[node.name], node)
            for link in self.plan.links:
                if link.impair:
                    self._impair(ipr, link)
            self.progress("addresses and routes")

    def set_sysctls(self, node: NodePlan) -> None:
        """Set the node's sysctls (forwarding, its multipath hash, ...) as `build` does;
        setting them again puts back whatever was changed by hand since."""
        write_sysctls(node.netns, sysctls_for(node, self.multipath_hash,
                                              hash_seed_available()))

    def _veth(self, ipr: dict[str, IPRoute], link: LinkPlan) -> None:
        a, b = self.plan.nodes[link.a], self.plan.nodes[link.b]
        ifa, ifb = a.iface(b.name), b.iface(a.name)
        self.journal.record("link", netns=a.netns, ifname=ifa.ifname, peer_netns=b.netns,
                            peer_ifname=ifb.ifname)
        # Created inside a's namespace with its peer placed straight into b's:
        # no end ever exists in the root namespace.
        ipr[a.name].link("add", ifname=ifa.ifname, kind="veth",
                         peer={"ifname": ifb.ifname, "net_ns_fd": b.netns})
        for node, iface in ((a, ifa), (b, ifb)):
            index = ipr[node.name].link_lookup(ifname=iface.ifname)[0]
            ipr[node.name].link("set", index=index,
                                ifalias=MARKER_ALIAS.format(lab=self.plan.lab))

    def _addresses(self, ipr: IPRoute, node: NodePlan) -> None:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        if node.role == "site":
            ipr.addr("add", index=lo, address=str(self.plan.anycast4.network_address),
                     prefixlen=32)
            ipr.addr("add", index=lo, address=str(self.plan.anycast6.network_address),
                     prefixlen=128, flags=IFA_F_NODAD)
        for iface in node.interfaces:
            index = ipr.link_lookup(ifname=iface.ifname)[0]
            ipr.addr("add", index=index, address=str(iface.v4.ip), prefixlen=31)
            ipr.addr("add", index=index, address=str(iface.v6.ip), prefixlen=64,
                     flags=IFA_F_NODAD)
            ipr.link("set", index=index, state="up")
        if node.gateway4 is not None and node.gateway6 is not None:
            ipr.route("add", dst="0.0.0.0/0", gateway=str(node.gateway4))
            ipr.route("add", dst="::/0", gateway=str(node.gateway6), family=socket.AF_INET6)

    def _impair(self, ipr: dict[str, IPRoute], link: LinkPlan) -> None:
        imp = link.impair
        assert imp is not None
        for node_name, peer in ((link.a, link.b), (link.b, link.a)):
            index = ipr[node_name].link_lookup(ifname=peer)[0]
            try:
                attach_qdisc(ipr[node_name], index, imp, "add")
            except NetlinkError as exc:
                raise EnvironmentProblem(
                    f"links[{link.index}] ({link.a}--{link.b}): the kernel refused the "
                    f"impairment ({exc}); check that sch_netem/sch_tbf are available") from exc


def attach_qdisc(ipr: IPRoute, index: int, imp: Impairment, op: str = "replace") -> str | None:
    """Make `imp` the root qdisc of one interface: netem when it asks for delay, jitter or
    loss (netem carries the rate too), else tbf for a rate. Returns which one, or None
    when `imp` asks for nothing tc does."""
    if imp.delay or imp.jitter or imp.loss:
        kwargs: dict[str, object] = {}
        if imp.delay:
            kwargs["delay"] = parse_duration_us(imp.delay)
        if imp.jitter:
            kwargs["jitter"] = parse_duration_us(imp.jitter)
        if imp.loss:
            kwargs["loss"] = imp.loss
        if imp.rate:
            kwargs["rate"] = imp.rate
        ipr.tc(op, "netem", index=index, **kwargs)
        return "netem"
    if imp.rate:
        ipr.tc(op, "tbf", index=index, rate=imp.rate, burst=TBF_BURST, latency=TBF_LATENCY_US)
        return "tbf"
    return None


def set_link_qdisc(netns: str, ifname: str, imp: Impairment | None) -> str | None:
    """Give one interface of a lab namespace the root qdisc `imp` asks for (None: the
    kernel's default), replacing whatever was there. Returns the qdisc's kind, or None."""
    shown = run_in(netns, ["tc", "qdisc", "show", "dev", ifname, "root"])
    if shown.returncode != 0:
        raise LabError(f"interface {ifname} is missing in namespace {netns}: "
                       f"{shown.stderr.strip()}")
    if any(f"qdisc {kind} " in shown.stdout for kind in ("tbf", "netem")):
        removed = run_in(netns, ["tc", "qdisc", "del", "dev", ifname, "root"])
        if removed.returncode != 0:
            raise EnvironmentProblem(f"{netns} {ifname}: the kernel refused to remove the "
                                     f"root qdisc ({removed.stderr.strip()})")
    if imp is None:
        return None
    with IPRoute(netns=netns, flags=0) as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        try:
            return attach_qdisc(ipr, index, imp, "add")
        except NetlinkError as exc:
            raise EnvironmentProblem(f"{netns} {ifname}: the kernel refused the impairment "
                                     f"({exc}); check that sch_netem/sch_tbf are "
                                     "available") from exc


def lab_namespaces(lab: str) -> list[str]:
    """Namespaces carrying this lab's name prefix (the marker), whether journaled or not."""
    prefix = lab_netns_prefix(lab)
    return sorted(n for n in netns.listnetns() if n.startswith(prefix))


def namespace_labs() -> set[str]:
    """Every lab name found in a namespace name (`acl.<lab>.<node>`)."""
    labs = {lab_of_netns(n) for n in netns.listnetns()}
    return {lab for lab in labs if lab is not None and valid_lab_name(lab)}


def remove_namespace(name: str) -> bool:
    """Remove one lab namespace; its veth ends go with it. False if it was not there."""
    try:
        netns.remove(name)
    except FileNotFoundError:
        return False
    return True
