"""Reading BIRD through its control socket (birdc -r: read-only) and parsing the answers."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lab.host.env import tool_path


def birdc(ctl: Path, command: str, timeout: float = 5.0, restricted: bool = True) -> str:
    argv = [tool_path("birdc") or "birdc", "-s", str(ctl)]
    if restricted:
        argv.append("-r")
    result = subprocess.run([*argv, *command.split()], capture_output=True, text=True,
                            timeout=timeout, check=False)
    return result.stdout if result.returncode == 0 else ""


@dataclass(frozen=True)
class Protocol:
    name: str
    proto: str
    state: str
    info: str


def parse_protocols(text: str) -> list[Protocol]:
    """`show protocols` -> one entry per protocol (BIRD 2 table layout). The indented
    detail lines of `show protocols all` are skipped."""
    out = []
    for line in text.splitlines():
        if line[:1].isspace():
            continue
        parts = line.split(None, 5)
        if len(parts) < 5 or parts[0] in ("BIRD", "Name"):
            continue
        info = parts[5].strip() if len(parts) > 5 else ""
        out.append(Protocol(parts[0], parts[1], parts[3], info))
    return out


def bgp_state(proto: Protocol) -> str:
    """'Established', 'Active', 'Connect', ... (the first word of BIRD's info column)."""
    if proto.state == "up":
        return "Established"
    return proto.info.split()[0] if proto.info else proto.state


@dataclass
class Route:
    """One route of `show route ... all`. `next_hops` lists every `via` line: one for a
    plain route, several for the merged (ECMP) route of `show route ... export kernel4`."""

    prefix: str
    protocol: str
    next_hop: str | None
    interface: str | None
    as_path: list[int] = field(default_factory=list)
    communities: list[str] = field(default_factory=list)
    local_pref: int | None = None
    next_hops: list[str] = field(default_factory=list)
    net: str | None = None    # the network BIRD answered with (`for` is a longest match)
    primary: bool = False     # starred: BIRD's best route for the network


BestRoute = Route

# The kernel protocols of our BIRD configuration (templates/bird.conf.j2), per family.
KERNEL_PROTOCOLS = {4: "kernel4", 6: "kernel6"}

ROUTE_HEAD = re.compile(r"^(\S+)?\s+\w+\s+\[(\S+)\s[^\]]*\]\s+(\*)?")
VIA = re.compile(r"^\s+via\s+(\S+)\s+on\s+(\S+)")
DEV = re.compile(r"^\s+dev\s+(\S+)")


def parse_routes(text: str, prefix: str = "") -> list[Route]:
    """Every route of `show route [for PREFIX] [export P] all`, in BIRD's order (for each
    network its primary route first). `prefix` labels the routes (default: their net)."""
    routes: list[Route] = []
    current: Route | None = None
    net: str | None = None
    for line in text.splitlines():
        head = ROUTE_HEAD.match(line)
        if head and not line.startswith("\t"):
            net = head.group(1) or net
            current = Route(prefix or net or "", head.group(2), None, None, net=net,
                            primary=head.group(3) is not None)
            routes.append(current)
            continue
        if current is None:
            continue
        via, dev = VIA.match(line), DEV.match(line)
        if via:
            current.next_hops.append(via.group(1))
            if current.next_hop is None:
                current.next_hop, current.interface = via.group(1), via.group(2)
        elif dev and current.interface is None:
            current.interface = dev.group(1)
        stripped = line.strip()
        if stripped.startswith("BGP.as_path:"):
            current.as_path = [int(a) for a in stripped.split(":", 1)[1].split()
                               if a.isdigit()]
        elif stripped.startswith("BGP.community:"):
            pairs = re.findall(r"\((\d+),\s*(\d+)\)", stripped)
            current.communities = [f"{a}:{b}" for a, b in pairs]
        elif stripped.startswith("BGP.local_pref:"):
            current.local_pref = int(stripped.split(":", 1)[1])
    return routes


def parse_best_route(text: str, prefix: str) -> Route | None:
    """The primary (starred) route from `show route for PREFIX [export P] all`; None when
    BIRD has no route ("Network not found")."""
    return next((r for r in parse_routes(text, prefix) if r.primary), None)


def fib_route_command(prefix: str) -> str:
    """Ask for the route BIRD gives the kernel: with `merge paths` (ECMP) that is one
    route carrying every equal-cost next hop; the table itself keeps one route per peer."""
    family = 6 if ":" in prefix else 4
    return f"show route for {prefix} export {KERNEL_PROTOCOLS[family]} all"
