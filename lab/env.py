"""Checks of the machine the lab runs on: Linux, root, namespaces, tools, host networks.

Read-only. Each failed check raises EnvironmentProblem (exit 3) with one sentence.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import shutil
import sys
from pathlib import Path

from lab.errors import EnvironmentProblem
from lab.plan import AddressPlan

INSTALL_HINT = "run `make install` (or scripts/install.sh) as root"


def require_linux_root() -> None:
    if platform.system() != "Linux":
        raise EnvironmentProblem(f"anycast-lab needs Linux network namespaces; this is "
                                 f"{platform.system()}: run it on a Linux VM")
    if os.geteuid() != 0:
        raise EnvironmentProblem("anycast-lab must run as root to create network namespaces: "
                                 "run it with sudo")
    if not Path("/proc/self/ns/net").exists():
        raise EnvironmentProblem("this kernel has no network namespace support "
                                 "(/proc/self/ns/net is missing): use a kernel with CONFIG_NET_NS")


def tool_path(name: str) -> str | None:
    """A tool from PATH, or from this Python's own bin directory (the venv's exabgp)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def require_tools(names: list[str]) -> dict[str, str]:
    paths = {n: tool_path(n) for n in names}
    missing = [n for n, p in paths.items() if p is None]
    if missing:
        raise EnvironmentProblem(f"missing tool{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join(missing)}: {INSTALL_HINT}")
    return {n: p for n, p in paths.items() if p is not None}


def host_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Networks on the root namespace's interfaces (read-only netlink dump)."""
    from pyroute2 import IPRoute

    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            if addr:
                nets.append(ipaddress.ip_network(f"{addr}/{msg['prefixlen']}", strict=False))
    return nets


def check_host_overlap(plan: AddressPlan, pools: tuple[str, str]) -> None:
    """The lab's pools and anycast prefixes must not overlap the host's own networks."""
    ours = [ipaddress.ip_network(p) for p in (*pools, *plan.anycast)]
    for host in host_networks():
        if host.is_loopback or host.is_link_local:
            continue
        for net in ours:
            if net.version == host.version and net.overlaps(host):
                raise EnvironmentProblem(
                    f"the lab's {net} overlaps the host network {host}: choose other "
                    "pools or anycast prefixes in the topology file")
