"""Measured failover: what each client saw around a fault, from its probe samples.

Pure analysis (unit tested) plus the run loop: probe every client, inject the fault at a
recorded instant, wait until the clients have moved, heal, wait until they are back.
Definitions, per client and trial:
- site before: the site answering most queries in the second before the fault;
- site after: the site that answered the last query before the heal (where the client
  settled);
- outage: from the first failed query after the fault to the first query answered by
  the site after (0 when no query failed); None when the client never got an answer.
  A client that had settled at the site after and then lost the last queries before the
  heal (a loss just before it) is recovered: its outage runs from that first loss to its
  next answer from the site after, once the heal is done. It had settled when those
  answers lasted at least as long as the losses that end the fault (a client that
  loses everything from a few answers after the fault until the heal never recovered);
- lost: queries without an answer between the fault and the heal;
- recovery: from the heal to the first answer from the site before again.
With a probe that holds long-lived connections (`probes.tcp_stream`), also:
- broken: connections that broke (reset, timeout, closed) between the fault and the heal;
- reconnect: the longest of those from the break to the first answer on a new connection
  (None when one was never answered again before the heal).

Any probe will do that appends a `Sample` per query as it sends it (`samples`), starts with
`start()` and stops with `stop()`: the DNS prober by default, or one from `make_probe`.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from lab.shared.wait import wait_until
from probes.dns import BackgroundProbe, Sample

POLL_S = 0.01  # how often a trial looks at the clients' answers while it waits


class Probe(Protocol):
    samples: list[Sample]

    def start(self) -> Probe: ...

    def stop(self) -> list[Sample]: ...


# (client's namespace, the longest it may run, the address it asks) -> a probe, not
# started yet.
ProbeFactory = Callable[[str, float, str], Probe]


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
    broken: int | None = None          # long-lived connections only (see the docstring)
    reconnect_ms: float | None = None


def connection_breaks(breaks: list[Any], t_fault: float,
                      t_heal: float | None) -> tuple[int, float | None]:
    """(how many broke between the fault and the heal, the longest time to an answer on
    a new connection, None when one of them got none) of a probe's `breaks`."""
    during = [b for b in breaks if b.t >= t_fault and (t_heal is None or b.t < t_heal)]
    times = [b.reconnect_ms for b in during]
    if not during or any(t is None for t in times):
        return len(during), None
    return len(during), max(times)

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
        if good is None and t_heal is not None and \
                _settled_before(during, first_failed, site_after, t_heal):
            good = next((s for s in after_heal if s.site == site_after), None)
        outage_ms = None if good is None else round((good.t - first_failed.t) * 1000, 3)
        if first_failed.site is not None:  # moved without a failed query in between
            outage_ms = 0.0
    recovery_ms = None
    if t_heal is not None:
        back = next((s for s in after_heal if s.site == site_before), None)
        recovery_ms = None if back is None else round((back.t - t_heal) * 1000, 3)
    return ClientTrial(client, site_before, site_after, outage_ms,
                       sum(1 for s in during if s.site is None), recovery_ms, len(samples))


def _settled_before(during: list[Sample], first_failed: Sample, site_after: str | None,
                    t_heal: float) -> bool:
    """The client had settled at `site_after` before the losses from `first_failed` to the
    heal: the answers from it just before them (after the fault, none failed in between)
    lasted at least as long as the losses did."""
    if site_after is None:
        return False
    run_start = None
    for s in reversed([s for s in during if s.t < first_failed.t]):
        if s.site != site_after:
            break
        run_start = s.t
    return run_start is not None and first_failed.t - run_start >= t_heal - first_failed.t


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

    summary = {"affected_client_trials": len(affected),
               "never_recovered": sum(1 for c in affected if c.outage_ms is None),
               "outage_ms": dist(outages), "lost": dist(lost), "recovery_ms": dist(recov)}
    streams = [c for trial in trials for c in trial if c.broken is not None]
    if streams:
        summary["broken"] = dist(sorted(c.broken for c in streams if c.broken is not None))
        summary["broken_total"] = sum(c.broken or 0 for c in streams)
        summary["reconnect_ms"] = dist(sorted(c.reconnect_ms for c in streams
                                              if c.reconnect_ms is not None))
    return summary


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
              timeout_s: float = 0.1, servers: dict[str, str] | None = None,
              make_probe: ProbeFactory | None = None) -> TrialRecord:
    """Probe from every client (name -> netns), inject, wait for the clients to settle on
    a site, hold, heal, wait for them to return; bounded by max_wait_s per phase. The
    probe is the DNS prober at `server` unless `make_probe` gives another (sending
    `rate_hz` queries per second, which the settling windows assume). `servers`: a
    probe's own server address by name (default: `server`; one per family)."""
    duration = settle_s + 2 * max_wait_s + 2 * hold_s + 5

    def dns_probe(netns: str, longest_s: float, address: str) -> Probe:
        return BackgroundProbe(address, rate_hz, longest_s, timeout_s, netns)

    make = make_probe or dns_probe
    probes: dict[str, Probe] = {}
    try:
        for name, netns in clients.items():
            probes[name] = make(netns, duration, (servers or {}).get(name, server)).start()
    except BaseException:
        for probe in probes.values():
            probe.stop()
        raise
    try:
        # Steady first: a second of answers from every client (a service just restarted
        # by the previous trial's heal may answer DNS before HTTPS).
        wait_until(lambda: all(_steady(p, int(rate_hz * settle_s)) for p in probes.values()),
                   settle_s + max_wait_s, POLL_S)
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
    trials = []
    for name, got in samples.items():
        trial = analyse(name, got, t_fault, t_heal)
        breaks = getattr(probes[name], "breaks", None)
        if breaks is not None:
            trial.broken, trial.reconnect_ms = connection_breaks(breaks, t_fault, t_heal)
        trials.append(trial)
    return TrialRecord(t_fault, t_heal, samples, trials)


def _steady(probe: Probe, count: int) -> bool:
    """The probe's last `count` queries (but the last few, maybe in flight) are answered."""
    done = probe.samples[:-5]
    return len(done) >= count and all(s.site is not None for s in done[-count:])


def _settled(probes: dict[str, Probe], since: float, before: dict[str, str | None],
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
