"""One abusive client against the default lab: rounds of idle TLS connections to the anycast
address from c-eu (probes.idle_tls, bounded by itself), each against whichever site c-eu
reaches then. Per round: connections tried, the most the attacker held at once (as it
counts them) and the most one client has held at that site (as the service counts them,
since its start), refusals,
which sites withdrew (from their health daemons' event logs), and the time from the end of
the attack until the attacked site is healthy, announced and answering c-eu again.

    python -m bench.abuse_bench [--rounds 3] [--connections 530] [--duration 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import save, show, unique
from bench.lab_bench import topology
from lab.host import labs
from lab.host.procs import in_netns
from lab.model import names
from lab.observe.connections import connection_metrics
from lab.observe.routing import client_sites, site_route_count
from lab.ops import lifecycle
from lab.shared.wait import wait_until

CLIENT = "c-eu"
ANY4 = "203.0.113.53"
ROOT = Path(__file__).resolve().parents[1]


def _state(lab: labs.Lab, site: str) -> dict:
    try:
        path = names.node_dir(lab.journal.dir, site) / names.HEALTH_STATE
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _withdrawals(lab: labs.Lab, site: str, since: float) -> int:
    path = names.node_dir(lab.journal.dir, site) / names.HEALTH_EVENTS
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sum(1 for e in events if e.get("ts", 0) >= since and e.get("event") == "action"
               and e.get("action") == "withdraw" and e.get("ok"))


def _site_of(lab: labs.Lab) -> str | None:
    return client_sites(lab.plan, timeout=0.3)[CLIENT]["v4"].site


def _ready(lab: labs.Lab, site: str) -> bool:
    state = _state(lab, site)
    return (state.get("health") == "up" and state.get("route") == "announced"
            and site_route_count(lab.plan, lab.journal.dir, site) == 2
            and _site_of(lab) == site)


def one_round(lab: labs.Lab, connections: int, duration_s: float) -> dict:
    target = _site_of(lab)
    since = time.time()
    argv = [sys.executable, "-m", "probes.idle_tls", "--address", ANY4, "--connections",
            str(connections), "--duration", str(duration_s)]
    attack = subprocess.run(in_netns(lab.plan.nodes[CLIENT].netns, argv), cwd=ROOT,
                            capture_output=True, text=True, timeout=duration_s + 60,
                            check=True)
    ended = time.monotonic()
    summary = json.loads(attack.stdout.splitlines()[-1])
    recovered = wait_until(lambda: target is not None and _ready(lab, target), 60, 0.1)
    # Asked only of a site that recovered: one that did not may not answer at all.
    peak = connection_metrics(lab.journal.dir, lab.plan.nodes[target])["client_peak"] \
        if recovered and target is not None else None
    return {"target": target, "tried": summary["tried"], "held_max": summary["held_max"],
            "service_client_peak": peak,
            "refused": summary["refused"],
            "recovered_s": round(time.monotonic() - ended, 2) if recovered else None,
            "withdrawn": sorted(s for s in lab.topology.sites
                                if _withdrawals(lab, s, since))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 6))
    parser.add_argument("--connections", type=int, default=530)
    parser.add_argument("--duration", type=float, default=12.0)
    args = parser.parse_args()
    topo = topology("default", unique("ab"))
    lab = lifecycle.up(topo, lambda _m: None)
    try:
        rounds = [one_round(lab, args.connections, args.duration) for _ in range(args.rounds)]
    finally:
        lifecycle.teardown(lab.journal)
    show("one abusive client: idle TLS connections to the anycast address",
         ["round", "site", "tried", "held max", "service peak", "refused", "withdrawn",
          "recovered s"],
         [[i + 1, r["target"], r["tried"], r["held_max"], r["service_client_peak"],
           r["refused"],
           ", ".join(r["withdrawn"]) or "none", r["recovered_s"]]
          for i, r in enumerate(rounds)])
    save("abuse", {"client": CLIENT, "connections": args.connections,
                   "duration_s": args.duration, "rounds": rounds,
                   "sites_withdrawn": sorted({s for r in rounds for s in r["withdrawn"]})})


if __name__ == "__main__":
    main()
