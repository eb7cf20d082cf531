"""Semantic checks of a structurally valid topology: names, references, ASNs, prefixes.

Pure: takes the model, returns (path, message) pairs. Nothing here raises for bad input.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterator

from lab.model.topology import (
    CHECK_BOUNDS_MS,
    CHECK_DEFAULTS,
    MAX_NAME,
    NAME_RE,
    RESERVED_NAMES,
    CheckTiming,
    Topology,
    anchor_mode,
    backup_prefix,
    check_timing,
    parse_duration_us,
    quoted,
    site_bfd,
    valid_lab_name,
)

# RFC 7607 (AS 0), RFC 6793 (AS_TRANS), RFC 7300 (last 16-bit and 32-bit ASNs).
RESERVED_ASNS = {0: "AS 0 is reserved", 23456: "AS 23456 is AS_TRANS",
                 65535: "AS 65535 is reserved", 4294967295: "AS 4294967295 is reserved"}

Finding = tuple[str, str]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Address space neither link pools nor anycast prefixes may touch: the kernel does not
# route it as ordinary unicast between namespaces (or refuses it on an interface), or,
# for IPv4-mapped and IPv4-compatible IPv6, it stands for an IPv4 address.
UNUSABLE: list[tuple[Network, str]] = [(ipaddress.ip_network(net), what) for net, what in (
    ("0.0.0.0/8", "'this network'"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("::/96", "IPv4-compatible, deprecated"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)]
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def unusable(net: Network) -> str | None:
    """'RANGE (what it is)' for the first range of UNUSABLE that `net` overlaps, or None."""
    for bad, what in UNUSABLE:
        if bad.version == net.version and net.overlaps(bad):
            return f"{bad} ({what})"
    return None


def _known(names: list[str] | dict[str, object]) -> str:
    return ", ".join(names) if names else "none defined"


def check_names(topo: Topology) -> Iterator[Finding]:
    if not valid_lab_name(topo.name):
        yield ("name", f"{quoted(topo.name)} is not a valid lab name: use lowercase letters, "
                       "digits and '-', starting with a letter, at most 24 characters")
    seen: dict[str, str] = {}
    for section in ("routers", "sites", "clients"):
        for name in getattr(topo, section):
            path = f"{section}.{name}"
            if name in RESERVED_NAMES:
                yield (path, f"'{name}' is reserved inside a namespace; choose another name")
            elif len(name) > MAX_NAME:
                yield (path, f"name {quoted(name)} is {len(name)} characters; it becomes an "
                             f"interface name, which the kernel limits to {MAX_NAME}")
            elif not NAME_RE.fullmatch(name):
                yield (path, f"name '{name}' may contain only lowercase letters, digits "
                             "and '-', starting with a letter (it becomes an interface name)")
            elif "--" in name:
                yield (path, f"name '{name}' must not contain '--': it separates the two "
                             "node names in a link's name")
            if name in seen:
                yield (path, f"duplicate name '{name}': already used in {seen[name]}")
            else:
                seen[name] = section


def check_references(topo: Topology) -> Iterator[Finding]:
    routers = list(topo.routers)
    for name, site in topo.sites.items():
        if site.router not in topo.routers:
            yield (f"sites.{name}.router",
                   f"unknown router '{site.router}' (known: {_known(routers)})")
    for name, client in topo.clients.items():
        if client.router not in topo.routers:
            yield (f"clients.{name}.router",
                   f"unknown router '{client.router}' (known: {_known(routers)})")
        for site in client.expect_sites:
            if site not in topo.sites:
                yield (f"clients.{name}.expect",
                       f"unknown site '{site}' (known: {_known(list(topo.sites))})")
        for site in client.failover_sites:
            if site not in topo.sites:
                yield (f"clients.{name}.failover", f"unknown site '{site}' "
                                                   f"(known: {_known(list(topo.sites))})")
            elif site in client.expect_sites:
                yield (f"clients.{name}.failover",
                       "the failover site must differ from the expected site"
                       if len(client.expect_sites) == 1 and len(client.failover_sites) == 1
                       else f"the failover site '{site}' is also an expected site")
    if topo.issuer is not None:
        if topo.issuer.router not in topo.routers:
            yield ("issuer.router",
                   f"unknown router '{topo.issuer.router}' (known: {_known(routers)})")
        name = topo.issuer.name
        if name in RESERVED_NAMES or len(name) > MAX_NAME or not NAME_RE.fullmatch(name) \
                or "--" in name:
            yield ("issuer.name", f"{quoted(name)} is not a usable node name: lowercase "
                                  f"letters, digits and '-', at most {MAX_NAME} characters")
        elif name in topo.routers or name in topo.sites or name in topo.clients:
            yield ("issuer.name", f"duplicate name '{name}': already a router, site or client")
    if not topo.sites:
        yield ("sites", "at least one site is required")
    if not topo.routers:
        yield ("routers", "at least one router is required")


def check_links(topo: Topology) -> Iterator[Finding]:
    pairs: dict[frozenset[str], int] = {}
    routers = _known(list(topo.routers))
    for index, link in enumerate(topo.links):
        a, b = link.endpoints
        path = f"links[{index}].endpoints"
        for side, end in enumerate((a, b)):
            if end in topo.routers:
                continue
            kind = "a site" if end in topo.sites else "a client" if end in topo.clients else ""
            if kind:
                yield (f"{path}[{side}]", f"'{end}' is {kind}, not a router: sites and clients "
                                          f"attach through their 'router' field "
                                          f"(routers: {routers})")
            else:
                yield (f"{path}[{side}]", f"unknown router '{end}' (known: {routers})")
        if a == b:
            yield (path, f"link from '{a}' to itself")
        else:
            key = frozenset((a, b))
            if key in pairs:
                yield (path, f"duplicate link between '{a}' and '{b}' "
                             f"(also links[{pairs[key]}])")
            else:
                pairs[key] = index
        if link.impair:
            imp = link.impair
            if imp.jitter and not imp.delay:
                yield (f"links[{index}].impair.jitter", "jitter needs a delay")
            if imp.delay and imp.jitter and parse_duration_us(imp.jitter) > parse_duration_us(
                    imp.delay):
                yield (f"links[{index}].impair.jitter", "jitter is larger than the delay")


def check_connectivity(topo: Topology) -> Iterator[Finding]:
    """Every router is used and all routers form one connected graph.

    The largest group of linked routers (the first in file order on a tie) is the
    reference; every used router outside it is reported, whether it has links or
    only sites and clients.
    """
    adjacency: dict[str, set[str]] = {r: set() for r in topo.routers}
    for link in topo.links:
        a, b = link.endpoints
        if a in adjacency and b in adjacency and a != b:
            adjacency[a].add(b)
            adjacency[b].add(a)
    attached = Counter(s.router for s in topo.sites.values())
    attached.update(c.router for c in topo.clients.values())
    unused: set[str] = set()
    for name in topo.routers:
        if not adjacency[name] and not attached[name]:
            unused.add(name)
            yield (f"routers.{name}", f"router '{name}' is connected to nothing: "
                                      "add a link, a site or a client")
    if len(adjacency) < 2:
        return
    components: list[list[str]] = []
    seen: set[str] = set()
    for start in adjacency:  # file order: each component lists its routers in file order
        if start in seen or start in unused:
            continue
        group, todo = {start}, [start]
        while todo:
            for peer in adjacency[todo.pop()]:
                if peer not in group:
                    group.add(peer)
                    todo.append(peer)
        seen |= group
        components.append([r for r in adjacency if r in group])
    if not components:
        return
    reference = max(components, key=len)  # max() keeps the first of equal lengths
    cut_off = [r for r in adjacency if r not in reference and r not in unused]
    if cut_off:
        noun = "router" if len(cut_off) == 1 else "routers"
        yield ("links", f"{noun} {', '.join(cut_off)} cannot reach '{reference[0]}': "
                        "the router graph must be connected")


# Why an AS a router already holds is refused, for a router and for a site.
ASN_TAKEN = {
    "routers": "AS {asn} is already used by router '{owner}': routers peer over eBGP, so "
               "each needs its own AS",
    "sites": "AS {asn} belongs to router '{owner}': a site must use an AS no router uses "
             "(sites may share one AS)",
}


def check_asns(topo: Topology) -> Iterator[Finding]:
    owners: dict[int, str] = {}  # AS -> the router holding it (routers first)
    for section, nodes in (("routers", topo.routers), ("sites", topo.sites)):
        for name, node in nodes.items():
            if node.asn in RESERVED_ASNS:
                yield (f"{section}.{name}.asn", RESERVED_ASNS[node.asn])
            elif node.asn in owners:
                yield (f"{section}.{name}.asn",
                       ASN_TAKEN[section].format(asn=node.asn, owner=owners[node.asn]))
            elif section == "routers":
                owners[node.asn] = name


def check_bgp(topo: Topology) -> Iterator[Finding]:
    bgp = topo.bgp
    if bgp.keepalive_time >= bgp.hold_time:
        yield ("bgp.keepalive_time",
               f"keepalive_time {bgp.keepalive_time} must be shorter than hold_time "
               f"{bgp.hold_time} (a third of it is usual)")


def check_bfd(topo: Topology) -> Iterator[Finding]:
    """BFD must detect a silent link sooner than the hold timer, or it only adds packets."""
    hold_ms = topo.bgp.hold_time * 1000
    settings = [("bgp.bfd", topo.bgp.bfd)]
    settings += [(f"sites.{name}.bfd", site_bfd(topo, name))
                 for name, site in topo.sites.items() if site.bfd is not None]
    for path, bfd in settings:
        detect = bfd.interval_ms * bfd.multiplier
        used = bfd.enabled or (path == "bgp.bfd" and bfd.routers)
        if used and detect >= hold_ms:
            yield (path, f"BFD detects a silent link after {detect} ms (interval_ms "
                         f"{bfd.interval_ms} x multiplier {bfd.multiplier}), no sooner than "
                         f"the BGP hold time ({hold_ms} ms): shorten the interval or the "
                         "multiplier")


def check_last_site(topo: Topology) -> Iterator[Finding]:
    """The last-site policies need a health checker that can apply them."""
    policy = topo.health.last_site
    if policy == "withdraw":
        return
    if not topo.health.enabled:
        yield ("health.last_site", f"last_site '{policy}' needs health checking "
                                   "(health.enabled: true): with static sites nothing withdraws")
    elif anchor_mode(topo):
        yield ("health.last_site", f"last_site '{policy}' needs health.checker 'healthd' "
                                   "(ExaBGP's bundled healthcheck knows no such policy)")


def check_router_ids(topo: Topology) -> Iterator[Finding]:
    """Explicit router ids: valid, unique, and never equal to a default one.

    A router without a router_id uses its first link address, which comes from
    pools.links4; an explicit id inside that pool can collide with it.
    """
    try:
        pool4: ipaddress.IPv4Network | ipaddress.IPv6Network | None = ipaddress.ip_network(
            topo.pools.links4, strict=False)
    except ValueError:
        pool4 = None  # reported by check_prefixes
    owners: dict[ipaddress.IPv4Address, str] = {}
    for name, router in topo.routers.items():
        if router.router_id is None:
            continue
        path = f"routers.{name}.router_id"
        try:
            rid = ipaddress.IPv4Address(router.router_id)
        except ValueError:
            yield (path, f"'{router.router_id}' is not an IPv4 address")
            continue
        if int(rid) == 0:
            yield (path, "router id 0.0.0.0 is not allowed")
        elif rid in owners:
            yield (path, f"router id {rid} is already used by router '{owners[rid]}'")
        else:
            owners[rid] = name
        if pool4 is not None and pool4.version == 4 and rid in pool4:
            yield (path, f"router id {rid} is inside pools.links4 ({pool4}), where it can "
                         "equal another node's default router id (its first link "
                         "address): choose one outside the pool")


def _network(text: str, version: int, path: str, findings: list[Finding],
             host_len: int | None = None,
             ) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The prefix at `path`, or None after adding a finding.

    `host_len` marks a prefix that must be a host route (anycast): a prefix with host
    bits then suggests the host route of its address, not its network.
    """
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        findings.append((path, f"'{text}' is not a valid IPv{version} prefix"))
        return None
    if net.version != version:
        findings.append((path, f"'{text}' is IPv{net.version}; expected an IPv{version} prefix"))
        return None
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        meant = f"{ipaddress.ip_interface(text).ip}/{host_len}" if host_len else str(net)
        findings.append((path, f"'{text}' has host bits set: did you mean {meant}?"))
        return None
    return net


