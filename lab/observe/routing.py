"""Observing a running lab (read-only): BGP sessions, the routes each router holds and
its best paths from BIRD, which site answers each client (from the DNS service's own
identity), speaker state.

The BIRD readers take the lab's BIRDs (`Birds`: one kept connection per router) so that
one look at the lab (`status`, a round of `wait_converged`) asks each BIRD over one
connection; without it each call opens and closes its own."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.host.birdctl import (
    BfdSession,
    Birds,
    BirdUnavailable,
    Route,
    bgp_state,
    fib_route_command,
    parse_best_route,
    parse_bfd_sessions,
    parse_protocols,
    parse_route_count,
    parse_routes,
    route_count_command,
)
from lab.model import names
from lab.model.plan import AddressPlan
from lab.model.topology import Client, Topology, anchor_mode
from lab.observe.reasons import answer_verdict
from lab.shared.dnsid import Identity, ask_identity
from lab.shared.speaker_client import command as speaker_command


@dataclass
class Session:
    router: str
    protocol: str
    peer: str
    state: str
    info: str


@contextmanager
def _looking(lab_dir: Path, birds: Birds | None) -> Iterator[Birds]:
    """The caller's BIRDs, or the lab's, opened for this one call."""
    if birds is not None:
        yield birds
        return
    with Birds(lab_dir) as own:
        yield own


def session_protocols(plan: AddressPlan, router: str) -> list[tuple[str, str]]:
    """(BIRD protocol, peer) of each BGP session of a router: one to each attached site,
    one per family to each neighbouring router."""
    out = []
    for iface in plan.nodes[router].interfaces:
        peer = plan.nodes[iface.peer]
        if peer.role == "site":
            out.append((names.site_protocol(peer.name), peer.name))
        elif peer.role == "router":
            out += [(names.router_protocol(peer.name, family), peer.name) for family in (4, 6)]
    return out


def sessions(plan: AddressPlan, lab_dir: Path, birds: Birds | None = None) -> list[Session]:
    """Every BGP session as its router's BIRD sees it ("down" when BIRD does not answer,
    or has no such protocol)."""
    out = []
    with _looking(lab_dir, birds) as birds:
        for router in plan.by_role("router"):
            try:
                protos = {p.name: p for p in parse_protocols(
                    birds.ask(router.name, "show protocols").text)}
                missing = "BIRD has no such protocol"
            except BirdUnavailable as exc:
                protos, missing = {}, f"BIRD not answering: {exc.reason}"
            for name, peer in session_protocols(plan, router.name):
                proto = protos.get(name)
                out.append(Session(router.name, name, peer,
                                   bgp_state(proto) if proto else "down",
                                   proto.info if proto else missing))
    return out


def bfd_sessions(plan: AddressPlan, lab_dir: Path, sites: list[str],
                 birds: Birds | None = None) -> dict[str, BfdSession | None]:
    """Per site (of `sites`, those with BFD on): the BFD session its router holds towards
    the site's address, as the router's BIRD reports it; None when BIRD has no such
    session or does not answer."""
    out: dict[str, BfdSession | None] = {}
    by_router: dict[str, list[BfdSession]] = {}
    with _looking(lab_dir, birds) as birds:
        for site in sites:
            node = plan.nodes[site]
            router = node.interfaces[0].peer
            if router not in by_router:
                try:
                    by_router[router] = parse_bfd_sessions(
                        birds.ask(router, "show bfd sessions").text)
                except BirdUnavailable:
                    by_router[router] = []
            address = str(node.interfaces[0].v4.ip)
            out[site] = next((s for s in by_router[router] if s.address == address), None)
    return out


def router_bfd_sessions(plan: AddressPlan, lab_dir: Path, birds: Birds | None = None
                        ) -> dict[str, dict[str, dict[str, str]]]:
    """Per router, per neighbouring router: the state of the BFD session towards it per
    family ({"v4": "Up", "v6": "Up"}; "none" when BIRD holds no such session or does
    not answer), with bgp.bfd.routers."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    with _looking(lab_dir, birds) as birds:
        for router in plan.by_role("router"):
            try:
                held = {s.address: s.state for s in parse_bfd_sessions(
                    birds.ask(router.name, "show bfd sessions").text)}
            except BirdUnavailable:
                held = {}
            peers: dict[str, dict[str, str]] = {}
            for iface in router.interfaces:
                peer = plan.nodes[iface.peer]
                if peer.role != "router":
                    continue
                remote = peer.iface(router.name)
                peers[peer.name] = {"v4": held.get(str(remote.v4.ip), "none"),
                                    "v6": held.get(str(remote.v6.ip), "none")}
            out[router.name] = peers
    return out


