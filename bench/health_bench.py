"""Client-observed outage after a DNS failure at a site, with our health daemon's
default profile and, in the same run, ExaBGP's bundled healthcheck (the anchor) driving
the same lab at its defaults and tuned to our DNS check's interval, rise and fall; idle
CPU per site of each checker; withdrawal time after our health daemon dies or freezes.

    python -m bench.health_bench [--trials N] [--only ours,anchor-defaults,anchor-tuned]

Each setup gets its own default-topology lab (unique name), torn down in a `finally`.
In anchor mode only the IPv4 anycast prefix is announced (the bundled checker has one
next hop), so `up` waits for IPv4 only in that mode; everything measured here is IPv4.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from bench import common
from bench.common import save, show, stats, unique
from lab.host import labs, procs
from lab.host.birdctl import BirdClient, parse_route_count, route_count_command
from lab.measure.trials import run_trial, summarise, trial_json
from lab.model import load_text, names
from lab.model.errors import NotAsExpected
from lab.observe.routing import client_sites
from lab.ops import faults, lifecycle
from lab.shared.wait import wait_until
from lab.sites.health.config import DnsCheck

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "topologies" / "default.yaml"
SITE = "ams"            # the site we break; c-eu is its client (failover nyc)
RATE_HZ = 200.0         # queries/s per client
CPU_WINDOW_S = 20.0
POLL_S = 0.005          # BIRD route-count poll for the healthd kill/freeze withdrawal


# Our DNS check's default profile (lab/sites/health/config.py), and the anchor tuned to it: same
# interval, fast interval, rise and fall; its --timeout takes whole seconds, so the
# sub-second limit is `timeout 0.1 dig ...` (its own --timeout 1 stays as a backstop).
OURS_DNS = asdict(DnsCheck.timing)
TUNED = {"interval_s": OURS_DNS["interval_ms"] / 1000,
         "fast_interval_s": OURS_DNS["fast_interval_ms"] / 1000,
         "timeout_s": 1, "rise": OURS_DNS["rise"], "fall": OURS_DNS["fall"],
         "command_timeout_s": OURS_DNS["timeout_ms"] / 1000, "withdraw_on_down": True}

# setup -> (health block, max_wait_s per run_trial phase)
SETUPS: dict[str, tuple[dict[str, Any], float]] = {
    "ours": ({"checker": "healthd"}, 10.0),
    # Defaults (interval 5, fast 1, rise 3, fall 3, timeout 5) plus --withdraw-on-down:
    # without it the checker re-announces with MED 1000 and clients never move.
    "anchor-defaults": ({"checker": "exabgp-healthcheck",
                         "exabgp_healthcheck": {"withdraw_on_down": True}}, 16.0),
    "anchor-tuned": ({"checker": "exabgp-healthcheck", "exabgp_healthcheck": TUNED}, 10.0),
}
FAULTS = ("dns-hang", "dns")


def topology(name: str, health: dict[str, Any]):
    data = yaml.safe_load(DEFAULT.read_text())
    data["name"] = name
    data["health"] = health
    report = load_text(yaml.safe_dump(data), f"health-bench:{name}")
    assert report.ok and report.topology is not None, report.problems
    return report.topology


@contextmanager
def lab_up(setup: str) -> Iterator[labs.Lab]:
    health, _ = SETUPS[setup]
    topo = topology(unique("hb"), health)
    lab = lifecycle.up(topo, lambda _m: None, converge_deadline_s=60)
    try:
        yield lab
    finally:
        lifecycle.teardown(lab.journal)


def route_count(bird: BirdClient, protocol: str) -> int:
    """The routes a protocol brought in (`show route protocol P count`), over the one kept
    connection to BIRD's control socket: a few hundred microseconds per poll."""
    count = parse_route_count(bird.ask(route_count_command(protocol)).text)
    if count is None:
        raise ValueError(f"no route count in BIRD's answer for {protocol}")
    return count


