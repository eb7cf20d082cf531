"""Reading BIRD through its control socket (birdc -r: read-only) and parsing the answers."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lab.env import tool_path


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
    """`show protocols` -> one entry per protocol (BIRD 2 table layout)."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5 or parts[0] in ("BIRD", "Name") or parts[1] == "ready.":
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
    """One route BIRD holds for a prefix; `primary` is the best one (starred)."""

    prefix: str
    protocol: str
    next_hop: str | None
    interface: str | None
    as_path: list[int] = field(default_factory=list)
    communities: list[str] = field(default_factory=list)
    local_pref: int | None = None
    next_hops: list[str] = field(default_factory=list)
    primary: bool = False


ROUTE_HEAD = re.compile(r"^(\S+)?\s+\w+\s+\[(\S+)\s[^\]]*\]\s+(\*)?")
VIA = re.compile(r"^\s+via\s+(\S+)\s+on\s+(\S+)")


def parse_routes(text: str, prefix: str) -> list[Route]:
    """Every route from `show route for PREFIX all`, best or not, in BIRD's order."""
    routes: list[Route] = []
    current: Route | None = None
    for line in text.splitlines():
        head = ROUTE_HEAD.match(line)
        if head and not line.startswith("\t") and "[" in line:
            current = Route(prefix, head.group(2), None, None, primary=bool(head.group(3)))
            routes.append(current)
            continue
        if current is None:
            continue
        via = VIA.match(line)
        if via:
            current.next_hops.append(via.group(1))
            if current.next_hop is None:
                current.next_hop, current.interface = via.group(1), via.group(2)
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

