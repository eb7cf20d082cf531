"""Checks of the machine the lab runs on: Linux, root, namespaces, tools, host networks,
and whether the run directory leaves room for the lab's unix sockets.

Read-only. Each failed check raises EnvironmentProblem (exit 3) with one sentence.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lab.model import names
from lab.model.errors import EnvironmentProblem

if TYPE_CHECKING:
    from lab.model.plan import AddressPlan

INSTALL_HINT = "run `make install` (or scripts/install.sh) as root"

# A unix socket's path must fit sockaddr_un.sun_path, 108 bytes with its NUL: BIRD
# refuses a 108-byte path ("Socket path too long") and exits, and `up` would wait for it.
MAX_SOCKET_PATH = 107


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


def host_networks_or_none() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    """`host_networks()`, or None where they cannot be read (not Linux, no netlink)."""
    try:
        return host_networks()
    except (OSError, ImportError):
        return None


def check_host_overlap(plan: AddressPlan, pools: tuple[str, str]) -> None:
    """The lab's pools and anycast prefixes must not overlap the host's own networks."""
    ours = {"pools.links4": pools[0], "pools.links6": pools[1],
            "anycast.ipv4": plan.anycast[0], "anycast.ipv6": plan.anycast[1]}
    from lab.model.checks import host_overlaps  # the topology model: only when building

    found = host_overlaps(ours, host_networks())
    if found:
        raise EnvironmentProblem(f"{found[0][0]}: {found[0][1]}",
                                 details=[f"{path}: {message}" for path, message in found[1:]])


def socket_paths(lab_dir: Path, plan: AddressPlan) -> list[Path]:
    """Every unix socket path the lab will create, as its daemons are given it."""
    return [names.node_dir(lab_dir, node.name) / sock for node in plan.nodes.values()
            for sock in names.NODE_SOCKETS.get(node.role, ())]


def check_socket_paths(lab_dir: Path, plan: AddressPlan) -> None:
    """Every unix socket path of the lab fits in sun_path; otherwise EnvironmentProblem
    naming the longest and how long the run directory may be."""
    paths = socket_paths(lab_dir, plan)
    if not paths:
        return
    longest = max(paths, key=lambda p: len(os.fsencode(p)))
    size = len(os.fsencode(longest))
    if size <= MAX_SOCKET_PATH:
        return
    root = lab_dir.parent
    room = MAX_SOCKET_PATH - (size - len(os.fsencode(root)))
    raise EnvironmentProblem(
        f"the run directory {root} is too long for the lab's unix sockets: {longest} would be "
        f"{size} bytes, and a unix socket path holds at most {MAX_SOCKET_PATH}; set "
        f"ANYCAST_LAB_RUN_DIR to a directory of at most {max(room, 0)} bytes for this lab")
