"""The typed scenario model: what a scenario file may say, and its defaults.

Structure only (types, ranges, unknown keys, an action's verb and arguments). Names of
sites, clients, routers and tokens are checked against the scenario's topology in
`load.py`, so that every problem is reported at once.

A step's `do` is one action, written as a command line: `fail ams dns-hang`. The faults
come from the fault registry (lab.ops.faults), so a fault added there is usable here
with no change to this file.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from lab.model.topology import check_duration as check_lab_duration
from lab.model.topology import duration_us, quoted
from lab.ops.faults import REGISTRY

SCENARIO_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,47}")
TOKEN_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
CANARIES = ("canary-active", "canary-revoked")  # the health checks' own tokens
MAX_STEPS = 100
MAX_EXPECT = 50
MAX_WITHIN_S = 120.0  # longest a step may poll: past it a lab is broken, not slow
MAX_WAIT_S = 60.0
MAX_EXEC_S = 30.0
DEFAULT_WITHIN = "10s"
NONE_SITE = "none"  # `at: none`: the client gets no answer at all
HEALTH_CHECKS = ("dns", "introspect", "identity")
# What `anycast-lab audit` compares per site (lab.observe.audit.PROPERTIES, kept equal by a
# unit test; not imported, so that reading a scenario stays light).
AUDIT_PROPERTIES = ("kids", "revocation_version", "revocation_age_s", "revoked_canary",
                    "active_canary", "tls_spki", "tls_not_after", "tls_verified",
                    "dns_identity", "soa_serial")


def duration_s(text: str) -> float:
    """'500ms' -> 0.5 (the topology's duration syntax)."""
    return duration_us(text) / 1_000_000


def check_duration(value: str, limit_s: float, what: str) -> str:
    """The lab's duration check with a scenario's limit (`what`: "a wait may last")."""
    return check_lab_duration(value, limit_s * 1_000_000, f"{limit_s:g} s, the longest {what}",
                              examples="'500ms' or '5s'")


@dataclass(frozen=True)
class Verb:
    """An action's verb: its arguments (in words, for messages) and their count."""

    usage: str
    min_args: int
    max_args: int | None  # None: the rest of the line (exec's command)
    description: str


VERBS: dict[str, Verb] = {
    "fail": Verb("fail SITE FAULT", 2, 2, "inject a fault from the registry at a site"),
    "heal": Verb("heal SITE [FAULT]", 1, 2, "heal one fault at a site, or all of them"),
    "drain": Verb("drain SITE", 1, 1, "planned maintenance: GRACEFUL_SHUTDOWN, then withdraw"),
    "undrain": Verb("undrain SITE", 1, 1, "end maintenance"),
    "issue": Verb("issue TOKEN", 1, 1, "issue a lab token (client lab-admin) named TOKEN "
                  "for later steps"),
    "revoke": Verb("revoke TOKEN", 1, 1, "revoke a token issued earlier on every site"),
    "forget-revocations": Verb("forget-revocations SITE", 1, 1, "replace a site's revocation "
                               "list by an empty one (a stale list that no longer knows the "
                               "revoked canary); `reset` restores it"),
    "exec": Verb("exec NODE CMD...", 2, None, f"run a command in a node (at most "
                 f"{MAX_EXEC_S:g} s); it must exit 0"),
    "wait": Verb("wait DURATION", 1, 1, f"let time pass (at most {MAX_WAIT_S:g} s), e.g. "
                 "for a hold timer"),
    "reset": Verb("reset", 0, 0, "return the lab to its normal state (as `anycast-lab "
                  "reset`)"),
    "impair": Verb("impair LINK --loss PCT|--rate R|--delay D|--clear", 2, 7, "degrade a "
                   "link at run time (as `anycast-lab impair`: a router-to-router link "
                   "A--B or a site's link by the site's name); --clear removes it"),
}
IMPAIR_OPTIONS = ("--loss", "--rate", "--delay")


def impair_request(args: tuple[str, ...]) -> tuple[str, dict[str, Any] | None]:
    """`impair LINK --loss 20` -> ('LINK', {'loss': 20.0, 'rate': None, 'delay': None});
    `--clear` -> ('LINK', None). ValueError naming what is wrong (checked by the
    topology's own rules for an impairment)."""
    target, rest = args[0], list(args[1:])
    if rest == ["--clear"]:
        return target, None
    given: dict[str, Any] = {"loss": None, "rate": None, "delay": None}
    while rest:
        option = rest.pop(0)
        if option not in IMPAIR_OPTIONS or not rest:
            raise ValueError(f"impair {target}: write '--loss PCT', '--rate R', '--delay D' "
                             f"or '--clear' alone (got {quoted(option)})")
        value = rest.pop(0)
        key = option.removeprefix("--")
        if given[key] is not None:
            raise ValueError(f"impair {target}: {option} is given twice")
        if key == "loss":
            try:
                given[key] = float(value.removesuffix("%"))
            except ValueError:
                raise ValueError(f"impair {target}: --loss takes a percentage such as 20 "
                                 f"(got {quoted(value)})") from None
        else:
            given[key] = value
    from lab.model.errors import BadInput
    from lab.ops.impair import request

    try:
        imp = request(given["loss"], given["rate"], given["delay"], clear=False)
    except BadInput as exc:
        raise ValueError(f"impair {target}: {exc.message}") from None
    assert imp is not None
    return target, {"loss": imp.loss, "rate": imp.rate, "delay": imp.delay}


@dataclass(frozen=True)
class Action:
    """A parsed `do`: the verb and its arguments."""

    verb: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return shlex.join([self.verb, *self.args])


def parse_action(text: str) -> Action:
    """`fail ams dns` -> Action('fail', ('ams', 'dns')); ValueError naming what is wrong."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot read {quoted(text)} as a command line: {exc}") from None
    if not words:
        raise ValueError("an empty action: write one, such as 'fail ams dns'")
    verb, args = words[0], tuple(words[1:])
    spec = VERBS.get(verb)
    if spec is None:
        raise ValueError(f"unknown action {quoted(verb)} (actions: {', '.join(VERBS)})")
    if len(args) < spec.min_args or (spec.max_args is not None and len(args) > spec.max_args):
        raise ValueError(f"{quoted(text)}: write it as '{spec.usage}'")
    if verb in ("fail", "heal") and len(args) == 2 and args[1] not in REGISTRY:
        raise ValueError(f"unknown fault {quoted(args[1])} (faults: {', '.join(REGISTRY)})")
    if verb == "wait":
        check_duration(args[0], MAX_WAIT_S, "a wait may last")
    if verb == "impair":
        impair_request(args)
    if verb in ("issue", "revoke") and not TOKEN_NAME_RE.fullmatch(args[0]):
        raise ValueError(f"{quoted(args[0])} is not a token name (lowercase letters, digits "
                         "and '-', starting with a letter, at most 32 characters)")
    return Action(verb, args)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Family = Literal["v4", "v6", "both"]
# YAML's 'yes' and the string 'true' are not booleans here: write true or false.
Bool = Annotated[bool, Field(strict=True)]


def _sites(value: str | list[str]) -> str | list[str]:
    if isinstance(value, list):
        if not value:
            raise ValueError("a list of sites must name at least one site")
        if len(set(value)) != len(value):
            raise ValueError("a list of sites names a site twice")
    return value


# A site, or a list of sites any of which is right.
SiteOrSites = Annotated[str | list[str], AfterValidator(_sites)]


def site_list(value: SiteOrSites) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


class ClientExpect(Strict):
    """Which site answers a client's DNS queries (`id.server`), per family. Under ECMP
    every site of the client's spread must be in `at`."""

    client: str = Field(description="the client")
    at: SiteOrSites = Field(description="the site, or a list of sites any of which is "
                            "right; 'none': no site answers")
    family: Family = Field("both", description="v4, v6 or both")


class SpreadExpect(Strict):
    """How many different sites answer a client's queries from different source ports
    (ECMP: an L4 hash spreads one client's flows, an L3 hash does not)."""

    spread: str = Field(description="the client (its router must have bgp.ecmp)")
    family: Literal["v4", "v6"] = "v4"
    min_sites: int | None = Field(None, ge=1, le=64, description="at least this many sites")
    max_sites: int | None = Field(None, ge=1, le=64, description="at most this many sites")

    @model_validator(mode="after")
    def _bounds(self) -> SpreadExpect:
        if self.min_sites is None and self.max_sites is None:
            raise ValueError("give min_sites, max_sites or both")
        if self.min_sites and self.max_sites and self.min_sites > self.max_sites:
            raise ValueError(f"min_sites {self.min_sites} is above max_sites "
                             f"{self.max_sites}")
        return self


class SiteExpect(Strict):
    """A site's announcement (what its router holds), drain and health, as `status`
    reports them."""

    site: str = Field(description="the site")
    announced: Bool | None = Field(None, description="its router holds the site's route "
                                   "for every announced family")
    drained: Bool | None = Field(None, description="the site is drained")
    health: Literal["up", "down"] | None = Field(None, description="the health daemon's "
                                                 "verdict")
    check: str | None = Field(None, description="a health check: dns, introspect or "
                              "identity (a lab with an issuer and identity.coupling)")
    state: Literal["up", "down"] | None = Field(None, description="that check's state")

    @model_validator(mode="after")
    def _something(self) -> SiteExpect:
        if (self.check is None) != (self.state is None):
            raise ValueError("'check' and 'state' go together: check: dns, state: down")
        if self.check is not None and self.check not in HEALTH_CHECKS:
            raise ValueError(f"unknown health check {quoted(self.check)} (checks: "
                             f"{', '.join(HEALTH_CHECKS)})")
        if all(v is None for v in (self.announced, self.drained, self.health, self.check)):
            raise ValueError("say what to expect of the site: announced, drained, health, "
                             "or check and state")
        return self


class RouterExpect(Strict):
    """A router's best path to an anycast prefix: which site it leads to, its AS path."""

    router: str = Field(description="the router")
    family: Literal["v4", "v6"] = Field("v4", description="which anycast prefix")
    best: SiteOrSites | None = Field(None, description="the site (or sites, under ECMP) the "
                                     "best path leads to; 'none': no route")
    as_path: list[int] | None = Field(None, max_length=32, description="the best path's AS "
                                      "path, e.g. [65020, 65100]")

    @model_validator(mode="after")
    def _something(self) -> RouterExpect:
        if self.best is None and self.as_path is None:
            raise ValueError("say what to expect of the router: best, as_path or both")
        return self


class SessionExpect(Strict):
    """A BGP session's state, as the router's BIRD sees it."""

    session: tuple[str, str] = Field(description="[router, peer]: the peer is a site or a "
                                     "neighbouring router (IPv4 session)")
    established: Bool = Field(True, description="the session is Established (false: any "
                              "other state)")


class TokenExpect(Strict):
    """A token's introspection answer: at one site's own address (from inside the site),
    or through the anycast address from a client (whichever site answers)."""

    token: str = Field(description="a token named by an earlier `issue`, or canary-active / "
                       "canary-revoked (the health checks' own)")
    active: Bool = Field(description="the service says active (true) or inactive (false)")
    at: str | None = Field(None, description="ask this site at its own address")
    via: str | None = Field(None, description="ask the anycast address from this client")

    @model_validator(mode="after")
    def _where(self) -> TokenExpect:
        if (self.at is None) == (self.via is None):
            raise ValueError("say where to introspect: 'at: SITE' or 'via: CLIENT' (one)")
        return self


PROBE_KINDS = ("dns", "https", "tcp")
ProbeKind = Literal["dns", "https", "tcp"]


class MeasuredExpect(Strict):
    """What the background prober saw from a client during the step: from the action
    until the client settled at a site (a run of answers from it)."""

    measured: str = Field(description="the client")
    settles_at: SiteOrSites = Field(description="the site (or sites) the client must settle "
                                    "at")
    max_outage_ms: float | None = Field(None, ge=0, le=120000, description="at most this "
                                        "long without an answer")
    min_outage_ms: float | None = Field(None, ge=0, le=120000, description="at least this "
                                        "long without an answer")
    max_lost: int | None = Field(None, ge=0, description="at most this many queries lost")
    min_lost: int | None = Field(None, ge=0, description="at least this many queries lost")
    max_settle_ms: float | None = Field(None, ge=0, le=120000, description="settled within "
                                        "this long of the action")
    min_settle_ms: float | None = Field(None, ge=0, le=120000, description="settled no "
                                        "sooner than this (a timer that must run out)")
    probe: ProbeKind = Field("dns", description="which background probe: dns, https or tcp "
                             "(it must be in the scenario's probe.kinds)")
    min_broken: int | None = Field(None, ge=0, description="tcp: at least this many "
                                   "long-lived connections broke since the action")
    max_broken: int | None = Field(None, ge=0, description="tcp: at most this many broke")
    broken_from: SiteOrSites | None = Field(None, description="tcp: every connection that "
                                            "broke since the action was answered by this "
                                            "site (or one of these) just before it broke")
    min_loss_pct: float | None = Field(None, ge=0, le=100, description="at least this share "
                                       "of the queries sent since the action (all answered "
                                       "or given up so far) got no answer")
    max_loss_pct: float | None = Field(None, ge=0, le=100, description="at most this share")

    @model_validator(mode="after")
    def _broken_is_tcp(self) -> MeasuredExpect:
        counts = (self.min_broken, self.max_broken, self.broken_from)
        if self.probe != "tcp" and any(c is not None for c in counts):
            raise ValueError("min_broken, max_broken and broken_from count long-lived "
                             "connections: they need 'probe: tcp'")
        return self


class AuditExpect(Strict):
    """What `anycast-lab audit` says of a site's identity state (keys, revocation version
    and age, canaries, TLS certificate, DNS identity): one property, or all of them."""

    audit: str = Field(description="the site")
    property: Literal[AUDIT_PROPERTIES] | None = Field(  # type: ignore[valid-type]
        None, description="one audited property (kids, revocation_version, revocation_age_s, "
        "revoked_canary, active_canary, tls_spki, tls_not_after, tls_verified, dns_identity, "
        "soa_serial); none: any of them")
    diverges: Bool = Field(description="true: the audit marks it divergent (for the whole "
                           "site: at least one property); false: it agrees")


class IdentityExpect(Strict):
    """A site's identity as `status` shows it (a lab with an issuer): whether its
    revocation state is stale, whether it holds the issuer's version, whether the keys it
    serves are the issuer's."""

    identity: str = Field(description="the site")
    stale: Bool | None = Field(None, description="its last sync with the issuer is older "
                               "than identity.max_staleness_ms")
    current: Bool | None = Field(None, description="it holds the issuer's revocation "
                                 "version")
    keys_match: Bool | None = Field(None, description="the keys it serves are the issuer's")

    @model_validator(mode="after")
    def _something(self) -> IdentityExpect:
        if self.stale is None and self.current is None and self.keys_match is None:
            raise ValueError("say what to expect of the site's identity: stale, current, "
                             "keys_match")
        return self


SUBJECTS = {"client": ClientExpect, "spread": SpreadExpect, "site": SiteExpect,
            "router": RouterExpect, "session": SessionExpect, "token": TokenExpect,
            "measured": MeasuredExpect,
            "audit": AuditExpect, "identity": IdentityExpect}


def expectation_kind(value: Any) -> str | None:
    """Which kind of expectation a mapping is: the first subject key it has."""
    if isinstance(value, dict):
        return next((k for k in SUBJECTS if k in value), None)
    if isinstance(value, BaseModel):
        return next(k for k, cls in SUBJECTS.items() if isinstance(value, cls))
    return None


Expectation = Annotated[
    Annotated[ClientExpect, Tag("client")] | Annotated[SpreadExpect, Tag("spread")]
    | Annotated[SiteExpect, Tag("site")] | Annotated[RouterExpect, Tag("router")]
    | Annotated[SessionExpect, Tag("session")] | Annotated[TokenExpect, Tag("token")]
    | Annotated[MeasuredExpect, Tag("measured")]
    | Annotated[AuditExpect, Tag("audit")] | Annotated[IdentityExpect, Tag("identity")],
    Discriminator(expectation_kind, custom_error_type="expectation_kind",
                  custom_error_message="an expectation names its subject: client, spread, "
                  "site, router, session, token, measured, audit or identity")]


class Step(Strict):
    """One step: an action, then expectations polled until they hold or `within` passes."""

    name: str = Field(min_length=1, max_length=200, description="what the step does, shown "
                      "to students and in reports")
    do: str | None = Field(None, description="one action: " + "; ".join(
        v.usage for v in VERBS.values()))
    expect: list[Expectation] = Field([], max_length=MAX_EXPECT)
    within: str = Field(DEFAULT_WITHIN, description="how long to poll the expectations "
                        "until they all hold, e.g. '5s'")
    stop_on_error: Bool | None = Field(None, description="stop the scenario when this step "
                                       "fails (default: the scenario's stop_on_error)")
    explain: str = Field("", max_length=2000, description="a sentence shown to the student "
                         "when the step passes or fails")

    @field_validator("do")
    @classmethod
    def _do(cls, value: str | None) -> str | None:
        if value is not None:
            parse_action(value)
        return value

    @field_validator("within")
    @classmethod
    def _within(cls, value: str) -> str:
        return check_duration(value, MAX_WITHIN_S, "a step may poll")

    @model_validator(mode="after")
    def _something(self) -> Step:
        if self.do is None and not self.expect:
            raise ValueError("a step does something ('do') or checks something ('expect')")
        return self

    @property
    def action(self) -> Action | None:
        return None if self.do is None else parse_action(self.do)

    @property
    def within_s(self) -> float:
        return duration_s(self.within)


class Probe(Strict):
    """The background probers every client runs for the whole scenario: DNS (id.server
    over UDP) by default; `kinds` adds HTTPS (an introspection request on a new TLS
    connection each time, the site from `X-Anycast-Site`) and TCP (long-lived DNS-over-TCP
    connections, each a stream of queries: broken connections are counted)."""

    rate_hz: float = Field(50.0, gt=0, le=200, description="DNS queries per second per "
                           "client")
    timeout_ms: int = Field(100, ge=10, le=2000, description="a DNS query unanswered this "
                            "long is lost")
    kinds: list[ProbeKind] = Field(["dns"], min_length=1, max_length=3, description="which "
                                   "probes run: dns, https, tcp")
    https_rate_hz: float = Field(20.0, gt=0, le=100, description="HTTPS requests per second "
                                 "per client (each a new TLS connection)")
    https_timeout_ms: int = Field(500, ge=50, le=5000, description="an HTTPS request "
                                  "unanswered this long is lost")
    tcp_rate_hz: float = Field(40.0, gt=0, le=400, description="TCP messages per second per "
                               "client, over all its connections")
    tcp_timeout_ms: int = Field(200, ge=10, le=5000, description="a TCP message unanswered "
                                "this long breaks its connection")
    tcp_connections: int = Field(4, ge=1, le=16, description="long-lived TCP connections per "
                                 "client")
    tcp_clients: list[str] | None = Field(None, min_length=1, max_length=64, description="the "
                                          "clients that hold TCP connections (default: every "
                                          "client; each site's DNS server takes a bounded "
                                          "number of them)")

    @field_validator("kinds")
    @classmethod
    def _once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a probe kind is listed twice")
        return value


class Scenario(Strict):
    """A lesson or a CI check: a topology, a narrative, and ordered steps."""

    name: str = Field(description="lowercase letters, digits and '-'; at most 48")
    title: str = Field(min_length=1, max_length=200)
    topology: str = Field(description="a shipped topology's name (default, two-sites, "
                          "ecmp-ring, ...) or a path to a topology file, relative to this "
                          "file")
    narrative: str = Field("", max_length=20000, description="for students (markdown)")
    probe: Probe = Probe()
    reset: Bool = Field(True, description="reset the lab before the first step and after "
                        "the last")
    stop_on_error: Bool = Field(False, description="stop at the first step that fails")
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SCENARIO_NAME_RE.fullmatch(value):
            raise ValueError(f"{quoted(value)} is not a scenario name (lowercase letters, "
                             "digits and '-', starting with a letter, at most 48)")
        return value
