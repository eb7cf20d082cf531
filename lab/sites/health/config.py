"""Configuration of the health daemon: one JSON file per site, validated by pydantic.

Relative paths are taken relative to the config file's folder. `load_config` raises
`ConfigError` with every problem, each with its field path, e.g.
`checks.0.timeout_ms: Input should be greater than or equal to 5`.

Each check type has its own pace by default (its "default profile"): the `timing` of its
class, e.g. `DnsCheck.timing`; a check in the file may set any of those fields itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lab.shared.jsonconfig import read_object, resolve_paths

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class ConfigError(ValueError):
    """The config file is missing, not JSON or not valid; the message says where."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Timing:
    """A check type's default pace. Times in milliseconds."""

    interval_ms: int  # between runs while the state holds
    # Used while the state is changing: after a first result that disagrees with the
    # current state, and from start until the first state is reached.
    fast_interval_ms: int
    timeout_ms: int  # one run's limit
    rise: int  # good results in a row before a down check is up
    fall: int  # bad results in a row before an up check is down


TIMING_FIELDS = ("interval_ms", "fast_interval_ms", "timeout_ms", "rise", "fall")


class CheckBase(_Model):
    """What every check has: a name, whether the site needs it, and its timing (each
    field defaults to the check type's `timing`). Times in milliseconds."""

    timing: ClassVar[Timing]

    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    required: bool = True
    interval_ms: int = Field(ge=10, le=3_600_000)
    fast_interval_ms: int = Field(ge=5, le=3_600_000)
    timeout_ms: int = Field(ge=5, le=600_000)
    rise: int = Field(ge=1, le=100)
    fall: int = Field(ge=1, le=100)

    @model_validator(mode="before")
    @classmethod
    def _timing_defaults(cls, raw: Any) -> Any:
        return {**asdict(cls.timing), **raw} if isinstance(raw, dict) else raw

    @model_validator(mode="after")
    def _fast_not_slower(self) -> CheckBase:
        if self.fast_interval_ms > self.interval_ms:
            raise ValueError(f"fast_interval_ms ({self.fast_interval_ms}) must not exceed "
                             f"interval_ms ({self.interval_ms})")
        return self


def _ip(value: str) -> str:
    return str(ipaddress.ip_address(value))


IpAddress = Annotated[str, AfterValidator(_ip)]  # an IPv4 or IPv6 address, normalised


class DnsCheck(CheckBase):
    """A UDP query on a connected socket: NOERROR and (if given) an expected address."""

    type: Literal["dns"]
    server: IpAddress
    port: int = Field(default=53, ge=1, le=65535)
    qname: str = "health.anycast.lab."
    qtype: Literal["A", "AAAA"] = "A"
    expect: list[str] = Field(default_factory=list)  # any of these; empty: any answer
    # Keep a TCP connection to the server's port open (never written to): a killed
    # server closes it at once and the check runs that moment instead of at its next
    # interval. A hint only; the query decides. Off: the interval alone.
    watch_tcp: bool = True
    # Fast interval 10 ms: a refused query (killed server) is confirmed 10 ms after the
    # first one; costs nothing at idle (used only while the state is changing).
    timing = Timing(interval_ms=100, fast_interval_ms=10, timeout_ms=100, rise=3, fall=2)

    @field_validator("expect")
    @classmethod
    def _expect_ips(cls, value: list[str]) -> list[str]:
        return [_ip(v) for v in value]


class IntrospectCheck(CheckBase):
    """RFC 7662 over HTTPS: active canary active, revoked canary inactive, no creds 401."""

    type: Literal["introspect"]
    address: IpAddress  # connect here (the site's own unicast address)
    port: int = Field(default=443, ge=1, le=65535)
    server_name: str = Field(min_length=1)  # SNI, Host and the name the certificate must carry
    path: str = Field(default="/introspect", pattern=r"^/")
    ca_file: Path
    client_id: str = Field(min_length=1)
    client_secret_file: Path
    active_token_file: Path
    revoked_token_file: Path
    # Ask without credentials (expect 401) on every Nth run; the service logs one line
    # per such call, so a site may want fewer than one per run.
    unauthenticated_every: int = Field(default=1, ge=1, le=10_000)
    # Ask about the revoked canary on every Nth run while the check is up and steady, and
    # on every run otherwise (from start, after any failure, while rising), so a stale
    # revocation list is found within N intervals plus the fall at the fast interval,
    # and a site never rises without it; the active canary is asked on every run.
    revoked_every: int = Field(default=1, ge=1, le=10_000)
    timing = Timing(interval_ms=500, fast_interval_ms=100, timeout_ms=300, rise=2, fall=2)

class IdentityCheck(CheckBase):
    """Freshness of the site's replicated identity state (`GET /identity` on the service's
    health listener): the key set must be the issuer's and the revocation state younger
    than `max_staleness_ms`. When it is older, `policy` decides if the issuer is
    unreachable from every site (the `peers`, other sites' unicast addresses, are asked
    for theirs): fail-closed withdraws, serve-stale serves up to `serve_stale_max_ms`."""

    type: Literal["identity"]
    address: IpAddress
    port: int = Field(default=443, ge=1, le=65535)
    server_name: str = Field(min_length=1)
    ca_file: Path
    max_staleness_ms: int = Field(ge=1, le=86_400_000)
    policy: Literal["fail-closed", "serve-stale"] = "fail-closed"
    serve_stale_max_ms: int = Field(default=30_000, ge=0, le=86_400_000)
    peers: list[IpAddress] = Field(default_factory=list)
    peer_port: int = Field(default=443, ge=1, le=65535)
    # Every second, and at the moment the state it saw turns stale (IdentityProbe's
    # recheck): a partition is seen stale as soon as with 4 runs a second, at a quarter
    # of their cost. The fast pace is 50 ms: a starting site can first sync only once the
    # routers have peered, and its `rise` runs come after that, on the critical path of
    # `up` (the default lab's median 1.6 -> 1.4 s); it costs nothing while a state holds.
    timing = Timing(interval_ms=1000, fast_interval_ms=50, timeout_ms=400, rise=3, fall=2)


