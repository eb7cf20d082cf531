"""Why a site is or is not announced, and whether a client's answer is as expected, in
words: pure reasoning over what `status` gathered (the health daemon's state file, whether
its process runs, is frozen or is gone, the lab's active faults, the router's BGP session
and the routes it holds). No I/O here; `lab.observe.status` reads and passes the facts.

The health daemon rewrites its state file only when something changes, so an old file
alone means nothing; it is *stale* when it is older than `STALE_AFTER_S` while the daemon
is frozen or gone: then nothing refreshes it and the route follows the speaker's watchdog,
not the file.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Several check intervals of the default timings (the DNS check runs every 100 ms, the
# introspection check every 500 ms).
STALE_AFTER_S = 2.0

RUNNING, FROZEN, GONE = "running", "frozen", "gone"

_CONSECUTIVE = re.compile(r"^(?P<why>.*) \((?P<n>\d+) consecutive failures\)$")


def parse_time(text: str | None) -> float | None:
    """An ISO 8601 instant of the health daemon ('2025-01-01T10:00:00.123Z') as epoch."""
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def clock(epoch: float | None) -> str:
    """An instant as the wall clock (UTC) reads it: '12:01:03'."""
    if epoch is None:
        return "?"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%M:%S")


def iso(epoch: Any) -> str | None:
    """An epoch as ISO 8601 UTC with milliseconds (as the health daemon writes instants)."""
    if not isinstance(epoch, int | float):
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def short_failure(reason: str | None) -> str:
    """'timeout (2 consecutive failures)' -> 'timeout x2'."""
    if not reason:
        return "no reason given"
    m = _CONSECUTIVE.match(reason)
    return f"{m['why']} x{m['n']}" if m else reason


@dataclass(frozen=True)
class SiteFacts:
    """Everything the reason for one site is derived from."""

    name: str
    router: str
    mode: str  # "healthd", "exabgp-healthcheck" or "static"
    session: str  # BIRD's BGP state of the router's session to the site ("down": none)
    session_info: str  # BIRD's info column for it
    held: dict[str, bool]  # per announced family: the router holds the site's route
    now: float  # epoch
    state: dict[str, Any] | None = None  # the health daemon's state file, if readable
    healthd: str | None = None  # RUNNING, FROZEN or GONE (healthd mode only)
    watchdog_ms: int = 300
    faults: list[dict[str, Any]] = field(default_factory=list)  # this site's active faults


def state_age(facts: SiteFacts) -> float | None:
    """Seconds since the health daemon last wrote its state file."""
    written = parse_time((facts.state or {}).get("updated"))
    return None if written is None else max(0.0, facts.now - written)


def state_stale(facts: SiteFacts) -> bool:
    """The state file is old and nothing will refresh it (the daemon is frozen or gone)."""
    age = state_age(facts)
    return facts.healthd in (FROZEN, GONE) and (age is None or age > STALE_AFTER_S)


def _fault_start(facts: SiteFacts, *names: str) -> float | None:
    starts = [f.get("t") for f in facts.faults if f.get("fault") in names]
    return min((s for s in starts if isinstance(s, int | float)), default=None)


def _healthd_silence(facts: SiteFacts) -> str:
    """'health daemon frozen, silent 1.2 s' (since its fault, else its last state write)."""
    started = _fault_start(facts, "healthd", "healthd-hang")
    silent = facts.now - started if started is not None else state_age(facts)
    how = "frozen" if facts.healthd == FROZEN else "gone"
    return f"health daemon {how}" + (f", silent {silent:.1f} s" if silent is not None else "")


def _faults_words(facts: SiteFacts) -> str:
    """'; blackhole since 12:01:03 (2.1 s)' for the site's faults in force, else ''."""
    words = []
    for fault in facts.faults:
        start = fault.get("t")
        if isinstance(start, int | float):
            words.append(f"{fault.get('fault')} since {clock(start)} "
                         f"({max(0.0, facts.now - start):.1f} s)")
        else:
            words.append(str(fault.get("fault")))
    return "; " + ", ".join(words) if words else ""


def _down_checks(state: dict[str, Any]) -> list[str]:
    out = []
    for name, check in (state.get("checks") or {}).items():
        if check.get("state") == "down":
            since = clock(parse_time(check.get("since")))
            out.append(f"{name} check down since {since} ({short_failure(check.get('reason'))})")
    return out


def site_reason(facts: SiteFacts) -> str:
    """One line: why the site is or is not announced, from the router's side first."""
    families = list(facts.held)
    held = [f for f in families if facts.held[f]]
    announced = bool(families) and len(held) == len(families)
    state = facts.state or {}
    if facts.session != "Established":
        words = facts.session_info.split()
        if words[:1] == [facts.session]:  # BIRD's info column repeats the state
            words = words[1:]
        info = f": {' '.join(words)}" if words else ""
        verdict = "withdrawn" if not held else "announced"
        return f"{verdict}: session {facts.session}{info}{_faults_words(facts)}"
    if facts.mode == "healthd" and facts.healthd in (FROZEN, GONE):
        silence = _healthd_silence(facts)
        if held:
            return (f"announced, but {silence} (the speaker's watchdog withdraws after "
                    f"{facts.watchdog_ms} ms)")
        return f"withdrawn: watchdog — {silence}"
    if facts.mode == "healthd" and state.get("drained"):
        if held:
            return "draining: announced with GRACEFUL_SHUTDOWN, withdrawal follows"
        return f"drained since {clock(parse_time(state.get('drained_since')))}"
    partial = "" if announced or not held else f" (only {', '.join(held)})"
    if facts.mode == "healthd" and state:
        down = _down_checks(state)
        if down:
            verdict = "announced, but" if held else "withdrawn:"
            return f"{verdict} {'; '.join(down)}{partial}"
        if state.get("health") in ("starting", "unknown"):
            return f"withdrawn: {state.get('health_reason') or 'starting'}{partial}"
        if not held:
            decision = state.get("decision") or state.get("route")
            return f"withdrawn: the router holds no route from {facts.name} " \
                   f"(health daemon: {decision})"
    if facts.mode == "healthd" and not state:
        return "withdrawn: the health daemon has written no state yet" if not held \
            else "announced (no health state yet)"
    if not held:
        return f"withdrawn: the router holds no route from {facts.name}"
    if partial:
        return f"partly announced{partial}"
    return {"static": "announced (static)",
            "exabgp-healthcheck": "announced (ExaBGP healthcheck)"}.get(facts.mode,
                                                                         "announced: healthy")


# --- clients ------------------------------------------------------------------------


def site_set(value: str | Iterable[str] | None) -> set[str]:
    """`expect:` or `failover:` as a set of sites (one site, a list of them, or none)."""
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    return set(value)


def answer_verdict(got: str | None, expect: str | Iterable[str],
                   failover: str | Iterable[str] | None, unavailable: set[str]) -> str | bool:
    """"expected" when a site of `expect` answered; "failover" when a site of `failover`
    answered while every `expect` site is unavailable (withdrawn, or faulted); else False."""
    expected = site_set(expect)
    if got is not None and got in expected:
        return "expected"
    if got is not None and got in site_set(failover) and expected <= unavailable:
        return "failover"
    return False


def client_verdict(verdicts: Iterable[str | bool]) -> str | bool:
    """One verdict for a client from its per-family ones."""
    seen = list(verdicts)
    if not all(seen):
        return False
    return "failover" if "failover" in seen else "expected"
