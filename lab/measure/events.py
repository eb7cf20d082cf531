"""What happened in the lab during a failover trial, on the trial's clock (time.monotonic):
the failed site's health transitions and the routes it sent (from its health daemon's
event log), and every change of the clients' routers' best paths to the anycast prefixes
(polled from BIRD while the trial runs).

Event kinds, as the timeline draws them:
- `health-down` / `health-up`: the site's health daemon saw a required check go down / the
  site become healthy again;
- `withdraw` / `announce`: the health daemon told the speaker to withdraw / re-announce
  (a drain's re-announcement with GRACEFUL_SHUTDOWN counts as neither);
- `route-change`: a router's best path to a prefix changed (`where`: the router,
  `family`, `detail`: the BIRD protocol and AS path it now has, or "none"); `t` is the
  answer that showed it, `since` the look before that did not: the change happened in
  between (a loaded machine stretches that window).
A fault that bypasses the health daemon (a speaker killed, a link cut) has no health
events: its route changes are what shows."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lab.host.birdctl import Birds
from lab.model.names import node_dir
from lab.observe.routing import best_route

POLL_S = 0.02  # how often the route watcher asks each router


@dataclass(frozen=True)
class Event:
    t: float  # time.monotonic(), the trial's clock
    kind: str
    where: str  # a site or a router
    family: str = ""
    detail: str = ""
    since: float | None = None  # route-change: the look before, when it was not yet seen

    def to_json(self, t_fault: float) -> dict[str, Any]:
        out = asdict(self)
        out["t_ms"] = round((out.pop("t") - t_fault) * 1000, 1)
        since = out.pop("since")
        if since is not None:
            out["since_ms"] = round((since - t_fault) * 1000, 1)
        return out


HEALTH_KINDS = {("site", "down"): "health-down", ("site", "up"): "health-up",
                ("action", "withdraw"): "withdraw", ("action", "announce"): "announce"}


def health_events(lab_dir: Path, site: str, since_wall: float, until_wall: float,
                  wall_minus_mono: float) -> list[Event]:
    """The site's health transitions and route actions between two wall-clock instants,
    moved onto the monotonic clock (`wall_minus_mono`: time.time() - time.monotonic())."""
    path = node_dir(lab_dir, site) / "health-events.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return parse_health_events(lines, site, since_wall, until_wall, wall_minus_mono)


def parse_health_events(lines: list[str], site: str, since_wall: float, until_wall: float,
                        wall_minus_mono: float) -> list[Event]:
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        ts = entry.get("ts")
        if not isinstance(ts, int | float) or not since_wall <= ts <= until_wall:
            continue
        what = entry.get("new") if entry.get("event") == "site" else entry.get("action")
        kind = HEALTH_KINDS.get((entry.get("event"), what))
        if kind is not None and entry.get("ok", True):
            out.append(Event(ts - wall_minus_mono, kind, site, "",
                             str(entry.get("reason") or "")))
    return out


class RouteWatcher:
    """A thread asking each of `routers` for its best path to each prefix every POLL_S,
    keeping the changes (the first answer is the baseline, not a change)."""

    def __init__(self, lab_dir: Path, routers: list[str], prefixes: dict[str, str]) -> None:
        self.lab_dir, self.routers, self.prefixes = lab_dir, routers, prefixes
        self.events: list[Event] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="route-watcher", daemon=True)

    def start(self) -> RouteWatcher:
        self._thread.start()
        return self

    def stop(self) -> list[Event]:
        self._stop.set()
        self._thread.join(timeout=5)
        return list(self.events)

    def _run(self) -> None:
        last: dict[tuple[str, str], tuple[str, float]] = {}
        with Birds(self.lab_dir, timeout_s=1.0) as birds:
            while not self._stop.is_set():
                for router in self.routers:
                    for family, prefix in self.prefixes.items():
                        asked = time.monotonic()
                        route = best_route(birds, router, prefix)
                        seen = "none" if route is None else " ".join(
                            [route.protocol, *(str(a) for a in route.as_path)])
                        before = last.get((router, family))
                        if before is not None and before[0] != seen:
                            # Changed after the previous look and before this answer.
                            self.events.append(Event(time.monotonic(), "route-change",
                                                     router, family, seen, since=before[1]))
                        last[(router, family)] = (seen, asked)
                self._stop.wait(POLL_S)
