"""`watch`: what a running lab does, second by second, for a live view — read-only.

Background work, all bounded and stopped by `Watcher.stop()` (threads of this process,
no child processes):
- one DNS prober per client and family (`probes.dns.BackgroundProbe`, its socket inside
  the client's namespace) at `rate_hz`, restarted every PROBE_SPAN_S so that no list
  grows without bound;
- one poller, every SITES_EVERY_S: each site's health (its health daemon's state file),
  whether its router holds its route, the reason (as `status` words it), the faults in
  force, and the health daemon's new events.
`snapshot()` is what a frame (or a JSON line) shows; `events` collects what changed:
a client answered by another site or not at all, a site's health or announcement, a
fault injected or healed, a health daemon's transitions."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from lab.host.birdctl import Birds
from lab.host.labs import Lab
from lab.model.names import node_dir
from lab.observe import reasons
from lab.observe.routing import announced_families, anycast_routes, held_from_sites, sessions
from lab.observe.status import active_faults, health_and_facts, health_mode
from probes.dns import BackgroundProbe, Sample

FAMILIES = ("ipv4", "ipv6")
PROBE_SPAN_S = 300.0  # a prober's life before it is replaced by a fresh one
PROBE_TIMEOUT_S = 0.25
SITES_EVERY_S = 0.5
HISTORY_S = 10.0  # the history strip's span
BUCKET_S = 0.5  # one character of the strip
MAX_EVENTS = 200


@dataclass
class WatchEvent:
    t: float  # epoch
    kind: str  # moved, lost, answered, health, route, fault, healed, healthd
    where: str  # a client ("c-eu ipv4") or a site
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"time": reasons.iso(self.t), "kind": self.kind, "where": self.where,
                "text": self.text}


@dataclass
class _Probe:
    client: str
    family: str
    netns: str
    server: str
    probe: BackgroundProbe | None = None
    seen: int = 0  # samples of `probe` already taken in
    started: float = 0.0  # when `probe` started (monotonic)
    history: deque = field(default_factory=lambda: deque(maxlen=4000))  # (t, site | None)
    site: str | None = None
    rtt_ms: float | None = None
    last_answer: str | None = "?"  # the site of the last settled sample ("?": none yet)
    last_site: str | None = None  # the last site that answered
    lost_run: int = 0  # queries lost since it last answered


def site_symbols(sites: list[str]) -> dict[str, str]:
    """One character per site for the history strip: the first letter of its name not
    taken by an earlier site (upper case), else a free letter or digit."""
    taken: set[str] = set()
    out = {}
    spare = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    for site in sites:
        symbol = next((ch for ch in site.upper() if ch.isalnum() and ch not in taken), None)
        while symbol is None or symbol in taken:
            symbol = next(spare, "?")
            if symbol == "?":
                break
        taken.add(symbol)
        out[site] = symbol
    return out


def strip(history: list[tuple[float, str | None]], now: float, symbols: dict[str, str],
          span_s: float = HISTORY_S, bucket_s: float = BUCKET_S) -> str:
    """The last `span_s` as characters, oldest first, one per `bucket_s`: the symbol of
    the site that answered most queries in it, 'x' when most got no answer, ' ' when no
    query was settled there."""
    n = int(span_s / bucket_s)
    buckets: list[Counter] = [Counter() for _ in range(n)]
    for t, site in history:
        i = int((t - (now - span_s)) / bucket_s)
        if 0 <= i < n:
            buckets[i][site] += 1
    out = []
    for b in buckets:
        if not b:
            out.append(" ")
            continue
        site, _ = b.most_common(1)[0]
        out.append("x" if site is None else symbols.get(site, "?"))
    return "".join(out)


def settled(samples: list[Sample], now: float, timeout_s: float) -> int:
    """How many of `samples` (in send order) are settled: answered, failed, or older
    than the timeout."""
    count = 0
    for s in samples:
        if s.site is None and s.error is None and now - s.t <= timeout_s:
            break
        count += 1
    return count


class Watcher:
    def __init__(self, lab: Lab, rate_hz: float) -> None:
        assert lab.plan is not None and lab.topology is not None
        self.lab, self.rate_hz = lab, rate_hz
        self.plan, self.topo = lab.plan, lab.topology
        self.sites = list(self.topo.sites)
        self.symbols = site_symbols(self.sites)
        servers = {"ipv4": str(self.plan.anycast4.network_address),
                   "ipv6": str(self.plan.anycast6.network_address)}
        self.probes = [_Probe(c.name, fam, c.netns, servers[fam])
                       for c in self.plan.by_role("client") for fam in FAMILIES]
        self.site_rows: dict[str, dict[str, Any]] = {}
        self.events: deque[WatchEvent] = deque(maxlen=MAX_EVENTS)
        self.seq = 0  # events ever added; a reader remembers how many it took
        self._faults: dict[str, Any] | None = None
        self._log_offsets: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_sites, name="watch-sites",
                                        daemon=True)
        self._mono_to_wall = time.time() - time.monotonic()

    # --- life ----------------------------------------------------------------------------

    def start(self) -> Watcher:
        for p in self.probes:
            self._start_probe(p)
        for site in self.sites:  # only new health events are news
            path = node_dir(self.lab.journal.dir, site) / "health-events.jsonl"
            self._log_offsets[site] = path.stat().st_size if path.exists() else 0
        self._poller.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        running = [p.probe for p in self.probes if p.probe is not None]
        # Together: each waits for its last queries' timeout before it returns.
        stoppers = [threading.Thread(target=probe.stop) for probe in running]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(timeout=10)
        self._poller.join(timeout=10)

    def _start_probe(self, p: _Probe) -> None:
        p.probe = BackgroundProbe(p.server, self.rate_hz, PROBE_SPAN_S, PROBE_TIMEOUT_S,
                                  p.netns).start()
        p.seen, p.started = 0, time.monotonic()

    # --- events --------------------------------------------------------------------------

    def _event(self, kind: str, where: str, text: str, t: float | None = None) -> None:
        with self._lock:
            self.events.append(WatchEvent(time.time() if t is None else t, kind, where, text))
            self.seq += 1

    def events_since(self, seq: int) -> tuple[list[WatchEvent], int]:
        """The events added after the reader's `seq` (those still kept), and the new seq."""
        with self._lock:
            new = min(self.seq - seq, len(self.events))
            return list(self.events)[len(self.events) - new:], self.seq

    # --- clients -------------------------------------------------------------------------

    def refresh_clients(self) -> None:
        """Take in every prober's newly settled samples (called by the view each frame)."""
        now = time.monotonic()
        for p in self.probes:
            assert p.probe is not None
            samples = p.probe.samples
            done = settled(samples[p.seen:], now, PROBE_TIMEOUT_S)
            for s in samples[p.seen:p.seen + done]:
                p.history.append((s.t, s.site))
                if s.site is not None:
                    p.site, p.rtt_ms = s.site, s.rtt_ms
                self._client_change(p, s)
            p.seen += done
            if now - p.started >= PROBE_SPAN_S and not self._stop.is_set():
                p.probe.stop()  # it has sent its last query: take a fresh one
                self._start_probe(p)

    def _client_change(self, p: _Probe, s: Sample) -> None:
        if s.site is None:
            p.lost_run += 1
        if s.site == p.last_answer:
            return
        where = f"{p.client} {p.family}"
        t = s.t + self._mono_to_wall
        if p.last_answer == "?":
            pass
        elif s.site is None:
            self._event("lost", where, f"{where}: no answer ({s.error or 'timeout'}), "
                                       f"was {p.last_answer}", t)
        elif s.site == p.last_site:
            self._event("answered", where, f"{where}: answered by {s.site} again after "
                                           f"{p.lost_run} lost", t)
        else:
            lost = f" after {p.lost_run} lost" if p.last_answer is None else ""
            self._event("moved", where, f"{where}: {p.last_site} -> {s.site}{lost}", t)
        if s.site is not None:
            p.last_site, p.lost_run = s.site, 0
        p.last_answer = s.site

    def client_rows(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        rows: dict[str, dict[str, Any]] = {}
        for p in self.probes:
            recent = [site for t, site in p.history if t >= now - 1.0]
            rows.setdefault(p.client, {})[p.family] = {
                "site": p.last_answer if p.last_answer != "?" else None,
                "rtt_ms": p.rtt_ms if p.last_answer not in (None, "?") else None,
                "lost_last_s": sum(1 for site in recent if site is None),
                "history": strip(list(p.history), now, self.symbols),
            }
        return rows

    # --- sites ---------------------------------------------------------------------------

    def _poll_sites(self) -> None:
        failed: str | None = None
        with Birds(self.lab.journal.dir, timeout_s=1.0) as birds:
            while not self._stop.is_set():
                try:
                    self._look_at_sites(birds)
                    failed = None
                except Exception as exc:  # a look that failed is shown (once), tried again
                    text = f"could not read the sites: {exc}"
                    if text != failed:
                        self._event("error", "watch", text)
                    failed = text
                birds.unavailable.clear()
                self._stop.wait(SITES_EVERY_S)

    def _look_at_sites(self, birds: Birds) -> None:
        lab, topo, plan = self.lab, self.topo, self.plan
        lab_dir = lab.journal.dir
        sess = sessions(plan, lab_dir, birds)
        held = held_from_sites(plan, anycast_routes(plan, lab_dir, birds))
        families = announced_families(topo)
        faults = active_faults(lab)
        now = time.time()
        rows = {}
        for name, site in topo.sites.items():
            session = next((s for s in sess if s.peer == name), None)
            health, facts = health_and_facts(lab, name, now)
            by_family = {f: bool(held[name].get(f)) for f in families}
            site_faults = [f for f in faults.values() if f.get("site") == name]
            reason = reasons.site_reason(reasons.SiteFacts(
                name=name, router=site.router, mode=health_mode(lab),
                session=session.state if session else "down",
                session_info=session.info if session else "no such BGP session",
                held=by_family, now=now, watchdog_ms=topo.health.watchdog_ms,
                faults=site_faults, **facts))
            rows[name] = {"health": health.get("health"), "drained": health.get("drained"),
                          "announced": all(by_family.values()), "reason": reason,
                          "faults": [f.get("fault") for f in site_faults]}
        self._site_changes(rows, faults)
        with self._lock:
            self.site_rows = rows
        self._health_log_events()

    def _site_changes(self, rows: dict[str, dict[str, Any]], faults: dict[str, Any]) -> None:
        before = self.site_rows
        for name, row in rows.items():
            old = before.get(name)
            if old is None:
                continue
            if row["announced"] != old["announced"]:
                self._event("route", name, f"{name}: "
                            + ("announced" if row["announced"] else "withdrawn")
                            + f" ({row['reason']})")
        if self._faults is not None:
            for key, f in faults.items():
                if key not in self._faults:
                    self._event("fault", str(f.get("site")),
                                f"{f.get('site')}: fault {f.get('fault')} injected")
            for key, f in self._faults.items():
                if key not in faults:
                    self._event("healed", str(f.get("site")),
                                f"{f.get('site')}: fault {f.get('fault')} healed")
        self._faults = faults

    def _health_log_events(self) -> None:
        for site in self.sites:
            path = node_dir(self.lab.journal.dir, site) / "health-events.jsonl"
            offset = self._log_offsets.get(site, 0)
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read(1 << 20)
            except OSError:
                continue
            complete = data[:data.rfind(b"\n") + 1]
            self._log_offsets[site] = offset + len(complete)
            for line in complete.decode(errors="replace").splitlines():
                text = health_line(site, line)
                if text is not None:
                    try:
                        t = float(json.loads(line).get("ts"))
                    except (ValueError, TypeError, json.JSONDecodeError):
                        t = None
                    self._event("healthd", site, text, t)

    # --- a frame -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        self.refresh_clients()
        with self._lock:
            sites = dict(self.site_rows)
        return {"time": reasons.iso(time.time()), "lab": self.lab.name,
                "clients": self.client_rows(), "sites": sites}


def health_line(site: str, line: str) -> str | None:
    """A health daemon event as one line of the view (None: not one to show)."""
    try:
        e = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(e, dict):
        return None
    if e.get("event") == "check":
        return f"{site}: {e.get('check')} check {e.get('old')} -> {e.get('new')}"
    if e.get("event") == "site":
        return f"{site}: health {e.get('old')} -> {e.get('new')} ({e.get('reason')})"
    if e.get("event") == "action":
        return f"{site}: healthd sent {e.get('action')}" + (
            "" if e.get("ok", True) else " (failed)")
    return None
