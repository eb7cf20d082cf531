"""The expectation evaluator: pure functions from an observation of the lab to a verdict.

An `Observation` is what the runner saw at one instant: the `status` JSON (the lab's
ECMP-aware view: which sites answer each client, what each router holds, health, drain,
sessions), the introspection answers for the tokens the step asks about, and the
background prober's samples since the scenario started. Nothing here touches the lab,
so every verdict can be tested on recorded observations.

A verdict is `ok` or not; a failing verdict is `final` when waiting longer cannot
change it (a measured bound exceeded once the client has settled): the runner stops
polling the step then, instead of at its deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lab.measure.trials import analyse
from lab.model import names
from lab.scenario import model as m
from probes.dns import Sample

SETTLE_RUN_S = 0.1  # a client has settled at a site after this long of its answers only
MIN_SETTLE_RUN = 3  # ... and at least this many answers in a row
# Where a client was before the action: its last answer before it, that is its answers
# in this many probe intervals (the previous step may have ended the instant the client
# came back, so a longer window would often name the site it came from).
BEFORE_INTERVALS = 1.5


@dataclass
class Observation:
    status: dict[str, Any] | None = None
    # (token, "at"|"via", site or client) -> {"active": bool|None, "site": str|None,
    # "error": str|None}
    tokens: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    audit: dict[str, Any] | None = None  # `anycast-lab audit`'s document (lab.observe.audit)
    t_action: float = 0.0  # monotonic instant the step's action began
    rate_hz: float = 50.0
    # The other probe kinds (probe.kinds): kind -> client -> samples, kind -> rate, and
    # the TCP probe's broken connections per client (probes.tcp_stream.Break).
    by_kind: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    breaks: dict[str, list[Any]] = field(default_factory=dict)

    def probe_samples(self, kind: str, client: str) -> list[Sample]:
        if kind == "dns" and kind not in self.by_kind:
            return list(self.samples.get(client, []))
        return list(self.by_kind.get(kind, {}).get(client, []))

    def probe_rate(self, kind: str) -> float:
        return self.rates.get(kind, self.rate_hz)


@dataclass
class Verdict:
    ok: bool
    expected: str  # the expectation in words
    observed: str  # what was seen, in words
    values: dict[str, Any] = field(default_factory=dict)
    final: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "expected": self.expected, "observed": self.observed,
                "values": self.values}


def _words(sites: Iterable[str]) -> str:
    return " or ".join(sites)


def _families(family: str) -> tuple[str, ...]:
    return ("v4", "v6") if family == "both" else (family,)


# A measured expectation's bounds in words, in the order they are said.
MEASURED_BOUNDS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("max_outage_ms", "outage <= {:g} ms".format), ("min_outage_ms", "outage >= {:g} ms".format),
    ("max_lost", "lost <= {}".format), ("min_lost", "lost >= {}".format),
    ("max_settle_ms", "settled within {:g} ms".format),
    ("min_settle_ms", "settled no sooner than {:g} ms".format),
    ("min_broken", "broken >= {}".format), ("max_broken", "broken <= {}".format),
    ("broken_from", lambda sites: f"broken only at {_words(m.site_list(sites))}"),
    ("min_loss_pct", "loss >= {:g} %".format), ("max_loss_pct", "loss <= {:g} %".format))


def describe(exp: Any) -> str:
    """An expectation in words: 'c-eu answered by nyc (v4, v6)'."""
    if isinstance(exp, m.ClientExpect):
        fams = ", ".join(_families(exp.family))
        at = m.site_list(exp.at)
        if at == (m.NONE_SITE,):
            return f"{exp.client} gets no answer ({fams})"
        return f"{exp.client} answered by {_words(at)} ({fams})"
    if isinstance(exp, m.SpreadExpect):
        bounds = [f"at least {exp.min_sites}" if exp.min_sites else "",
                  f"at most {exp.max_sites}" if exp.max_sites else ""]
        return f"{exp.spread}'s queries spread over {' and '.join(b for b in bounds if b)} " \
               f"site(s) ({exp.family})"
    if isinstance(exp, m.SiteExpect):
        said = []
        if exp.announced is not None:
            said.append("announced" if exp.announced else "withdrawn")
        if exp.drained is not None:
            said.append("drained" if exp.drained else "not drained")
        if exp.health is not None:
            said.append(f"health {exp.health}")
        if exp.check is not None:
            said.append(f"{exp.check} check {exp.state}")
        return f"{exp.site} {', '.join(said)}"
    if isinstance(exp, m.RouterExpect):
        said = []
        if exp.best is not None:
            best = m.site_list(exp.best)
            said.append("no route" if best == (m.NONE_SITE,) else f"best path to {_words(best)}")
        if exp.as_path is not None:
            said.append(f"AS path {' '.join(map(str, exp.as_path))}")
        return f"{exp.router} ({exp.family}) {', '.join(said)}"
    if isinstance(exp, m.SessionExpect):
        router, peer = exp.session
        return f"session {router}--{peer} {'' if exp.established else 'not '}Established"
    if isinstance(exp, m.TokenExpect):
        where = f"at {exp.at}" if exp.at else f"via the anycast address from {exp.via}"
        return f"token {exp.token} {'active' if exp.active else 'inactive'} {where}"
    if isinstance(exp, m.MeasuredExpect):
        bounds = [say(getattr(exp, name)) for name, say in MEASURED_BOUNDS
                  if getattr(exp, name) is not None]
        tail = f": {', '.join(bounds)}" if bounds else ""
        probe = "" if exp.probe == "dns" else f" ({exp.probe} probe)"
        return f"{exp.measured}{probe} settles at {_words(m.site_list(exp.settles_at))}{tail}"
    if isinstance(exp, m.IdentityExpect):
        said = []
        if exp.stale is not None:
            said.append("stale" if exp.stale else "fresh")
        if exp.current is not None:
            said.append("at the issuer's version" if exp.current
                        else "behind the issuer's version")
        if exp.keys_match is not None:
            said.append("serves the issuer's keys" if exp.keys_match
                        else "serves keys the issuer does not hold")
        return f"{exp.identity}'s identity: {', '.join(said)}"
    if isinstance(exp, m.AuditExpect):
        what = exp.property or "every property"
        return f"audit of {exp.audit}: {what} {'diverges' if exp.diverges else 'agrees'}"
    raise TypeError(f"not an expectation: {exp!r}")


def evaluate(exp: Any, obs: Observation) -> Verdict:
    """The verdict of one expectation on one observation."""
    words = describe(exp)
    for kind, fn in _EVALUATORS:
        if isinstance(exp, kind):
            ok, observed, values, final = fn(exp, obs)
            return Verdict(ok, words, observed, values, final)
    raise TypeError(f"not an expectation: {exp!r}")


Result = tuple[bool, str, dict[str, Any], bool]


def _missing(what: str) -> Result:
    return False, f"no {what} in the lab's status", {}, False


def _answers(entry: dict[str, Any], fam: str) -> dict[str | None, int]:
    """The sites that answered a client on one family (ECMP: every site of its spread;
    None: no answer), with how many queries each."""
    single = entry.get("site" if fam == "v4" else "site6")
    seen: dict[str | None, int] = {single: 1}
    spread = entry.get("sites" if fam == "v4" else "sites6")
    if isinstance(spread, dict):
        for site, count in spread.items():
            key = None if site == "none" else site
            seen[key] = seen.get(key, 0) + count
    return seen


def _shown(seen: dict[str | None, int]) -> str:
    if len(seen) == 1:
        return next(iter(seen)) or "no answer"
    return " ".join(f"{s or 'none'}:{n}" for s, n in sorted(seen.items(), key=str))


def _client(exp: m.ClientExpect, obs: Observation) -> Result:
    entry = (obs.status or {}).get("clients", {}).get(exp.client)
    if entry is None:
        return _missing(f"client {exp.client}")
    want = set(m.site_list(exp.at))
    ok, parts, values = True, [], {}
    for fam in _families(exp.family):
        seen = _answers(entry, fam)
        values[fam] = {str(k): v for k, v in seen.items()}
        if want == {m.NONE_SITE}:
            ok &= set(seen) == {None}
        else:
            ok &= None not in seen and set(seen) <= want
        parts.append(f"{fam} {_shown(seen)}")
    return ok, ", ".join(parts), values, False


def _spread(exp: m.SpreadExpect, obs: Observation) -> Result:
    entry = (obs.status or {}).get("clients", {}).get(exp.spread)
    if entry is None:
        return _missing(f"client {exp.spread}")
    seen = {s for s in _answers(entry, exp.family) if s is not None}
    ok = (exp.min_sites is None or len(seen) >= exp.min_sites) and \
         (exp.max_sites is None or len(seen) <= exp.max_sites)
    return ok, f"{len(seen)} site(s): {' '.join(sorted(seen)) or 'none'}", \
        {"sites": sorted(seen)}, False


def _site(exp: m.SiteExpect, obs: Observation) -> Result:
    entry = (obs.status or {}).get("sites", {}).get(exp.site)
    if entry is None:
        return _missing(f"site {exp.site}")
    ok, parts = True, []
    values: dict[str, Any] = {}
    if exp.announced is not None:
        values["announced"] = got = bool(entry.get("announced"))
        ok &= got == exp.announced
        parts.append("announced" if got else "withdrawn")
    if exp.drained is not None:
        values["drained"] = got = bool(entry.get("drained"))
        ok &= got == exp.drained
        parts.append("drained" if got else "not drained")
    if exp.health is not None:
        values["health"] = health = entry.get("health")
        ok &= health == exp.health
        parts.append(f"health {health}")
    if exp.check is not None:
        state = (entry.get("checks") or {}).get(exp.check, {}).get("state")
        values[f"{exp.check}_check"] = state
        ok &= state == exp.state
        parts.append(f"{exp.check} check {state or 'unknown'}")
    observed = ", ".join(parts)
    if not ok and entry.get("reason"):
        observed += f" ({entry['reason']})"
    return ok, observed, values, False


def _router(exp: m.RouterExpect, obs: Observation) -> Result:
    status = obs.status or {}
    entry = status.get("routers", {}).get(exp.router)
    if entry is None:
        return _missing(f"router {exp.router}")
    anycast = status.get("anycast") or []
    prefix = next((p for p in anycast if (":" in p) == (exp.family == "v6")), None)
    best = (entry.get("best") or {}).get(prefix) if prefix else None
    sites = set(best.get("sites") or ([best["site"]] if best and best.get("site") else [])) \
        if best else set()
    as_path = list(best.get("as_path") or []) if best else []
    ok, parts = True, []
    if exp.best is not None:
        want = set(m.site_list(exp.best))
        ok &= (not sites) if want == {m.NONE_SITE} else (bool(sites) and sites <= want)
        parts.append(f"best path to {' '.join(sorted(sites))}" if sites else "no route")
    if exp.as_path is not None:
        ok &= as_path == exp.as_path
        parts.append(f"AS path {' '.join(map(str, as_path)) or 'none'}")
    return ok, ", ".join(parts), {"sites": sorted(sites), "as_path": as_path}, False


def session_protocol(router: str, peer: str, sites: Iterable[str]) -> str:
    """The BIRD protocol of a router's session with a site or (IPv4) a router."""
    return names.site_protocol(peer) if peer in set(sites) else names.router_protocol(peer, 4)