def check_prefixes(topo: Topology) -> Iterator[Finding]:
    findings: list[Finding] = []
    any4 = _network(topo.anycast.ipv4, 4, "anycast.ipv4", findings, 32)
    any6 = _network(topo.anycast.ipv6, 6, "anycast.ipv6", findings, 128)
    for net, path, host_len in ((any4, "anycast.ipv4", 32), (any6, "anycast.ipv6", 128)):
        if net is None:
            continue
        if net.prefixlen != host_len:
            findings.append((path, f"anycast prefix {net} is not a host route: use a "
                                   f"/{host_len} (e.g. {net.network_address}/{host_len})"))
        elif isinstance(net, ipaddress.IPv6Network) and net.subnet_of(IPV4_MAPPED):
            findings.append((path, f"'{topo.anycast.ipv6}' is an IPv4-mapped address "
                                   f"(::ffff:0:0/96) standing for "
                                   f"{net.network_address.ipv4_mapped}: it cannot be an "
                                   "anycast service address"))
        elif (net.is_multicast or net.is_loopback or net.is_unspecified
              or net.is_link_local):
            findings.append((path, f"{net} cannot be an anycast service address "
                                   "(multicast, loopback, link-local or unspecified)"))
        elif net == ipaddress.IPv4Network("255.255.255.255/32"):
            findings.append((path, f"{net} is the limited broadcast address: it cannot be "
                                   "an anycast service address"))
        elif net.version == 4 and net.is_reserved:
            findings.append((path, f"{net} is in the reserved range 240.0.0.0/4: it cannot "
                                   "be an anycast service address"))
        elif unusable(net):
            findings.append((path, f"{net} is in {unusable(net)}: it cannot be an anycast "
                                   "service address"))
    pool4 = _network(topo.pools.links4, 4, "pools.links4", findings)
    pool6 = _network(topo.pools.links6, 6, "pools.links6", findings)
    for pool, path, example in ((pool4, "pools.links4", "100.64.0.0/16"),
                                (pool6, "pools.links6", "fd00:a11c:ab::/48")):
        if pool is not None and unusable(pool):
            findings.append((path, f"pool {pool} overlaps {unusable(pool)}: link addresses "
                                   f"must be ordinary unicast, such as {example}"))
    links = len(topo.links) + len(topo.sites) + len(topo.clients)
    if pool4 is not None:
        capacity = pool4.num_addresses // 2
        if capacity < links:
            findings.append(("pools.links4", f"pool {pool4} holds {capacity} /31 links; the "
                                             f"topology needs {links}: use a larger pool"))
        if any4 is not None and pool4.overlaps(any4):
            findings.append(("pools.links4", f"pool {pool4} overlaps the anycast prefix {any4}"))
    if pool6 is not None:
        if pool6.prefixlen > 64:
            findings.append(("pools.links6", f"pool {pool6} is longer than /64; links are "
                                             "/64 each: use a /64 or shorter pool"))
        elif 2 ** (64 - pool6.prefixlen) < links:
            findings.append(("pools.links6", f"pool {pool6} holds {2 ** (64 - pool6.prefixlen)}"
                                             f" /64 links; the topology needs {links}"))
        if any6 is not None and pool6.overlaps(any6):
            findings.append(("pools.links6", f"pool {pool6} overlaps the anycast prefix {any6}"))
    if topo.health.last_site == "backup-route":
        for any_net, pool, path in ((any4, pool4, "pools.links4"), (any6, pool6, "pools.links6")):
            if any_net is None or pool is None or any_net.prefixlen != any_net.max_prefixlen:
                continue
            cover = backup_prefix(any_net)
            if pool.overlaps(cover):
                findings.append((path, f"pool {pool} overlaps {cover}, the backup route "
                                       "health.last_site 'backup-route' announces from every "
                                       "site: move the pool or the anycast address"))
    yield from findings


