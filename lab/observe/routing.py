"""Observing a running lab (read-only): BGP sessions, the routes each router holds and
its best paths from BIRD, which site answers each client (from the DNS service's own
identity), speaker state."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.host.birdctl import (
    Route,
    bgp_state,
    birdc,
    fib_route_command,
    parse_best_route,
    parse_protocols,
    parse_routes,
)
from lab.model.plan import AddressPlan
from lab.model.topology import Topology
from lab.render.exabgp import anchor_mode
from lab.render.jinja import proto_name
from lab.render.launch import node_dir
from lab.shared.dnsid import Identity, ask_identity
from lab.shared.speaker_client import command as speaker_command


@dataclass
class Session:
    router: str
    protocol: str
    peer: str
    state: str
    info: str


def sessions(plan: AddressPlan, lab_dir: Path) -> list[Session]:
    """Every BGP session as its router's BIRD sees it."""
    out = []
    for router in plan.by_role("router"):
        ctl = node_dir(lab_dir, router.name) / "bird.ctl"
        protos = {p.name: p for p in parse_protocols(birdc(ctl, "show protocols"))}
        for iface in router.interfaces:
            peer = plan.nodes[iface.peer]
            if peer.role == "client":
                continue
            pname = peer.name.replace("-", "_")
            names = ([f"site_{pname}"] if peer.role == "site"
                     else [f"r_{pname}_4", f"r_{pname}_6"])
            for name in names:
                proto = protos.get(name)
                out.append(Session(router.name, name, peer.name,
                                   bgp_state(proto) if proto else "down",
                                   proto.info if proto else "BIRD not answering"))
    return out


Routes = dict[tuple[str, str], list[Route]]


def anycast_routes(plan: AddressPlan, lab_dir: Path) -> Routes:
    """Every route each router holds for each anycast prefix, best or not."""
    out: Routes = {}
    for router in plan.by_role("router"):
        ctl = node_dir(lab_dir, router.name) / "bird.ctl"
        for prefix in plan.anycast:
            out[(router.name, prefix)] = parse_routes(
                birdc(ctl, f"show route for {prefix} all"), prefix)
    return out


def held_from_sites(plan: AddressPlan, routes: Routes) -> dict[str, dict[str, bool]]:
    """Per site and family ("v4", "v6"): does the site's router hold a route for the
    anycast prefix learned over that site's own BGP session? Best or not: a drained
    site's GRACEFUL_SHUTDOWN route is still held (and so announced) while routers
    prefer another path."""
    families = {str(plan.anycast4): "v4", str(plan.anycast6): "v6"}
    out: dict[str, dict[str, bool]] = {}
    for site in plan.by_role("site"):
        router, protocol = site.interfaces[0].peer, f"site_{proto_name(site.name)}"
        out[site.name] = {
            families[prefix]: any(r.protocol == protocol for r in routes.get((router, prefix), []))
            for prefix in plan.anycast}
    return out


def best_route(lab_dir: Path, router: str, prefix: str) -> Route | None:
    """The route BIRD installs in the router's kernel: its best path, and under ECMP every
    equal-cost next hop (`next_hops`)."""
    ctl = node_dir(lab_dir, router) / "bird.ctl"
    return parse_best_route(birdc(ctl, fib_route_command(prefix)), prefix)


Forwarding = dict[tuple[str, str], tuple[Route | None, list[str]]]


def forwarding(plan: AddressPlan, lab_dir: Path) -> Forwarding:
    """Per router and anycast prefix: its best route, and the nodes a packet crosses from
    it (the router first), following each router's best route hop by hop through the BIRD
    tables; the path ends at a site, or where it breaks (no route, a loop)."""
    routes = {(r.name, p): best_route(lab_dir, r.name, p)
              for r in plan.by_role("router") for p in plan.anycast}
    by_address = plan.node_by_address()
    out: Forwarding = {}
    for (router, prefix), route in routes.items():
        hops, current = [router], route
        while current is not None:
            nxt = by_address.get(current.next_hop or "")
            if nxt is None or nxt in hops:
                break
            hops.append(nxt)
            if plan.nodes[nxt].role == "site":
                break
            current = routes.get((nxt, prefix))
        out[(router, prefix)] = (route, hops)
    return out


def best_paths(plan: AddressPlan, lab_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Per router and anycast prefix: next hop, AS path, and the site the path ends at
    (followed hop by hop through the routers' BIRD tables)."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for (router, prefix), (route, hops) in forwarding(plan, lab_dir).items():
        end = hops[-1]
        result.setdefault(router, {})[prefix] = {
            "site": end if len(hops) > 1 and plan.nodes[end].role == "site" else None,
            "next_hop": route.next_hop if route else None,
            "next_hops": route.next_hops if route else [],
            "as_path": route.as_path if route else [],
            "protocol": route.protocol if route else None,
            "communities": route.communities if route else [],
            "local_pref": route.local_pref if route else None,
        }
    return result


def client_sites(plan: AddressPlan, timeout: float = 0.5) -> dict[str, dict[str, Identity]]:
    """For each client: the site answering on the IPv4 and on the IPv6 anycast address."""
    targets = [(c.name, c.netns, fam, str(addr.network_address))
               for c in plan.by_role("client")
               for fam, addr in (("v4", plan.anycast4), ("v6", plan.anycast6))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda t: ask_identity(t[1], t[3], timeout), targets))
    out: dict[str, dict[str, Identity]] = {}
    for (client, _ns, fam, _addr), ident in zip(targets, answers, strict=True):
        out.setdefault(client, {})[fam] = ident
    return out


def announced_families(topo: Topology) -> tuple[str, ...]:
    """The families the sites announce: both, except under ExaBGP's bundled healthcheck
    (the benchmark anchor), which announces IPv4 only."""
    return ("v4",) if anchor_mode(topo) else ("v4", "v6")


@dataclass(frozen=True)
class WrongAnswer:
    """A client answer that does not come from the client's expected site."""

    client: str
    family: str  # "v4" or "v6"
    got: str | None  # the site that answered; None: nobody did
    expected: str
    error: str | None = None  # why nobody answered

    def __str__(self) -> str:
        why = f" ({self.error})" if self.error else ""
        return (f"client {self.client} ({self.family}) is answered by {self.got or 'nobody'}"
                f"{why}, expected {self.expected}")


def wrong_answers(topo: Topology, answers: dict[str, dict[str, Identity]],
                  families: tuple[str, ...] | None = None) -> list[WrongAnswer]:
    """Every client answer that does not come from the client's expected site."""
    out = []
    for name, client in topo.clients.items():
        for fam in families or announced_families(topo):
            got = answers[name][fam]
            if got.site != client.expect:
                out.append(WrongAnswer(name, fam, got.site, client.expect, got.error))
    return out


def misplaced(topo: Topology, answers: dict[str, dict[str, Identity]],
              families: tuple[str, ...] | None = None) -> list[str]:
    """One line per client answer that does not come from the client's expected site."""
    return [str(w) for w in wrong_answers(topo, answers, families)]


def speaker_state(lab_dir: Path, site: str) -> dict[str, Any]:
    sock = node_dir(lab_dir, site) / "speaker.sock"
    try:
        return speaker_command(sock, "state", timeout=2.0)
    except (OSError, ValueError) as exc:
        return {"ok": False, "state": "unknown", "detail": str(exc)}