def _session(exp: m.SessionExpect, obs: Observation) -> Result:
    status = obs.status or {}
    router, peer = exp.session
    entry = status.get("routers", {}).get(router)
    if entry is None:
        return _missing(f"router {router}")
    proto = session_protocol(router, peer, status.get("sites", {}))
    state = (entry.get("sessions") or {}).get(proto, "down")
    ok = (state == "Established") == exp.established
    return ok, f"{state}", {"state": state, "protocol": proto}, False


def token_key(exp: m.TokenExpect) -> tuple[str, str, str]:
    return (exp.token, "at", exp.at) if exp.at else (exp.token, "via", exp.via or "")


def _token(exp: m.TokenExpect, obs: Observation) -> Result:
    answer = obs.tokens.get(token_key(exp))
    if answer is None:
        return False, "not asked yet", {}, False
    if answer.get("active") is None:
        return False, f"no answer ({answer.get('error') or 'unknown error'})", answer, False
    where = f" (answered by {answer['site']})" if answer.get("site") else ""
    ok = answer["active"] is exp.active
    return ok, f"{'active' if answer['active'] else 'inactive'}{where}", answer, False


def settle_point(samples: list[Sample], since: float, sites: set[str],
                 run: int) -> tuple[int, int] | None:
    """(first, last) index of the first run of `run` answers in a row, all from `sites`,
    among the samples sent at or after `since` (None: not settled yet)."""
    start, count = None, 0
    for i, s in enumerate(samples):
        if s.t < since:
            continue
        if s.site is None and s.error is None:  # still in flight: nothing after it counts
            return None
        if s.site in sites:
            if count == 0:
                start = i
            count += 1
            if count >= run:
                assert start is not None
                return start, i
        else:
            start, count = None, 0
    return None


