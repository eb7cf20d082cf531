"""The typed topology model: what a topology file may say, and its defaults.

Structure only (types, ranges, unknown keys). Cross-references and address
arithmetic are checked in `checks.py`, so that every problem is reported at once.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# The lab-name rule lives with the names (pure); here for the models' checks and callers.
from lab.model.names import LAB_NAME_RE as LAB_NAME_RE
from lab.model.names import valid_lab_name as valid_lab_name

# Every pattern here is matched in full (fullmatch): `$` would also match before a
# trailing newline.
# A node's name becomes an interface name on each of its neighbours (the kernel
# allows 15 bytes) and part of its namespace's name.
NAME_RE = re.compile(r"[a-z][a-z0-9-]*")
MAX_NAME = 15
# Names that would collide with kernel names inside a namespace: /proc/sys/net/ipv4/conf/
# {all,default,lo}, and the fallback devices that the tunnel modules (ip_gre, ipip, sit,
# ip6_tunnel, ip6_gre), once loaded on the host, put into every new namespace: a node of
# that name could not be a neighbour's interface there.
RESERVED_NAMES = frozenset({"lo", "all", "default", "gre0", "gretap0", "erspan0", "tunl0",
                            "sit0", "ip6tnl0", "ip6gre0"})

# One duration syntax for every duration field, like tc's rates: a number and a lowercase
# unit with no space ('20ms'); '20 ms' is refused with a message naming that form.
DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s)")
SPACED_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s+(us|ms|s)")
DURATION_SCALE = {"us": 1, "ms": 1000, "s": 1_000_000}
# pyroute2 sends netem's delay and jitter as 32-bit counts of kernel ticks (15.625 per
# microsecond), which end at 274.9 s; a minute is already past `up`'s convergence deadline.
MAX_DURATION_US = 60_000_000
# What pyroute2's tc rate parser accepts: a whole number, a lowercase unit, no space.
RATE_RE = re.compile(r"(\d+)(bit|kbit|mbit|gbit)")
RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}
# tc's rate (tbf and netem) is a 32-bit count of bytes per second: 4294967295 B/s.
MAX_RATE_BIT = (2**32 - 1) * 8
# tbf's buffer is the time to send the lab's 32 KiB burst at the rate, in 32-bit kernel
# ticks: below 954 bit/s it does not fit.
MIN_RATE_BIT = 1_000

# How many of each a lab may have, and why (checked on the YAML tree before anything
# else reads the section; docs/topologies.md). On 2 cores a generated lab of 50 sites on
# 5 routers comes up in 6-8 s with ~2.2 GiB (PSS), 100 sites on 10 routers in 19-27 s with
# ~4.3 GiB and then idles at ~1.3 cores: 128 leaves room, not much more.
MAX_ROUTERS = 64
MAX_SITES = 128
MAX_CLIENTS = 256
MAX_LINKS = 512
SECTION_LIMITS = {
    "routers": (MAX_ROUTERS, "each is a namespace with a BIRD daemon and an AS of its own"),
    "sites": (MAX_SITES, "each is a namespace with up to five daemons, about 42 MiB; "
                         "100 sites take 19-27 s and 4.1 GiB to come up on 2 cores"),
    "clients": (MAX_CLIENTS, "each is a namespace whose prober `measure` drives at up to "
                             "1000 queries/s"),
    "links": (MAX_LINKS, "each is a veth pair with a BGP session at both ends"),
}


def quoted(value: str, limit: int = 40) -> str:
    """A value for a message: quoted, cut when long."""
    return f"'{value}'" if len(value) <= limit else f"'{value[:limit - 3]}...'"


def check_duration(value: str, longest_us: float | None = None, longest: str = "",
                   examples: str = "'20ms', '500us' or '1s'") -> str:
    """`value` if it is a duration in the lab's one syntax ('20ms') and, with
    `longest_us`, no longer than that; else ValueError with one sentence saying how to
    write it (`examples`: the forms it shows) or that it is longer than `longest` (the
    limit in words and why: "60 s, the longest delay a lab link takes"). Every duration
    field of a topology or a scenario is checked here."""
    spaced = SPACED_DURATION_RE.fullmatch(value)
    if spaced:
        raise ValueError(f"{quoted(value)} has a space: write a duration as a number and "
                         f"its unit with no space, like '{spaced.group(1)}{spaced.group(2)}'")
    if not DURATION_RE.fullmatch(value):
        raise ValueError(f"{quoted(value)} is not a duration like {examples} "
                         "(a number and a lowercase unit, no space)")
    if longest_us is not None and duration_us(value) > longest_us:
        raise ValueError(f"{quoted(value)} is longer than {longest}")
    return value


# Strict: YAML's `yes` (True), '65001' and 65001.0 are not AS numbers. The range is the
# whole 32-bit space so that checks.py can explain the reserved ones (0, 4294967295).
Asn = Annotated[int, Field(strict=True, ge=0, le=4294967295,
                           description="BGP AS number (1-4294967294, not reserved)")]


_NUMBERS = (int, float, int | None, float | None)
_BOOLS = (bool, bool | None)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _as_written(cls, value: Any, info: ValidationInfo) -> Any:
        """A number is a number and a switch is true or false, as written: YAML's `yes` is
        not 1, nor "2" a count, nor 1 a switch (a mistake to name, not to convert)."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None or any(getattr(m, "strict", False) for m in field.metadata):
            return value  # a strict field says it in its own words
        kind = field.annotation
        if kind in _NUMBERS and isinstance(value, bool | str):
            raise ValueError(f"expected a number, not {_written(value)}")
        if kind in _BOOLS and value is not None and not isinstance(value, bool):
            raise ValueError(f"expected true or false, not {_written(value)}")
        return value


