"""The typed topology model: what a topology file may say, and its defaults.

Structure only (types, ranges, unknown keys). Cross-references and address
arithmetic are checked in `checks.py`, so that every problem is reported at once.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A node's name becomes an interface name on each of its neighbours (the kernel
# allows 15 bytes) and part of its namespace's name.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
MAX_NAME = 15
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
# Names that would collide with kernel names inside a namespace
# (/proc/sys/net/ipv4/conf/{all,default,lo}).
RESERVED_NAMES = frozenset({"lo", "all", "default"})

DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(us|ms|s)$")
# What pyroute2's tc rate parser accepts: a whole number, a lowercase unit, no space.
RATE_RE = re.compile(r"^(\d+)(bit|kbit|mbit|gbit)$")

# Strict: YAML's `yes` (True), '65001' and 65001.0 are not AS numbers. The range is the
# whole 32-bit space so that checks.py can explain the reserved ones (0, 4294967295).
Asn = Annotated[int, Field(strict=True, ge=0, le=4294967295,
                           description="BGP AS number (1-4294967294, not reserved)")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Anycast(Strict):
    """The service prefixes announced from every site."""

    ipv4: str = Field("203.0.113.53/32", description="IPv4 anycast host route (/32)")
    ipv6: str = Field("2001:db8:53::53/128", description="IPv6 anycast host route (/128)")


class Pools(Strict):
    """Where link addresses come from. Defaults avoid the host's TEST-NET-1 uplink."""

    links4: str = Field("100.64.0.0/16", description="IPv4 pool, split into /31 per link")
    links6: str = Field("fd00:a11c:ab::/48", description="IPv6 pool, split into /64 per link")


class Bgp(Strict):
    """Lab-wide BGP behaviour."""

    ecmp: bool = Field(False, description="install equal-cost paths (BIRD merge paths)")
    multipath_hash: Literal["l3", "l4"] = Field("l3", description="Linux multipath hash policy")
    hold_time: int = Field(3, ge=3, le=65535, description="BGP hold time in seconds (min 3)")
    keepalive_time: int = Field(1, ge=1, le=21845, description="BGP keepalive in seconds")


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


class Router(Strict):
    """A transit router (BIRD 2) in its own AS."""

    asn: Asn
    router_id: str | None = Field(None, description="IPv4 router id; default: first link address")


class Site(Strict):
    """An anycast site: a BGP speaker (ExaBGP) plus the services, attached to a router."""

    router: str = Field(description="the router this site attaches to")
    asn: Asn


class Client(Strict):
    """A client namespace attached to a router, and the site it should reach."""

    router: str = Field(description="the router this client attaches to")
    expect: str = Field(description="the site this client is expected to reach")
    failover: str | None = Field(
        None, description="the site this client is expected to reach when 'expect' is down")


class Impairment(Strict):
    """Per-link impairment applied with tc (netem for delay/jitter/loss, tbf for rate)."""

    delay: str | None = Field(None, description="one-way delay, e.g. '20ms'")
    jitter: str | None = Field(None, description="delay variation, e.g. '5ms' (needs delay)")
    loss: float | None = Field(None, ge=0, le=100, description="random loss in percent")
    rate: str | None = Field(None, description="rate limit, e.g. '10mbit'")

    @field_validator("delay", "jitter")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not DURATION_RE.match(value):
            raise ValueError(f"'{value}' is not a duration like '20ms', '500us' or '1s'")
        return value

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is None:
            return value
        m = RATE_RE.match(value)
        if not m:
            raise ValueError(f"'{value}' is not a rate like '10mbit' or '512kbit' "
                             "(a whole number and a lowercase unit, no space)")
        if int(m.group(1)) == 0:
            raise ValueError(f"rate '{value}' must be above zero")
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
    routers: dict[str, Router]
    sites: dict[str, Site]
    clients: dict[str, Client] = {}
    links: list[Link] = []

    def node_names(self) -> list[str]:
        return [*self.routers, *self.sites, *self.clients]


def parse_duration_us(text: str) -> int:
    """'20ms' -> 20000 (microseconds)."""
    m = DURATION_RE.match(text)
    if not m:
        raise ValueError(text)
    scale = {"us": 1, "ms": 1000, "s": 1_000_000}[m.group(2)]
    return round(float(m.group(1)) * scale)