def loss_share(samples: list[Sample], since: float) -> tuple[int, int]:
    """(unanswered, done) among the samples sent at or after `since` that are answered
    or given up (those still in flight are not counted)."""
    done = [s for s in samples if s.t >= since and (s.site or s.error)]
    return sum(1 for s in done if not s.site), len(done)


def _measured(exp: m.MeasuredExpect, obs: Observation) -> Result:
    samples = obs.probe_samples(exp.probe, exp.measured)
    rate = obs.probe_rate(exp.probe)
    want = set(m.site_list(exp.settles_at))
    run = max(MIN_SETTLE_RUN, round(rate * SETTLE_RUN_S))
    point = settle_point(samples, obs.t_action, want, run)
    after = [s for s in samples if s.t >= obs.t_action and (s.site or s.error)]
    if point is None:
        last = after[-run:]
        seen = " ".join(s.site or (s.error or "?") for s in last) or "no answers yet"
        return False, f"not settled at {_words(sorted(want))} (last answers: {seen})", \
            {"settled": False, "queries": len(after)}, False
    first, last = point
    settle_ms = round((samples[first].t - obs.t_action) * 1000, 1)
    trial = analyse(exp.measured, samples, obs.t_action, samples[last].t + 1e-6,
                    before_window_s=BEFORE_INTERVALS / rate)
    outage = trial.outage_ms if trial.outage_ms is not None else settle_ms
    values = {"settled": True, "site_before": trial.site_before,
              "site": samples[first].site, "outage_ms": outage, "lost": trial.lost,
              "settle_ms": settle_ms}
    ok = True
    if exp.max_outage_ms is not None:
        ok &= outage <= exp.max_outage_ms
    if exp.min_outage_ms is not None:
        ok &= outage >= exp.min_outage_ms
    if exp.max_lost is not None:
        ok &= trial.lost <= exp.max_lost
    if exp.min_lost is not None:
        ok &= trial.lost >= exp.min_lost
    if exp.max_settle_ms is not None:
        ok &= settle_ms <= exp.max_settle_ms
    if exp.min_settle_ms is not None:
        ok &= settle_ms >= exp.min_settle_ms
    final = not ok
    observed = (f"{trial.site_before or '?'} -> {samples[first].site}: outage {outage:g} ms, "
                f"{trial.lost} lost, settled after {settle_ms:g} ms")
    # Counted since the action up to now: more time may still change them (never final).
    more_ok = True
    if exp.min_broken is not None or exp.max_broken is not None or exp.broken_from is not None:
        since = [b for b in obs.breaks.get(exp.measured, []) if b.t >= obs.t_action]
        broken = len(since)
        values["broken"] = broken
        more_ok &= exp.min_broken is None or broken >= exp.min_broken
        more_ok &= exp.max_broken is None or broken <= exp.max_broken
        observed += f", {broken} connection(s) broken"
        if exp.broken_from is not None:
            allowed = set(m.site_list(exp.broken_from))
            where = sorted({b.site_before or "?" for b in since})
            values["broken_from"] = where
            if not set(where) <= allowed:  # a break elsewhere cannot be undone
                ok = more_ok = False
                final = True
            if where:
                observed += f" (at {_words(where)})"
    if exp.min_loss_pct is not None or exp.max_loss_pct is not None:
        lost, done = loss_share(samples, obs.t_action)
        pct = round(100 * lost / done, 1) if done else 0.0
        values.update(loss_pct=pct, loss_of=done)
        more_ok &= exp.min_loss_pct is None or pct >= exp.min_loss_pct
        more_ok &= exp.max_loss_pct is None or pct <= exp.max_loss_pct
        observed += f", {pct:g} % of {done} lost since the action"
    return ok and more_ok, observed, values, final