def _written(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean (YAML reads yes/no/on/off as booleans)"
    return f"the string {value!r}" if isinstance(value, str) else repr(value)


class Anycast(Strict):
    """The service prefixes announced from every site."""

    ipv4: str = Field("203.0.113.53/32", description="IPv4 anycast host route (/32)")
    ipv6: str = Field("2001:db8:53::53/128", description="IPv6 anycast host route (/128)")


class Pools(Strict):
    """Where link addresses come from. Defaults avoid the host's TEST-NET-1 uplink."""

    links4: str = Field("100.64.0.0/16", description="IPv4 pool, split into /31 per link")
    links6: str = Field("fd00:a11c:ab::/48", description="IPv6 pool, split into /64 per link")


# BIRD takes BFD intervals from 1 ms; below 10 ms a 2-core lab misses its own packets, and
# past 10 s the hold timer (3 s at least) is faster anyway.
MIN_BFD_INTERVAL_MS = 10
MAX_BFD_INTERVAL_MS = 10_000


class Bfd(Strict):
    """BFD on the routers' sessions to their sites: each site runs a BFD-only BIRD beside
    ExaBGP (which has no BFD), so a router notices a silent link in interval x multiplier
    instead of the hold time. The responder proves the site's namespace and link alive, not
    ExaBGP: a frozen ExaBGP is still caught by the hold timer only. `routers` turns it on
    between routers too (BIRD at both ends: no responder needed)."""

    enabled: bool = Field(False, strict=True, description="run BFD on the routers' sessions "
                          "to the sites (and a BFD responder in each site)")
    interval_ms: int = Field(100, strict=True, ge=MIN_BFD_INTERVAL_MS,
                             le=MAX_BFD_INTERVAL_MS, description="BFD transmit and receive "
                             "interval in milliseconds")
    multiplier: int = Field(3, strict=True, ge=1, le=255, description="BFD packets missed "
                            "before the session is down (detection = interval x multiplier)")
    routers: bool = Field(False, strict=True, description="also run BFD on the sessions "
                          "between routers (both families, the same interval and "
                          "multiplier): a silent core link is noticed in interval x "
                          "multiplier instead of the hold time")


class SiteBfd(Strict):
    """A site's own BFD settings; each field left out takes the lab's (bgp.bfd)."""

    enabled: bool | None = Field(None, strict=True, description="BFD for this site; null: "
                                 "as bgp.bfd.enabled")
    interval_ms: int | None = Field(None, strict=True, ge=MIN_BFD_INTERVAL_MS,
                                    le=MAX_BFD_INTERVAL_MS, description="null: as "
                                    "bgp.bfd.interval_ms")
    multiplier: int | None = Field(None, strict=True, ge=1, le=255,
                                   description="null: as bgp.bfd.multiplier")


class Bgp(Strict):
    """Lab-wide BGP behaviour."""

    ecmp: bool = Field(False, description="install equal-cost paths (BIRD merge paths)")
    multipath_hash: Literal["l3", "l4"] = Field("l3", description="Linux multipath hash policy")
    hold_time: int = Field(3, ge=3, le=65535, description="BGP hold time in seconds (min 3)")
    keepalive_time: int = Field(1, ge=1, le=21845, description="BGP keepalive in seconds")
    bfd: Bfd = Bfd()


class ExabgpHealthcheck(Strict):
    """ExaBGP's bundled `exabgp healthcheck` (the anchor we compare against), used when
    health.checker is 'exabgp-healthcheck'. Defaults are its own (exabgp 5.0.15). It
    checks DNS only, with one `dig` per check at the site's own unicast address, and
    announces only the IPv4 anycast prefix (it has a single next hop)."""

    interval_s: float = Field(5.0, gt=0, le=3600, description="seconds between checks "
                              "(its --interval; it sleeps this long after each check)")
    fast_interval_s: float = Field(1.0, gt=0, le=3600, description="seconds between checks "
                                   "while rising or falling (its --fast-interval)")
    timeout_s: int = Field(5, ge=0, le=3600, description="its own command timeout, whole "
                           "seconds only (its --timeout; 0: none)")
    rise: int = Field(3, ge=1, le=100, description="successes before announcing")
    fall: int = Field(3, ge=1, le=100, description="failures before withdrawing")
    command_timeout_s: float | None = Field(None, gt=0, le=3600, description="wrap the "
                                            "check command in `timeout N` (sub-second "
                                            "allowed); null: no wrapper")
    withdraw_on_down: bool = Field(True, description="withdraw when down (its "
                                   "--withdraw-on-down); false: its own default, re-announce "
                                   "with MED 1000, which does not move clients of a "
                                   "neighbouring AS")


@dataclass(frozen=True)
class CheckDefaults:
    """A health check's pace when the topology does not set it (the health daemon's
    default profile for that check type). Times in milliseconds."""

    interval_ms: int  # between runs while the check's state holds
    fast_interval_ms: int  # between runs while it is changing (and from start)
    timeout_ms: int  # one run's limit
    rise: int  # good results in a row before a down check is up
    fall: int  # bad results in a row before an up check is down


# The checks anycast-healthd runs on every site, and their defaults.
CHECK_DEFAULTS = {
    "dns": CheckDefaults(interval_ms=100, fast_interval_ms=10, timeout_ms=100, rise=3, fall=2),
    "introspect": CheckDefaults(interval_ms=500, fast_interval_ms=100, timeout_ms=300,
                                rise=2, fall=2),
}
# What the health daemon accepts (each bound is its own; times in milliseconds).
CHECK_BOUNDS_MS = {"interval": (10, 3_600_000), "fast_interval": (5, 3_600_000),
                   "timeout": (5, 600_000)}
MAX_CHECK_US = 3_600_000_000


class CheckTiming(Strict):
    """One health check's pace; an unset field keeps the check's default (CHECK_DEFAULTS).
    Durations are written like every other duration ('100ms', '1s')."""

    interval: str | None = Field(None, description="time between runs while the check's "
                                 "state holds, e.g. '100ms'")
    fast_interval: str | None = Field(None, description="time between runs while the state "
                                      "is changing (after a result that disagrees, and from "
                                      "start); default: the check's own, or interval if "
                                      "that is shorter")
    timeout: str | None = Field(None, description="one run's limit; at most interval")
    rise: int | None = Field(None, strict=True, ge=1, le=100, description="good results in "
                             "a row before a down check is up")
    fall: int | None = Field(None, strict=True, ge=1, le=100, description="bad results in "
                             "a row before an up check is down")

    @field_validator("interval", "fast_interval", "timeout")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            check_duration(value, MAX_CHECK_US,
                           "1 h, the most a health check's interval or timeout may be")
        return value


class HealthChecks(Strict):
    """The pace of each check of anycast-healthd (checker: healthd)."""

    dns: CheckTiming = CheckTiming()
    introspect: CheckTiming = CheckTiming()


class Health(Strict):
    """Per-site health checking (anycast-healthd, or ExaBGP's bundled healthcheck as an
    anchor) and, with anycast-healthd, its fail-closed watchdog."""

    enabled: bool = Field(True, description="run a health checker per site; false: sites "
                                            "announce statically (pure BGP lab)")
    watchdog_ms: int = Field(300, ge=50, le=60000, description="the speaker withdraws when "
                             "the health daemon is silent this long")
    drain_delay_ms: int = Field(2000, ge=0, le=600000, description="drain: time between the "
                                "GRACEFUL_SHUTDOWN re-announcement and the withdrawal")
    hold_down_ms: int = Field(500, ge=0, le=600000, description="minimum time before a "
                              "re-announcement after a route change")
    saturation: Literal["absorb", "withdraw"] = Field(
        "absorb", description="what a site does when its introspection service is "
        "saturated (at its connection limit) rather than broken: absorb = stay announced and "
        "serve what it can (withdrawing a busy site pushes the same load onto the next site "
        "and cascades); withdraw = withdraw until it is no longer saturated")
    checker: Literal["healthd", "exabgp-healthcheck"] = Field(
        "healthd", description="healthd: our daemon drives the speaker (both families; the "
        "watchdog, drain and hold-down settings apply); exabgp-healthcheck: ExaBGP runs its "
        "bundled healthcheck as its API process instead (IPv4 anycast prefix only, no "
        "watchdog, no drain; see exabgp_healthcheck)")
    exabgp_healthcheck: ExabgpHealthcheck = ExabgpHealthcheck()
    checks: HealthChecks = Field(HealthChecks(), description="per check (dns, introspect): "
                                 "interval, fast_interval, timeout, rise, fall; checker: "
                                 "healthd only")

    last_site: Literal["withdraw", "backup-route", "keep-last"] = Field(
        "withdraw", description="when every site would withdraw at once: withdraw = each "
        "site withdraws on its own checks (every site down is a total outage); backup-route "
        "= every site also announces the covering less-specific prefixes (the /24 holding "
        "the IPv4 anycast address, the /48 holding the IPv6 one) whatever its health, so "
        "traffic still lands on some site when every host route is gone; keep-last = a "
        "site does not withdraw while it learns no other site's route for the anycast "
        "prefix over its own BGP session (for at most last_site_max_s)")
    last_site_max_s: int = Field(300, strict=True, ge=1, le=86400, description="keep-last: "
                                 "the longest a failing site stays announced because it is "
                                 "the last one; then it withdraws anyway")


class Issuer(Strict):
    """The lab's token issuer: a node of its own (namespace, unicast address from the
    links pool) attached to a router, holding the signing keys (a JWKS) and the
    authoritative revocation list, served over HTTPS. Sites replicate both from it."""

    router: str = Field(description="the router the issuer attaches to")
    name: str = Field("issuer", description="the issuer node's name (a namespace and an "
                      "interface name on its router, like any node)")


IssuerPolicy = Literal["fail-closed", "serve-stale"]


class Identity(Strict):
    """How sites replicate identity state from the issuer, and how their health depends
    on it (only with an `issuer`)."""

    coupling: bool = Field(True, strict=True, description="freshness-coupled health: a "
                           "site whose revocation state is older than max_staleness_ms, or "
                           "whose key set differs from the issuer's, withdraws")
    sync_interval_ms: int = Field(500, ge=50, le=600_000, description="each site follows "
                                  "the issuer's feed: a revocation reaches it at once, and "
                                  "the issuer confirms the state this often when nothing "
                                  "changes (a heartbeat)")
    max_staleness_ms: int = Field(2000, ge=100, le=3_600_000, description="revocation state "
                                  "older than this is stale (with coupling: the site "
                                  "withdraws)")
    issuer_unreachable: IssuerPolicy = Field(
        "fail-closed", description="when the issuer is unreachable from every site: "
        "fail-closed = every site withdraws once stale (total outage, no revoked token "
        "accepted); serve-stale = sites keep serving their stale state up to "
        "serve_stale_max_ms (availability over revocation freshness)")
    serve_stale_max_ms: int = Field(30_000, ge=0, le=86_400_000, description="serve-stale: "
                                    "the hard bound on the state's age, after which a site "
                                    "withdraws anyway")


class Up(Strict):
    """How `anycast-lab up` treats this lab: not part of what the lab is (changing it does
    not make a running lab 'different')."""

    keep_on_failure: bool = Field(
        False, strict=True, description="when the lab does not converge as expected, leave "
        "it up for inspection (`status`, `exec`, `birdc`) instead of rolling back; `up` exits "
        "1 either way. The CLI's --keep-on-failure / --no-keep-on-failure overrides it")


class Router(Strict):
    """A transit router (BIRD 2) in its own AS."""

    asn: Asn
    router_id: str | None = Field(None, description="IPv4 router id; default: first link address")


class Site(Strict):
    """An anycast site: a BGP speaker (ExaBGP) plus the services, attached to a router."""

    router: str = Field(description="the router this site attaches to")
    asn: Asn
    bfd: SiteBfd | None = Field(None, description="this site's BFD settings (override "
                                "bgp.bfd field by field)")


class Client(Strict):
    """A client namespace attached to a router, and the site it should reach."""

    router: str = Field(description="the router this client attaches to")
    expect: str | list[str] = Field(
        description="the site this client is expected to reach, or a list of sites any of "
        "which is correct (equal-cost sites under bgp.ecmp: the client may be spread "
        "across them)")
    failover: str | list[str] | None = Field(
        None, description="the site (or list of sites, any of which is correct) this client "
        "is expected to reach when every 'expect' site is down")

    @field_validator("expect", "failover")
    @classmethod
    def _sites(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("a list of sites must name at least one site")
            if len(set(value)) != len(value):
                raise ValueError("a list of sites names a site twice")
        return value

    @property
    def expect_sites(self) -> tuple[str, ...]:
        """`expect` as sites, in the file's order."""
        return (self.expect,) if isinstance(self.expect, str) else tuple(self.expect)

    @property
    def failover_sites(self) -> tuple[str, ...]:
        """`failover` as sites, in the file's order (none when not given)."""
        if self.failover is None:
            return ()
        return (self.failover,) if isinstance(self.failover, str) else tuple(self.failover)


class Impairment(Strict):
    """Per-link impairment applied with tc (netem for delay/jitter/loss, tbf for rate)."""

    delay: str | None = Field(None, description="one-way delay: a number and "
                                 "us, ms or s with no space, e.g. '20ms'")
    jitter: str | None = Field(None, description="delay variation, written like "
                                  "delay, e.g. '5ms' (needs delay)")
    loss: float | None = Field(None, ge=0, le=100, description="random loss in percent")
    rate: str | None = Field(None, description="rate limit, e.g. '10mbit'")

    @field_validator("delay", "jitter")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            check_duration(value, MAX_DURATION_US, f"{MAX_DURATION_US // 1_000_000} s, the "
                           "longest delay or jitter a lab link takes")
        return value

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is None:
            return value
        m = RATE_RE.fullmatch(value)
        if not m:
            raise ValueError(f"{quoted(value)} is not a rate like '10mbit' or '512kbit' "
                             "(a whole number and a lowercase unit, no space)")
        digits = m.group(1).lstrip("0") or "0"
        bits = int(digits) * RATE_UNITS[m.group(2)] if len(digits) <= 20 else None
        if bits == 0:
            raise ValueError(f"rate {quoted(value)} must be above zero")
        if bits is None or bits > MAX_RATE_BIT:
            raise ValueError(f"rate {quoted(value)} is above {MAX_RATE_BIT}bit (about 34.4 gbit), "
                             "the most tc takes: it counts bytes per second in 32 bits")
        if bits < MIN_RATE_BIT:
            raise ValueError(f"rate {quoted(value)} is below 1kbit, the slowest at which tc's "
                             "token bucket holds the lab's 32 KiB burst")
        return value


class Link(Strict):
    """A router-to-router link."""

    endpoints: tuple[str, str] = Field(description="the two routers this link connects")
    impair: Impairment | None = None


class Topology(Strict):
    """An anycast lab: routers, sites announcing the anycast prefixes, and clients."""

    name: str = Field(description="lab name: lowercase letters, digits, '-'; at most 24")
    description: str = ""
    anycast: Anycast = Anycast()
    pools: Pools = Pools()
    bgp: Bgp = Bgp()
    health: Health = Health()
    routers: dict[str, Router] = Field(max_length=MAX_ROUTERS)
    sites: dict[str, Site] = Field(max_length=MAX_SITES)
    clients: dict[str, Client] = Field({}, max_length=MAX_CLIENTS)
    links: list[Link] = Field([], max_length=MAX_LINKS)
    issuer: Issuer | None = Field(None, description="the lab's token issuer node; none: "
                                  "each site's revocation list is written in place")
    identity: Identity = Identity()
    up: Up = Up()

    def node_names(self) -> list[str]:
        extra = [self.issuer.name] if self.issuer is not None else []
        return [*self.routers, *self.sites, *self.clients, *extra]


def duration_us(text: str) -> float:
    """'20ms' -> 20000.0 (microseconds; inf for an absurdly long one)."""
    m = DURATION_RE.fullmatch(text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * DURATION_SCALE[m.group(2)]


def parse_duration_us(text: str) -> int:
    """'20ms' -> 20000 (microseconds)."""
    m = DURATION_RE.fullmatch(text)
    if not m:
        raise ValueError(text)
    return round(float(m.group(1)) * DURATION_SCALE[m.group(2)])


def anchor_mode(topo: Topology) -> bool:
    """ExaBGP's bundled healthcheck drives the speakers (the benchmark anchor): no health
    daemon, no speaker API process, the IPv4 anycast prefix only."""
    return topo.health.enabled and topo.health.checker == "exabgp-healthcheck"


def _ms(text: str | None) -> float | None:
    return None if text is None else parse_duration_us(text) / 1000


def check_timing(topo: Topology, check: str) -> CheckDefaults:
    """The pace of health check `check` ('dns', 'introspect') as the topology sets it,
    each unset field its default. Milliseconds, rounded to whole ones (checks.py refuses
    a value that is not whole)."""
    base = CHECK_DEFAULTS[check]
    given: CheckTiming = getattr(topo.health.checks, check)
    interval = _ms(given.interval)
    interval_ms = base.interval_ms if interval is None else round(interval)
    fast = _ms(given.fast_interval)
    timeout = _ms(given.timeout)
    return CheckDefaults(
        interval_ms=interval_ms,
        fast_interval_ms=min(base.fast_interval_ms, interval_ms) if fast is None
        else round(fast),
        timeout_ms=base.timeout_ms if timeout is None else round(timeout),
        rise=base.rise if given.rise is None else given.rise,
        fall=base.fall if given.fall is None else given.fall)


def site_bfd(topo: Topology, site: str) -> Bfd:
    """The BFD settings in force for a site: bgp.bfd, overridden by the site's own fields."""
    own = topo.sites[site].bfd
    if own is None:
        return topo.bgp.bfd
    return Bfd(**{**topo.bgp.bfd.model_dump(),
                  **{k: v for k, v in own.model_dump().items() if v is not None}})


def bfd_sites(topo: Topology) -> list[str]:
    """The sites with BFD on, in the file's order."""
    return [name for name in topo.sites if site_bfd(topo, name).enabled]


# health.last_site 'backup-route': the covering less-specific prefix every site announces
# beside the anycast host route, by IP version.
BACKUP_PREFIX_LEN = {4: 24, 6: 48}


def backup_prefix(net: ipaddress.IPv4Network | ipaddress.IPv6Network
                  ) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The /24 (IPv4) or /48 (IPv6) holding an anycast host route."""
    return net.supernet(new_prefix=BACKUP_PREFIX_LEN[net.version])