Routes = dict[tuple[str, str], list[Route]]


def _routes(birds: Birds, router: str, command: str, prefix: str) -> list[Route]:
    """The routes of BIRD's answer; none when it has no route or does not answer (then
    `birds.unavailable` says so)."""
    try:
        return parse_routes(birds.ask(router, command).text, prefix)
    except BirdUnavailable:
        return []


def anycast_routes(plan: AddressPlan, lab_dir: Path, birds: Birds | None = None) -> Routes:
    """Every route each router holds for each anycast prefix, best or not."""
    with _looking(lab_dir, birds) as birds:
        return {(router.name, prefix): _routes(birds, router.name,
                                               f"show route for {prefix} all", prefix)
                for router in plan.by_role("router") for prefix in plan.anycast}


def held_from_sites(plan: AddressPlan, routes: Routes) -> dict[str, dict[str, bool]]:
    """Per site and family ("v4", "v6"): does the site's router hold a route for the
    anycast prefix learned over that site's own BGP session? Best or not: a drained
    site's GRACEFUL_SHUTDOWN route is still held (and so announced) while routers
    prefer another path. Only the anycast prefix itself counts: `show route for` falls
    back to a covering route (a last-site backup /24 or /48), which the site announces
    whether or not its health is up."""
    families = {str(plan.anycast4): "v4", str(plan.anycast6): "v6"}
    out: dict[str, dict[str, bool]] = {}
    for site in plan.by_role("site"):
        router, protocol = site.interfaces[0].peer, names.site_protocol(site.name)
        out[site.name] = {
            families[prefix]: any(r.protocol == protocol and r.net in (None, prefix)
                                  for r in routes.get((router, prefix), []))
            for prefix in plan.anycast}
    return out


def site_route_count(plan: AddressPlan, lab_dir: Path, site: str,
                     birds: Birds | None = None) -> int | None:
    """How many routes the site's router holds from the site's own BGP session, both
    families (0: withdrawn); None when BIRD does not answer."""
    router = plan.nodes[site].interfaces[0].peer
    with _looking(lab_dir, birds) as birds:
        try:
            reply = birds.ask(router, route_count_command(names.site_protocol(site)))
        except BirdUnavailable:
            return None
    return parse_route_count(reply.text)


def best_route(birds: Birds, router: str, prefix: str) -> Route | None:
    """The route BIRD installs in the router's kernel: its best path, and under ECMP every
    equal-cost next hop (`next_hops`); None when it has none or does not answer."""
    try:
        return parse_best_route(birds.ask(router, fib_route_command(prefix)).text, prefix)
    except BirdUnavailable:
        return None


Forwarding = dict[tuple[str, str], tuple[Route | None, list[str]]]