def _audit(exp: m.AuditExpect, obs: Observation) -> Result:
    doc = obs.audit
    if doc is None or exp.audit not in (doc.get("sites") or {}):
        return False, f"no audit of site {exp.audit} yet", {}, False
    facts = doc["sites"][exp.audit]
    marked: dict[str, str] = (doc.get("divergent") or {}).get(exp.audit, {})
    if exp.property is not None:
        why = marked.get(exp.property)
        got = why is not None
        value = facts.get(exp.property)
        observed = (f"{exp.property} diverges: {why}" if got
                    else f"{exp.property} agrees ({value!r})")
        values = {"diverges": got, "value": value, "why": why}
    else:
        got = bool(marked)
        observed = ("diverges: " + "; ".join(f"{p}: {w}" for p, w in marked.items())
                    if got else "every property agrees")
        values = {"diverges": got, "divergent": dict(marked)}
    return got == exp.diverges, observed, values, False


def _identity(exp: m.IdentityExpect, obs: Observation) -> Result:
    site = (obs.status or {}).get("sites", {}).get(exp.identity)
    if site is None:
        return _missing(f"site {exp.identity}")
    entry = site.get("identity")
    if not isinstance(entry, dict):
        return False, "no identity in the lab's status", {}, False
    ok, parts = True, []
    for key, want in (("stale", exp.stale), ("current", exp.current),
                      ("keys_match", exp.keys_match)):
        if want is not None:
            ok &= entry.get(key) is want
            parts.append(f"{key} {str(entry.get(key)).lower()}")
    version, of = entry.get("version"), entry.get("issuer_version")
    age = entry.get("sync_age_s")
    said = f"v{version}" + (f" of v{of}" if of is not None and of != version else "") \
        + (f", synced {age:.1f} s ago" if isinstance(age, int | float) else "")
    values = {k: entry.get(k) for k in ("version", "issuer_version", "current", "stale",
                                        "sync_age_s", "keys_match")}
    return ok, f"{', '.join(parts)} ({said})", values, False


_EVALUATORS: list[tuple[type, Any]] = [
    (m.ClientExpect, _client), (m.SpreadExpect, _spread), (m.SiteExpect, _site),
    (m.RouterExpect, _router), (m.SessionExpect, _session), (m.TokenExpect, _token),
    (m.MeasuredExpect, _measured), (m.AuditExpect, _audit), (m.IdentityExpect, _identity),
]


@dataclass
class StepOutcome:
    """A step's verdicts at the end of its polling."""

    verdicts: list[Verdict]
    timed_out: bool

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


def judge(expectations: list[Any], obs: Observation) -> tuple[bool, bool, list[Verdict]]:
    """(all hold, some failure is final, verdicts) for one observation."""
    verdicts = [evaluate(e, obs) for e in expectations]
    return all(v.ok for v in verdicts), any(v.final and not v.ok for v in verdicts), verdicts