def _site_bird(lab: labs.Lab, site: str) -> tuple[BirdClient, str]:
    assert lab.plan is not None
    router = lab.plan.nodes[site].interfaces[0].peer
    return BirdClient(names.bird_socket(lab.journal.dir, router)), names.site_protocol(site)


def _all_home(lab: labs.Lab) -> bool:
    assert lab.plan is not None and lab.topology is not None
    answers = client_sites(lab.plan, timeout=0.3)
    return all(answers[n]["v4"].site == c.expect for n, c in lab.topology.clients.items())


def wait_healthy(lab: labs.Lab, bird: BirdClient, proto: str, timeout_s: float) -> bool:
    """The site's routes are back at its router and every client reaches its own site."""
    return wait_until(lambda: route_count(bird, proto) > 0 and _all_home(lab), timeout_s, 0.05)


# --- outage trials -----------------------------------------------------------------

def check_interval_s(lab: labs.Lab) -> float:
    """The checker's DNS check interval (the period faults are spread over)."""
    assert lab.topology is not None
    health = lab.topology.health
    if health.checker == "exabgp-healthcheck":
        return health.exabgp_healthcheck.interval_s
    return OURS_DNS["interval_ms"] / 1000


def outage_trials(lab: labs.Lab, fault: str, trials: int, max_wait_s: float,
                  progress: Callable[[str], None]) -> dict[str, Any]:
    """`trials` runs of lab.measure.trials.run_trial. Each waits until the site is back and a
    random part of one check interval: recovery is seen right after a check, so without
    it every fault would land at the same point of the checker's cycle (at the anchor's
    5 s interval that pins the outage to one value)."""
    assert lab.plan is not None
    clients = {c.name: c.netns for c in lab.plan.by_role("client")}
    server = str(lab.plan.anycast4.network_address)
    bird, proto = _site_bird(lab, SITE)
    interval = check_interval_s(lab)
    records, delays = [], []
    try:
        for n in range(trials):
            if not wait_healthy(lab, bird, proto, 3 * max_wait_s):
                raise NotAsExpected(f"{lab.name}: {SITE} did not come back before trial {n + 1}")
            delays.append(round(random.uniform(0, interval), 3))
            time.sleep(delays[-1])
            try:
                records.append(run_trial(clients, server, RATE_HZ,
                                         lambda: faults.inject(lab, SITE, fault),
                                         lambda: faults.heal(lab, SITE, fault),
                                         max_wait_s=max_wait_s))
            finally:
                if any(f["site"] == SITE for f in faults.active(lab).values()):
                    faults.heal(lab, SITE)
            moved = [c for c in records[-1].clients if c.site_after != c.site_before]
            progress(f"  {fault} {n + 1}/{trials}: " + (", ".join(
                f"{c.client} {c.site_before}->{c.site_after} "
                f"{'never' if c.outage_ms is None else f'{c.outage_ms:.0f} ms'}, {c.lost} lost"
                for c in moved) or "no client moved"))
        wait_healthy(lab, bird, proto, 3 * max_wait_s)
    finally:
        bird.close()
    return {"site": SITE, "fault": fault, "rate_hz": RATE_HZ, "max_wait_s": max_wait_s,
            "random_delay_before_fault_s": delays,
            "summary": summarise([r.clients for r in records]),
            "trials": [trial_json(r) for r in records]}


# --- idle CPU ----------------------------------------------------------------------