def _shown_ms(ms: float) -> str:
    """2000 -> '2 s', 600000 -> '10 min', 150 -> '150 ms'."""
    for unit, size in (("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size:.0f} {unit}"
    return f"{ms:g} ms"


def check_health(topo: Topology) -> Iterator[Finding]:
    """Each health check's pace: whole milliseconds within the health daemon's bounds, a
    timeout no longer than the interval, a fast interval no slower than the interval; and
    only where the health daemon runs the checks."""
    health = topo.health
    for check in CHECK_DEFAULTS:
        given: CheckTiming = getattr(health.checks, check)
        base = f"health.checks.{check}"
        if given != CheckTiming() and health.checker != "healthd":
            yield (base, f"sets the pace of anycast-healthd's {check} check, but checker is "
                         f"{health.checker}: tune that in health.exabgp_healthcheck instead")
            continue
        bad = False
        for field, (low, high) in CHECK_BOUNDS_MS.items():
            text = getattr(given, field)
            if text is None:
                continue
            ms = parse_duration_us(text) / 1000
            if ms != int(ms):
                yield (f"{base}.{field}", f"{quoted(text)} is not a whole number of "
                                          "milliseconds, the health daemon's unit")
                bad = True
            elif not low <= ms <= high:
                yield (f"{base}.{field}", f"{quoted(text)} is outside "
                                          f"{_shown_ms(low)} to {_shown_ms(high)}")
                bad = True
        if bad:
            continue
        pace = check_timing(topo, check)
        if pace.timeout_ms > pace.interval_ms:
            path = f"{base}.timeout" if given.timeout else f"{base}.interval"
            default = "" if given.timeout else f"the {check} check's default "
            yield (path, f"{default}timeout {_shown_ms(pace.timeout_ms)} is longer than interval "
                         f"{_shown_ms(pace.interval_ms)}: a run must end before the next "
                         "is due (make the timeout at most the interval)")
        if pace.fast_interval_ms > pace.interval_ms:  # only when given: the default adapts
            yield (f"{base}.fast_interval",
                   f"fast_interval {_shown_ms(pace.fast_interval_ms)} is longer than interval "
                   f"{_shown_ms(pace.interval_ms)}: checks may only run faster while the "
                   "state is changing")


CHECKS = (check_names, check_references, check_links, check_connectivity, check_asns,
          check_router_ids, check_bgp, check_bfd, check_last_site, check_prefixes,
          check_health)


def ecmp_warnings(topo: Topology) -> list[Finding]:
    """Under `bgp.ecmp`, a client whose `expect:` names one site that has an equal-cost
    twin (another site on the same router in the same AS: the router's two paths tie and
    it installs both): the client may be answered by either. Not an error: the lab
    still comes up when its flows happen to hash to the named site."""
    if not topo.bgp.ecmp:
        return []
    out = []
    for name, client in topo.clients.items():
        if len(client.expect_sites) != 1 or client.expect_sites[0] not in topo.sites:
            continue
        site = client.expect_sites[0]
        home = topo.sites[site]
        twins = [t for t, other in topo.sites.items() if t != site
                 and other.router == home.router and other.asn == home.asn]
        if twins:
            out.append((f"clients.{name}.expect",
                        f"bgp.ecmp is on and {site} has an equal-cost twin on {home.router} "
                        f"({', '.join(twins)}): the client may be answered by either; "
                        f"name the set: expect: [{', '.join([site, *twins])}]"))
    return out


def check_topology(topo: Topology) -> list[Finding]:
    """Run every semantic check; return all findings, grouped by check."""
    return [finding for check in CHECKS for finding in check(topo)]


def host_overlaps(prefixes: dict[str, str], host: list[Network]) -> list[Finding]:
    """The lab's prefixes (path -> prefix text, e.g. {"pools.links4": "100.64.0.0/16"})
    that overlap one of the host's own networks, one finding each. Loopback and link-local
    host networks are skipped (every machine has them, and the lab's prefixes may never be
    there anyway); a prefix that does not parse is left to check_prefixes."""
    out = []
    for path, text in prefixes.items():
        try:
            ours = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        for net in host:
            if net.is_loopback or net.is_link_local or net.version != ours.version:
                continue
            if ours.overlaps(net):
                out.append((path, f"{ours} overlaps {net}, a network of this machine: the lab "
                                  f"would shadow it (choose another {path.split('.')[0]} "
                                  "prefix)"))
                break
    return out