def forwarding(plan: AddressPlan, lab_dir: Path, birds: Birds | None = None) -> Forwarding:
    """Per router and anycast prefix: its best route, and the nodes a packet crosses from
    it (the router first), following each router's best route hop by hop through the BIRD
    tables; the path ends at a site, or where it breaks (no route, a loop)."""
    with _looking(lab_dir, birds) as birds:
        routes = {(r.name, p): best_route(birds, r.name, p)
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


def next_hop_sites(plan: AddressPlan, routes: dict[tuple[str, str], Route | None],
                   router: str, prefix: str) -> dict[str, list[str]]:
    """Per next hop of the router's route to `prefix` (every equal-cost one under ECMP):
    the sites a packet sent that way can end at, following every next hop of each router
    on the way (a loop or a missing route ends a branch with no site)."""
    by_address = plan.node_by_address()

    def ends(node: str | None, seen: frozenset[str]) -> set[str]:
        if node is None or node in seen:
            return set()
        if plan.nodes[node].role == "site":
            return {node}
        route = routes.get((node, prefix))
        if route is None:
            return set()
        hops = route.next_hops or ([route.next_hop] if route.next_hop else [])
        return set().union(*(ends(by_address.get(h), seen | {node}) for h in hops))

    route = routes.get((router, prefix))
    if route is None:
        return {}
    hops = route.next_hops or ([route.next_hop] if route.next_hop else [])
    return {h: sorted(ends(by_address.get(h), frozenset({router}))) for h in hops}


def best_paths(plan: AddressPlan, lab_dir: Path,
               birds: Birds | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Per router and anycast prefix: next hop, AS path, and the site the path ends at
    (followed hop by hop through the routers' BIRD tables); under ECMP also every next
    hop BIRD gives the kernel, each with the sites it leads to (`next_hop_sites`), and all
    of those sites (`sites`)."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    with _looking(lab_dir, birds) as birds:
        routes = {(r.name, p): best_route(birds, r.name, p)
                  for r in plan.by_role("router") for p in plan.anycast}
        paths = forwarding(plan, lab_dir, birds)
    for (router, prefix), (route, hops) in paths.items():
        end = hops[-1]
        spread = next_hop_sites(plan, routes, router, prefix)
        result.setdefault(router, {})[prefix] = {
            "site": end if len(hops) > 1 and plan.nodes[end].role == "site" else None,
            "sites": sorted(set().union(*spread.values())) if spread else [],
            "next_hop_sites": spread,
            "next_hop": route.next_hop if route else None,
            "next_hops": route.next_hops if route else [],
            "as_path": route.as_path if route else [],
            "protocol": route.protocol if route else None,
            "communities": route.communities if route else [],
            "local_pref": route.local_pref if route else None,
        }
    return result


def client_spread(plan: AddressPlan, queries: int = 16,
                  timeout: float = 0.5) -> dict[str, dict[str, dict[str, int]]]:
    """For each client and family: how many of `queries` id.server questions each site
    answered ("none": unanswered). Each question goes from a new socket, so from another
    source port: under ECMP with an L4 hash that is how one client's flows spread."""
    targets = [(c.name, c.netns, fam, str(addr.network_address))
               for c in plan.by_role("client")
               for fam, addr in (("v4", plan.anycast4), ("v6", plan.anycast6))
               for _ in range(queries)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda t: ask_identity(t[1], t[3], timeout), targets))
    out: dict[str, dict[str, dict[str, int]]] = {}
    for (client, _ns, fam, _addr), ident in zip(targets, answers, strict=True):
        counts = out.setdefault(client, {}).setdefault(fam, {})
        key = ident.site or "none"
        counts[key] = counts.get(key, 0) + 1
    return out


def client_sites(plan: AddressPlan, timeout: float = 0.5) -> dict[str, dict[str, Identity]]:
    """For each client: the site answering on the IPv4 and on the IPv6 anycast address
    (a query that times out is asked once more)."""
    targets = [(c.name, c.netns, fam, str(addr.network_address))
               for c in plan.by_role("client")
               for fam, addr in (("v4", plan.anycast4), ("v6", plan.anycast6))]
    def ask(netns: str, address: str) -> Identity:
        # One lost or late datagram is not "nobody answers" (a stub resolver asks again
        # too): a timeout is asked once more; a refusal or an answer is final.
        ident = ask_identity(netns, address, timeout)
        return ask_identity(netns, address, timeout) if ident.error == "timeout" else ident

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda t: ask(t[1], t[3]), targets))
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
    expected: str  # the expected site, or "a1 or a2" for a list of them
    error: str | None = None  # why nobody answered

    def __str__(self) -> str:
        why = f" ({self.error})" if self.error else ""
        return (f"client {self.client} ({self.family}) is answered by {self.got or 'nobody'}"
                f"{why}, expected {self.expected}")


def expected_words(client: Client) -> str:
    """A client's expected site(s) in words: 'ams', or 'a1 or a2'."""
    return " or ".join(client.expect_sites)


def wrong_answers(topo: Topology, answers: dict[str, dict[str, Identity]],
                  families: tuple[str, ...] | None = None,
                  unavailable: dict[str, set[str]] | None = None) -> list[WrongAnswer]:
    """Every client answer that does not come from the client's expected site. Given
    `unavailable` (per family, the sites withdrawn or faulted), an answer from the
    client's declared failover site while its expected site is unavailable is as
    expected, not wrong; without it (as `up` asks, before anything may be down) only the
    expected site is right."""
    out = []
    for name, client in topo.clients.items():
        for fam in families or announced_families(topo):
            got = answers[name][fam]
            down = (unavailable or {}).get(fam, set())
            if not answer_verdict(got.site, client.expect, client.failover, down):
                out.append(WrongAnswer(name, fam, got.site, expected_words(client), got.error))
    return out


def misplaced(topo: Topology, answers: dict[str, dict[str, Identity]],
              families: tuple[str, ...] | None = None) -> list[str]:
    """One line per client answer that does not come from the client's expected site."""
    return [str(w) for w in wrong_answers(topo, answers, families)]


def speaker_state(lab_dir: Path, site: str) -> dict[str, Any]:
    try:
        return speaker_command(names.speaker_socket(lab_dir, site), "state", timeout=2.0)
    except (OSError, ValueError) as exc:
        return {"ok": False, "state": "unknown", "detail": str(exc)}