def _cpu_ticks(pid: int, children: bool) -> int:
    """utime + stime (+ cutime + cstime: the reaped children, i.e. every check it forked)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = int(fields[11]) + int(fields[12])
    return own + (int(fields[13]) + int(fields[14]) if children else 0)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(k) for k in (task / "children").read_text().split()]
    return out


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def checker_pids(lab: labs.Lab, anchor: bool) -> dict[str, int]:
    """Per site: the checker process (healthd, or the healthcheck ExaBGP runs)."""
    assert lab.plan is not None
    out = {}
    for site in lab.plan.by_role("site"):
        if anchor:
            exabgp = procs.running(lab.journal, f"exabgp@{site.name}")
            assert exabgp is not None
            out[site.name] = next(p for p in _children(exabgp.pid)
                                  if "exabgp healthcheck" in _cmdline(p))
        else:
            record = procs.running(lab.journal, f"healthd@{site.name}")
            assert record is not None
            out[site.name] = record.pid
    return out


def idle_cpu(lab: labs.Lab, anchor: bool, seconds: float) -> dict[str, Any]:
    """CPU % of one core per site over an idle window: the checker with its reaped
    children; ExaBGP's own process (without children) for context."""
    assert lab.plan is not None
    hz = os.sysconf("SC_CLK_TCK")
    checkers = checker_pids(lab, anchor)
    speakers = {s: procs.running(lab.journal, f"exabgp@{s}").pid for s in checkers}
    before = {s: (_cpu_ticks(p, True), _cpu_ticks(speakers[s], False))
              for s, p in checkers.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    after = {s: (_cpu_ticks(p, True), _cpu_ticks(speakers[s], False))
             for s, p in checkers.items()}
    elapsed = time.monotonic() - t0
    per_site = {s: {"checker_cpu_pct": round((after[s][0] - before[s][0]) / hz / elapsed * 100,
                                             3),
                    "exabgp_cpu_pct": round((after[s][1] - before[s][1]) / hz / elapsed * 100,
                                            3),
                    "checker_pid": checkers[s]} for s in checkers}
    mean = round(sum(v["checker_cpu_pct"] for v in per_site.values()) / len(per_site), 3)
    mean_x = round(sum(v["exabgp_cpu_pct"] for v in per_site.values()) / len(per_site), 3)
    return {"window_s": round(elapsed, 2), "per_site": per_site,
            "checker_cpu_pct_mean": mean, "exabgp_cpu_pct_mean": mean_x,
            "measured": "healthd alone" if not anchor else
            "healthcheck + its forks"}


# --- healthd kill/freeze -> routes gone at the router --------------------------------

def healthd_withdrawal(lab: labs.Lab, fault: str, trials: int,
                       progress: Callable[[str], None]) -> dict[str, Any]:
    bird, proto = _site_bird(lab, SITE)
    times, back = [], []
    try:
        for n in range(trials):
            if not wait_healthy(lab, bird, proto, 15):
                raise NotAsExpected(f"{lab.name}: {SITE} not announced before trial {n + 1}")
            time.sleep(0.5 + random.uniform(0, 0.1))  # random phase vs its keepalives
            routes = route_count(bird, proto)
            try:
                entry = faults.inject(lab, SITE, fault)
                t_fault = entry["t_mono"]
                gone = wait_until(lambda: time.monotonic() if route_count(bird, proto) == 0
                                  else None, t_fault + 10 - time.monotonic(), POLL_S)
                times.append(None if gone is None else round((gone - t_fault) * 1000, 2))
            finally:
                t_heal = time.monotonic()
                faults.heal(lab, SITE, fault)
            announced = wait_until(lambda want=routes: route_count(bird, proto) >= want, 15,
                                   POLL_S)
            back.append(round((time.monotonic() - t_heal) * 1000, 1) if announced else None)
            progress(f"  {fault} {n + 1}/{trials}: {routes} routes gone after "
                     f"{times[-1]} ms; re-announced {back[-1]} ms after heal")
    finally:
        bird.close()
    done = [t for t in times if t is not None]
    return {"site": SITE, "fault": fault, "poll_ms": POLL_S * 1000,
            "withdrawn_ms": stats(done) if done else None,
            "never_withdrawn": len(times) - len(done), "times_ms": times,
            "reannounced_after_heal_ms": back}


def dns_only_healthd_cpu(lab: labs.Lab, seconds: float) -> dict[str, Any]:
    """Supplement: healthd's default config runs the introspection check (HTTPS, every
    500 ms) besides the DNS check; the anchor checks DNS only. Rewrite each site's
    healthd.json without the introspection check, restart healthd, measure the idle
    window again. Done last: it leaves the lab's checkers changed."""
    assert lab.plan is not None
    sites = [s.name for s in lab.plan.by_role("site")]
    bird, proto = _site_bird(lab, SITE)
    try:
        for site in sites:
            conf = names.node_dir(lab.journal.dir, site) / names.HEALTHD_CONF
            data = json.loads(conf.read_text())
            data["checks"] = [c for c in data["checks"] if c["type"] == "dns"]
            conf.write_text(json.dumps(data, indent=2))
            record = procs.running(lab.journal, f"healthd@{site}")
            assert record is not None
            procs.stop(record)
            procs.restart(lab.journal, f"healthd@{site}")
        if not wait_healthy(lab, bird, proto, 15):
            raise NotAsExpected(f"{lab.name}: {SITE} not announced with DNS-only healthd")
    finally:
        bird.close()
    time.sleep(3)
    out = idle_cpu(lab, False, seconds)
    out["measured"] = "healthd alone, DNS check only"
    return out


# --- driver --------------------------------------------------------------------------

def run_setup(setup: str, trials: int, progress: Callable[[str], None]) -> dict[str, Any]:
    health, max_wait_s = SETUPS[setup]
    anchor = health["checker"] == "exabgp-healthcheck"
    t0 = time.monotonic()
    with lab_up(setup) as lab:
        assert lab.topology is not None
        progress(f"{setup}: lab {lab.name} up in {time.monotonic() - t0:.1f} s")
        out: dict[str, Any] = {"lab": lab.name,
                               "health": lab.topology.health.model_dump(mode="json")}
        time.sleep(3)  # let start-up work settle before the idle window
        out["idle_cpu"] = idle_cpu(lab, anchor, CPU_WINDOW_S)
        progress(f"{setup}: idle CPU per site {out['idle_cpu']['checker_cpu_pct_mean']} %")
        out["faults"] = {f: outage_trials(lab, f, trials, max_wait_s, progress)
                         for f in FAULTS}
        if not anchor:
            out["healthd_faults"] = {f: healthd_withdrawal(lab, f, trials, progress)
                                     for f in ("healthd", "healthd-hang")}
            out["idle_cpu_dns_only"] = dns_only_healthd_cpu(lab, CPU_WINDOW_S)
            progress(f"{setup}: idle CPU per site, healthd with its DNS check only "
                     f"{out['idle_cpu_dns_only']['checker_cpu_pct_mean']} %")
    out["elapsed_s"] = round(time.monotonic() - t0, 1)
    return out


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def report(results: dict[str, Any]) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    rows = []
    for setup, r in results.items():
        for fault, f in r["faults"].items():
            s = f["summary"]
            rows.append([setup, fault, s["affected_client_trials"], s["never_recovered"],
                         _fmt(s["outage_ms"]["median"]), _fmt(s["outage_ms"]["p95"]),
                         _fmt(s["outage_ms"]["max"]), _fmt(s["lost"]["median"]),
                         _fmt(s["lost"]["p95"]), _fmt(s["lost"]["max"]),
                         _fmt(r["idle_cpu"]["checker_cpu_pct_mean"])])
    show(f"DNS failure at {SITE}: client outage (fault -> answered by another site), "
         f"{RATE_HZ:.0f} queries/s per client, 100 ms query timeout",
         ["checker", "fault", "client-trials", "never", "outage median ms", "p95 ms",
          "max ms", "lost median", "lost p95", "lost max", "idle CPU %/site"], rows)
    show(f"idle CPU per site over ~{CPU_WINDOW_S:.0f} s (% of one core)",
         ["checker", "what", *[s for s in next(iter(results.values()))["idle_cpu"]["per_site"]],
          "mean", "ExaBGP itself, mean"],
         [[setup, cpu["measured"],
           *[_fmt(v["checker_cpu_pct"]) for v in cpu["per_site"].values()],
           _fmt(cpu["checker_cpu_pct_mean"]), _fmt(cpu["exabgp_cpu_pct_mean"])]
          for setup, r in results.items()
          for cpu in (r["idle_cpu"], r.get("idle_cpu_dns_only")) if cpu])
    ours = results.get("ours")
    if ours and "healthd_faults" in ours:
        show("health daemon killed / frozen: fault -> the site's routes gone from its router's "
             "BIRD (polled every 5 ms), watchdog 300 ms",
             ["fault", "n", "median ms", "p95 ms", "min ms", "max ms", "never",
              "re-announced after heal, median ms"],
             [[f, (w["withdrawn_ms"] or {}).get("n", 0),
               *[_fmt((w["withdrawn_ms"] or {}).get(k)) for k in ("median", "p95", "min",
                                                                  "max")],
               w["never_withdrawn"],
               _fmt(stats([b for b in w["reannounced_after_heal_ms"] if b is not None])
                    ["median"] if any(b is not None for b in w["reannounced_after_heal_ms"])
                    else None)]
              for f, w in ours["healthd_faults"].items()])
    if ours:
        p95 = {f: ours["faults"][f]["summary"]["outage_ms"]["p95"] for f in FAULTS}
        goals["ours_hung_p95_le_400ms"] = p95["dns-hang"] is not None and p95["dns-hang"] <= 400
        goals["ours_killed_p95_le_150ms"] = p95["dns"] is not None and p95["dns"] <= 150
        tuned = results.get("anchor-tuned")
        if tuned:
            for f in FAULTS:
                theirs = tuned["faults"][f]["summary"]["outage_ms"]["p95"]
                goals[f"ours_p95_no_worse_than_tuned_{f}"] = (
                    p95[f] is not None and theirs is not None and p95[f] <= theirs)
            goals["ours_cpu_le_tenth_of_tuned"] = (
                ours["idle_cpu"]["checker_cpu_pct_mean"]
                <= tuned["idle_cpu"]["checker_cpu_pct_mean"] / 10)
            goals["ours_cpu_ratio_to_tuned"] = round(
                ours["idle_cpu"]["checker_cpu_pct_mean"]
                / tuned["idle_cpu"]["checker_cpu_pct_mean"], 3)
            if "idle_cpu_dns_only" in ours:
                goals["supplement_dns_only_cpu_ratio_to_tuned"] = round(
                    ours["idle_cpu_dns_only"]["checker_cpu_pct_mean"]
                    / tuned["idle_cpu"]["checker_cpu_pct_mean"], 3)
        show("goals", ["goal", "met"],
             [[k, v if not isinstance(v, bool) else "yes" if v else "NO"]
              for k, v in goals.items()])
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--only", default=",".join(SETUPS),
                        help=f"comma-separated setups (default: all of {', '.join(SETUPS)})")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SETUPS))
    if unknown:
        parser.error(f"unknown setup(s): {', '.join(unknown)}")

    def progress(message: str) -> None:
        print(message, flush=True)

    common.console.width = max(common.console.width, 150)  # tables, also when piped

    started = time.monotonic()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results = {s: {**run_setup(s, args.trials, progress), "measured_at": stamp,
                   "trials": args.trials} for s in chosen}
    goals = report(results)
    # A run of some setups (--only) keeps the others' earlier figures, each with its date.
    setups = {**common.saved("health").get("setups", {}), **results}
    save("health", {"trials": args.trials, "site": SITE, "rate_hz": RATE_HZ,
                    "ours_dns_check": OURS_DNS, "anchor_tuned": TUNED,
                    "goals": goals, "setups": setups,
                    "elapsed_s": round(time.monotonic() - started, 1)})


if __name__ == "__main__":
    main()
