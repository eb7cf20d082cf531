"""One abusive client against the default lab: rounds of idle TLS connections to the anycast
address from c-eu (probes.idle_tls, bounded by itself), each against whichever site c-eu
reaches then. Per round: connections tried, the most the attacker held at once (as it
counts them) and the most one client has held at that site (as the service counts them,
since its start), refusals,
which sites withdrew (from their health daemons' event logs), and the time from the end of
the attack until the attacked site is healthy, announced and answering c-eu again.

Then floods: every client at once against c-eu's site (c-eu on the anycast address, the
others on the site's own), 300 idle TLS connections each for 10 s, enough to saturate it.
Per flood: how long that site's health checks took meanwhile (from its health daemon's
latency histogram: checks run, over 50 ms, over 100 ms, over their timeout) and whether
the site withdrew; under the default `saturation: absorb` it must not.

    python -m bench.abuse_bench [--rounds 3] [--connections 530] [--duration 12]
                                [--floods 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.common import save, show, unique
from bench.lab_bench import topology
from lab.host import labs
from lab.host.procs import in_netns
from lab.model import names
from lab.observe.connections import connection_metrics
from lab.observe.routing import client_sites, site_route_count
from lab.ops import lifecycle
from lab.render.health import METRICS_PORT
from lab.shared.wait import wait_until
from lab.sites.health.config import DnsCheck, IdentityCheck, IntrospectCheck

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


def _announced(lab: labs.Lab, site: str) -> bool:
    """Healthy, announced, and both its routes held by its router."""
    state = _state(lab, site)
    return (state.get("health") == "up" and state.get("route") == "announced"
            and site_route_count(lab.plan, lab.journal.dir, site) == 2)


def _ready(lab: labs.Lab, site: str) -> bool:
    """Announced and answering c-eu again."""
    return _announced(lab, site) and _site_of(lab) == site


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


FLOOD_CONNECTIONS, FLOOD_S = 300, 10.0
CHECKS = {name: kind.timing.timeout_ms / 1000  # the default lab's checks: their timeouts
          for name, kind in (("dns", DnsCheck), ("introspect", IntrospectCheck),
                             ("identity", IdentityCheck))}


def _check_latency(lab: labs.Lab, site: str) -> dict[str, dict[float, float]]:
    """{check: {bucket upper bound: checks at or under it}} from the health daemon."""
    node = lab.plan.nodes[site]
    url = f"http://{node.interfaces[0].v4.ip}:{METRICS_PORT}/metrics"
    text = subprocess.run(in_netns(node.netns, ["curl", "-sf", "--max-time", "2", url]),
                          capture_output=True, text=True, timeout=10, check=True).stdout
    out: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "anycast_health_check_latency_seconds_bucket":
                out.setdefault(sample.labels["check"], {})[
                    float(sample.labels["le"])] = sample.value
    return out


def _over(buckets: dict[float, float], seconds: float) -> int:
    """Checks that took longer than the largest bucket bound at or under `seconds`."""
    bound = max(b for b in buckets if b <= seconds)
    return int(buckets[float("inf")] - buckets[bound])


def one_flood(lab: labs.Lab) -> dict:
    target = _site_of(lab)
    assert target is not None, f"{CLIENT} reaches no site"
    since = time.time()
    unicast = str(lab.plan.nodes[target].interfaces[0].v4.ip)
    before = _check_latency(lab, target)
    floods = [subprocess.Popen(
        in_netns(lab.plan.nodes[c].netns,
                 [sys.executable, "-m", "probes.idle_tls", "--address",
                  ANY4 if c == CLIENT else unicast, "--connections", str(FLOOD_CONNECTIONS),
                  "--duration", str(FLOOD_S)]),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in lab.topology.clients]
    saturated = False
    while any(f.poll() is None for f in floods):
        saturated |= bool(_state(lab, target).get("saturation", {}).get("saturated"))
        time.sleep(0.2)
    tried = 0
    for f in floods:
        out, err = f.communicate(timeout=60)
        if f.returncode != 0:
            raise RuntimeError(f"probes.idle_tls failed: {err.strip()}")
        tried += json.loads(out.splitlines()[-1])["tried"]
    after = _check_latency(lab, target)
    checks = {}
    for name, timeout in CHECKS.items():
        delta = {b: after[name][b] - before.get(name, {}).get(b, 0) for b in after[name]}
        checks[name] = {"runs": int(delta[float("inf")]), "over_50ms": _over(delta, 0.05),
                        "over_100ms": _over(delta, 0.1),
                        "over_timeout": _over(delta, timeout)}
    return {"target": target, "clients": len(floods), "tried": tried,
            "saturated_seen": saturated, "checks": checks,
            "withdrawn": _withdrawals(lab, target, since) > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 6))
    parser.add_argument("--connections", type=int, default=530)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--floods", type=int, default=3, choices=range(0, 6))
    args = parser.parse_args()
    topo = topology("default", unique("ab"))
    lab = lifecycle.up(topo, lambda _m: None)
    try:
        rounds = [one_round(lab, args.connections, args.duration) for _ in range(args.rounds)]
        floods = []
        for _ in range(args.floods):
            wait_until(lambda: all(_announced(lab, s) for s in lab.topology.sites),
                       60, 0.1)
            floods.append(one_flood(lab))
    finally:
        lifecycle.teardown(lab.journal)
    show("one abusive client: idle TLS connections to the anycast address",
         ["round", "site", "tried", "held max", "service peak", "refused", "withdrawn",
          "recovered s"],
         [[i + 1, r["target"], r["tried"], r["held_max"], r["service_client_peak"],
           r["refused"],
           ", ".join(r["withdrawn"]) or "none", r["recovered_s"]]
          for i, r in enumerate(rounds)])
    if floods:
        show(f"every client floods {CLIENT}'s site: {FLOOD_CONNECTIONS} idle TLS connections "
             f"each for {FLOOD_S:.0f} s; that site's health checks meanwhile",
             ["flood", "site", "tried", "saturated", *(f"{n} runs / >50 ms / >100 ms / "
                                                        f">timeout" for n in CHECKS),
              "withdrawn"],
             [[i + 1, f["target"], f["tried"], "yes" if f["saturated_seen"] else "no",
               *(" / ".join(str(f["checks"][n][k]) for k in
                            ("runs", "over_50ms", "over_100ms", "over_timeout"))
                 for n in CHECKS), "yes" if f["withdrawn"] else "no"]
              for i, f in enumerate(floods)])
    save("abuse", {"client": CLIENT, "connections": args.connections,
                   "duration_s": args.duration, "rounds": rounds,
                   "sites_withdrawn": sorted({s for r in rounds for s in r["withdrawn"]}),
                   "floods": {"connections_per_client": FLOOD_CONNECTIONS,
                              "duration_s": FLOOD_S, "runs": floods}})


if __name__ == "__main__":
    main()
