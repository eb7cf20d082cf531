"""Measured failover: what each client saw around a fault, from its probe samples.

Pure analysis (unit tested) plus the run loop: probe every client, inject the fault at a
recorded instant, wait until the clients have moved, heal, wait until they are back.
Definitions, per client and trial:
- site before: the site answering most queries in the second before the fault;
- site after: the site that answered the last query before the heal (where the client
  settled);
- outage: from the first failed query after the fault to the first query answered by
  the site after (0 when no query failed); None when the client never got an answer;
- lost: queries without an answer between the fault and the heal;
- recovery: from the heal to the first answer from the site before again.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from lab.shared.wait import wait_until
from probes.dns import BackgroundProbe, Sample

POLL_S = 0.01  # how often a trial looks at the clients' answers while it waits


@dataclass
class ClientTrial:
    client: str
    site_before: str | None
    site_after: str | None
    outage_ms: float | None
    lost: int
    recovery_ms: float | None
    queries: int
    family: str = "ipv4"


def _mode(samples: list[Sample]) -> str | None:
    counts = Counter(s.site for s in samples if s.site)
    return counts.most_common(1)[0][0] if counts else None


def analyse(client: str, samples: list[Sample], t_fault: float, t_heal: float | None,
            before_window_s: float = 1.0) -> ClientTrial:
    before = [s for s in samples if t_fault - before_window_s <= s.t < t_fault]
    during = [s for s in samples if s.t >= t_fault and (t_heal is None or s.t < t_heal)]
    after_heal = [s for s in samples if t_heal is not None and s.t >= t_heal]
    site_before = _mode(before)
    site_after = next((s.site for s in reversed(during) if s.site), None)
    first_failed = next((s for s in during if s.site is None or s.site != site_before), None)
    outage_ms: float | None = 0.0
    if first_failed is not None:
        good = next((s for s in during if s.t >= first_failed.t and s.site == site_after
                     and s.site is not None), None)
        outage_ms = None if good is None else round((good.t - first_failed.t) * 1000, 3)
        if first_failed.site is not None:  # moved without a failed query in between
            outage_ms = 0.0
    recovery_ms = None
    if t_heal is not None:
        back = next((s for s in after_heal if s.site == site_before), None)
        recovery_ms = None if back is None else round((back.t - t_heal) * 1000, 3)
    return ClientTrial(client, site_before, site_after, outage_ms,
                       sum(1 for s in during if s.site is None), recovery_ms, len(samples))


def summarise(trials: list[list[ClientTrial]]) -> dict[str, Any]:
    """Median, p95 and max over the clients that moved (or lost answers) in all trials."""
    affected = [c for trial in trials for c in trial
                if c.site_after != c.site_before or c.lost]
    outages = sorted(c.outage_ms for c in affected if c.outage_ms is not None)
    lost = sorted(c.lost for c in affected)
    recov = sorted(c.recovery_ms for c in affected if c.recovery_ms is not None)

    def dist(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"median": None, "p95": None, "max": None}
        return {"median": round(statistics.median(values), 3),
                "p95": values[min(len(values) - 1, round(0.95 * (len(values) - 1)))],
                "max": values[-1]}

    return {"affected_client_trials": len(affected),
            "never_recovered": sum(1 for c in affected if c.outage_ms is None),
            "outage_ms": dist(outages), "lost": dist(lost), "recovery_ms": dist(recov)}


@dataclass
class TrialRecord:
    t_fault: float
    t_heal: float
    samples: dict[str, list[Sample]]
    clients: list[ClientTrial]
    events: list[Any] = field(default_factory=list)  # lab.measure.events.Event


def run_trial(clients: dict[str, str], server: str, rate_hz: float,
              inject: Callable[[], None], heal: Callable[[], None], *,
              settle_s: float = 1.0, max_wait_s: float = 10.0, hold_s: float = 1.0,
              timeout_s: float = 0.1, servers: dict[str, str] | None = None) -> TrialRecord:
    """Probe from every client (name -> netns), inject, wait for the clients to settle on
    a site, hold, heal, wait for them to return; bounded by max_wait_s per phase.
    `servers`: a probe's own server address by name (default: `server`)."""
    probes = {name: BackgroundProbe((servers or {}).get(name, server), rate_hz,
                                    settle_s + 2 * max_wait_s + 2 * hold_s,
                                    timeout_s, netns).start() for name, netns in clients.items()}
    try:
        wait_until(lambda: all(len(p.samples) >= rate_hz * settle_s for p in probes.values()),
                   settle_s + 5, POLL_S)
        before = {n: _mode(p.samples[-int(rate_hz * settle_s):]) for n, p in probes.items()}
        t_fault = time.monotonic()
        inject()
        wait_until(lambda: _settled(probes, t_fault, before, moved=True, rate_hz=rate_hz),
                   max_wait_s, POLL_S)
        time.sleep(hold_s)
        t_heal = time.monotonic()
        heal()
        wait_until(lambda: _settled(probes, t_heal, before, moved=False, rate_hz=rate_hz),
                   max_wait_s, POLL_S)
        time.sleep(hold_s / 2)
    finally:
        samples = {n: p.stop() for n, p in probes.items()}
    return TrialRecord(t_fault, t_heal, samples,
                       [analyse(n, s, t_fault, t_heal) for n, s in samples.items()])


def _settled(probes: dict[str, BackgroundProbe], since: float, before: dict[str, str | None],
             moved: bool, rate_hz: float) -> bool:
    """Every client's last few answers (sent after `since`) are all answered, and for
    the clients whose site changed, by a new site (moved) or by the old one (back)."""
    window = max(3, int(rate_hz * 0.05))
    changed = False
    for name, p in probes.items():
        recent = [s for s in p.samples[-window - 5:-5] if s.t >= since]
        if len(recent) < window or any(s.site is None for s in recent):
            return False
        changed |= any(s.site != before[name] for s in recent)
        if not moved and any(s.site != before[name] for s in recent):
            return False
    return changed if moved else True


def trial_json(record: TrialRecord) -> dict[str, Any]:
    out = {"clients": [asdict(c) for c in record.clients],
           "heal_after_ms": round((record.t_heal - record.t_fault) * 1000, 1)}
    if record.events:
        out["events"] = [e.to_json(record.t_fault) for e in record.events]
    return out
