"""Helpers for integration tests: snapshots of the root namespace, leftovers, polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute, netns

from lab.host import procs
from lab.model.names import lab_netns_prefix

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, interval: float = 0.02,
             message: str = "condition") -> T:
    """Poll until `condition()` is truthy; fail with `message` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def root_snapshot() -> dict[str, Any]:
    """The root namespace's links, addresses, routes and forwarding sysctls (read-only)."""
    with IPRoute() as ipr:
        links = sorted((ln.get_attr("IFLA_IFNAME"), ln["flags"]) for ln in ipr.get_links())
        addrs = sorted((a["index"], a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                       for a in ipr.get_addr())
        routes = sorted(
            (r["family"], r.get_attr("RTA_TABLE"), str(r.get_attr("RTA_DST")), r["dst_len"],
             str(r.get_attr("RTA_GATEWAY")), r.get_attr("RTA_OIF"))
            for r in ipr.get_routes(family=0))
    sysctls = {p: Path(p).read_text().strip() for p in (
        "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding",
        "/proc/sys/net/ipv4/conf/all/rp_filter")}
    return {"links": links, "addresses": addrs, "routes": routes, "sysctls": sysctls}


def leftovers(lab: str, run_dir: Path) -> dict[str, Any]:
    """Anything of this lab still on the machine: namespaces, marked processes, files."""
    prefix = lab_netns_prefix(lab)
    return {
        "namespaces": [n for n in netns.listnetns() if n.startswith(prefix)],
        "processes": procs.marked_pids(lab),
        "run_dir": run_dir.exists(),
    }


def nothing_left(lab: str, run_dir: Path) -> bool:
    left = leftovers(lab, run_dir)
    return not left["namespaces"] and not left["processes"] and not left["run_dir"]