class TcpCheck(CheckBase):
    """A TCP connect within the timeout."""

    type: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    timing = Timing(interval_ms=1000, fast_interval_ms=200, timeout_ms=500, rise=2, fall=2)


class ExecCheck(CheckBase):
    """A command (the one check that forks: ~5-20 ms of CPU per run); exit 0 is success."""

    type: Literal["exec"]
    argv: list[str] = Field(min_length=1)
    timing = Timing(interval_ms=5000, fast_interval_ms=1000, timeout_ms=2000, rise=2, fall=2)
    # A fork per run: not more often than this.
    interval_ms: int = Field(ge=100, le=3_600_000)
    fast_interval_ms: int = Field(ge=50, le=3_600_000)


Check = Annotated[DnsCheck | IntrospectCheck | IdentityCheck | TcpCheck | ExecCheck,
                  Field(discriminator="type")]


class HealthConfig(_Model):
    site: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    shim_socket: Path  # lab.sites.speaker.api --control, started with --watchdog-ms
    drain_file: Path  # present = drained (survives restarts)
    state_file: Path  # rewritten atomically on every transition
    event_log: Path  # JSON lines, appended
    metrics_listen: str | None = None  # "ADDRESS:PORT" or "[V6]:PORT"; null = no metrics
    hold_down_ms: int = Field(default=500, ge=0, le=600_000)
    # Re-announcing waits hold_down_ms after the last route change; each time an announce
    # does not survive hold_down_max_ms the wait doubles, up to hold_down_max_ms.
    # Equal to hold_down_ms (the default) = a fixed hold-down.
    hold_down_max_ms: int | None = Field(default=None, ge=0, le=3_600_000)
    drain_delay_ms: int = Field(default=2000, ge=0, le=3_600_000)
    drain_poll_ms: int = Field(default=250, ge=10, le=60_000)
    command_timeout_ms: int = Field(default=10_000, ge=100, le=120_000)
    command_retry_ms: int = Field(default=1000, ge=10, le=600_000)
    reconnect_ms: int = Field(default=100, ge=10, le=60_000)
    # What a *saturated* site does (a check answered, but says the site is at its
    # connection limit): absorb = stay announced and serve what it can (withdrawing a busy
    # site pushes the same load onto the next one); withdraw = count it as a failure.
    saturation: Literal["absorb", "withdraw"] = "absorb"
    # Under absorb: a check that times out within this long of the service last saying it
    # is saturated gives no verdict (a busy service is slow, not broken); past it, a
    # timeout counts again, so a service that hangs while saturated is withdrawn at most
    # this much later. 0 turns the grace off.
    saturation_grace_ms: int = Field(default=5000, ge=0, le=60_000)
    # When every site would withdraw at once. keep-last: a failing site stays announced
    # (with GRACEFUL_SHUTDOWN, so any healthy site wins) while the routes its router sends
    # it hold no healthy site's route, for at most last_site_max_ms; the other policies
    # change nothing here (backup-route is the speaker's: covering routes it announces).
    last_site: Literal["withdraw", "backup-route", "keep-last"] = "withdraw"
    last_site_max_ms: int = Field(default=300_000, ge=1000, le=86_400_000)
    routes_poll_ms: int = Field(default=50, ge=10, le=10_000)  # keep-last: ask the shim
    checks: list[Check] = Field(min_length=1)

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HealthConfig:
        names = [c.name for c in self.checks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"check names must be unique: {', '.join(duplicates)}")
        if not any(c.required for c in self.checks):
            raise ValueError("at least one check must be required (else health means nothing)")
        if self.hold_down_max_ms is not None and self.hold_down_max_ms < self.hold_down_ms:
            raise ValueError("hold_down_max_ms must be at least hold_down_ms")
        if self.hold_down_ms == 0 and self.hold_down_max_ms:
            raise ValueError("hold_down_max_ms needs hold_down_ms above 0: the hold-down "
                             "doubles from it, and 0 never grows")
        return self

    @property
    def hold_down_max(self) -> int:
        return self.hold_down_ms if self.hold_down_max_ms is None else self.hold_down_max_ms


def parse_listen(value: str) -> tuple[str, int]:
    """"10.0.0.1:9273" or "[2001:db8::1]:9273" -> (address, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: expected ADDRESS:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return _ip(host), int(port)


_PATH_FIELDS = ("shim_socket", "drain_file", "state_file", "event_log")
_CHECK_PATH_FIELDS = ("ca_file", "client_secret_file", "active_token_file",
                      "revoked_token_file")


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{where}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path) -> HealthConfig:
    path = Path(path)
    try:
        raw = read_object(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    resolve_paths(raw, _PATH_FIELDS, path.parent)
    for check in raw.get("checks") or []:
        if isinstance(check, dict):
            resolve_paths(check, _CHECK_PATH_FIELDS, path.parent)
    try:
        return HealthConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid config:\n{_describe(exc)}") from None
