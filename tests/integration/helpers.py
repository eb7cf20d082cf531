"""Helpers for integration tests: running the CLI, labs with unique names, what the default
topology file expects, polling, reading a lab (routes, identities, event logs, HTTPS), and
snapshots of the root namespace and of a lab's leftovers. The fixtures built on these
(`make_lab`, `default_lab`) are in conftest.py."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pyroute2 import IPRoute, netns

from lab.host import labs, procs
from lab.host.journal import Journal, lab_dir, run_root
from lab.host.lock import lock_path
from lab.host.procs import run_in
from lab.model.names import lab_netns_prefix
from lab.observe.routing import client_sites, site_route_count
from lab.ops import lifecycle
from lab.render import credentials

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"

# What the default topology expects, from the file itself, not from code.
TOPOLOGY = yaml.safe_load(DEFAULT.read_text())
EXPECTED = {name: c["expect"] for name, c in TOPOLOGY["clients"].items()}
FAILOVER = {name: c["failover"] for name, c in TOPOLOGY["clients"].items()}


# --- the CLI and labs --------------------------------------------------------------------

def unique_name(prefix: str = "it") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def lab_cli(*args: str, timeout: float = 180, check: bool = False
            ) -> subprocess.CompletedProcess[str]:
    """`python -m lab ARGS...` from the repository, output captured."""
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True,
                          text=True, timeout=timeout, check=check, cwd=ROOT)


class LabHandle:
    """A lab of a given name and topology: `up` through the CLI, `down` from its journal."""

    def __init__(self, name: str, topology: Path) -> None:
        self.name = name
        self.topology = topology

    def up(self, timeout: float = 180) -> labs.Lab:
        result = lab_cli("up", str(self.topology), "--name", self.name, "--json",
                         timeout=timeout)
        # Under --json the error is on stdout: show both.
        assert result.returncode == 0, (f"up failed (exit {result.returncode}): "
                                        f"{result.stdout[-3000:]} {result.stderr[-3000:]}")
        return labs.open_lab(self.name)

    def down(self) -> None:
        """Tear the lab down, and remove what it leaves by design: the kept logs of a
        failed run and its lock file (a test owns those too)."""
        if Journal(self.name).exists():
            lifecycle.teardown(Journal(self.name))
        for path in lifecycle.failed_runs():
            if path.name == f"{lifecycle.FAILED_PREFIX}{self.name}":
                shutil.rmtree(path, ignore_errors=True)
        lock_path(self.name).unlink(missing_ok=True)

    @property
    def dir(self) -> Path:
        return lab_dir(self.name)


def static_copy(topology: Path, directory: Path) -> Path:
    """The topology with health daemons off: sites announce statically, so a test can
    withdraw and re-announce by hand through the speaker's API (pure BGP behaviour)."""
    data = yaml.safe_load(topology.read_text())
    data.setdefault("health", {})["enabled"] = False
    path = directory / f"static-{topology.name}"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- polling -----------------------------------------------------------------------------


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


# --- reading a lab -----------------------------------------------------------------------

def sites_seen(plan) -> dict[str, tuple[str | None, str | None]]:
    """Per client: the site answering `id.server` on the IPv4 and on the IPv6 address."""
    answers = client_sites(plan, timeout=0.3)
    return {c: (a["v4"].site, a["v6"].site) for c, a in answers.items()}


def site_routes(lab: labs.Lab, site: str) -> int:
    """Routes the site's router holds from the site's BGP session (0: withdrawn, -1: BIRD
    gave no count)."""
    count = site_route_count(lab.plan, lab.journal.dir, site)
    return -1 if count is None else count


def log_size(path: Path) -> int:
    """Where a test's own lines of an append-only log will start: read it at test start."""
    return path.stat().st_size if path.exists() else 0


def events_since(path: Path, offset: int) -> list[dict[str, Any]]:
    """The JSON-lines events written to `path` after byte `offset` (from log_size)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def curl(netns: str, lab_dir: Path, token: str, address: str, *, ca: bool = True,
         auth: bool = True) -> tuple[int, dict[str, str], str]:
    """POST `token` to https://ADDRESS/introspect from `netns` as lab-admin (with the lab
    CA and credentials unless told otherwise): curl's exit code, headers, body."""
    p = credentials.paths(lab_dir)
    host = f"[{address}]" if ":" in address else address
    argv = ["curl", "-sS", "-m", "5", "-D", "-", "-d", f"token={token}"]
    if ca:
        argv += ["--cacert", str(p.ca_cert)]
    if auth:
        argv += ["-u", f"lab-admin:{credentials.client_secret(lab_dir, 'lab-admin')}"]
    result = run_in(netns, [*argv, f"https://{host}/introspect"])
    if result.returncode != 0:
        return result.returncode, {}, result.stderr
    head, _, body = result.stdout.partition("\n\n")  # text mode turned CRLF into LF
    headers = {k.lower(): v.strip() for k, _, v in
               (line.partition(":") for line in head.splitlines()[1:])}
    return 0, headers, body


# --- the root namespace and leftovers ----------------------------------------------------

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


def traces_of(names: Iterable[str]) -> dict[str, list[str]]:
    """Whatever on this machine carries one of these lab names: namespaces, marked
    processes, entries of the run root, lock files. Lab names are unique per test, so
    other people's labs never match, however they come and go meanwhile."""
    wanted = set(names)
    prefixes = tuple(lab_netns_prefix(n) for n in wanted)

    def named(directory: Path) -> list[str]:
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if any(n in p.name for n in wanted))

    root = run_root()
    return {
        "namespaces": sorted(n for n in netns.listnetns() if n.startswith(prefixes)),
        "processes": sorted(wanted & procs.marked_labs()),
        "files": named(root) + sorted(str(lock_path(n)) for n in wanted
                                      if lock_path(n).exists()),
    }


NO_TRACES: dict[str, list[str]] = {"namespaces": [], "processes": [], "files": []}

