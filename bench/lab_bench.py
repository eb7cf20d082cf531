"""Benchmarks of the lab itself: fabric up/down, up-to-converged, idle cost per daemon,
and withdraw-to-client-moved time measured with a 1000 Hz DNS prober.

    python -m bench.lab_bench [fabric|converge|idle|withdraw|all] [--trials N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from bench.common import save, show, stats, unique
from lab.host.fabric import Fabric
from lab.host.journal import Journal
from lab.model import load_text, names
from lab.model.generate import generate_topology
from lab.model.plan import build_plan
from lab.ops import lifecycle
from lab.shared.speaker_client import command as speaker
from probes.dns import BackgroundProbe

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "topologies" / "default.yaml"


def topology(kind: str, name: str, static: bool = False):
    """The default or a generated 50-site topology; `static`: no health daemons (sites
    announce at start and the benchmark drives the speaker's API itself)."""
    if kind == "default":
        data = yaml.safe_load(DEFAULT.read_text())
    else:
        data = generate_topology(name, 50, 5)
    data["name"] = name
    if static:
        data["health"] = {"enabled": False}
    report = load_text(yaml.safe_dump(data), kind)
    assert report.ok and report.topology is not None, report.problems
    return report.topology


def bench_fabric(trials: int) -> dict:
    out = {}
    for kind in ("default", "gen50"):
        ups, downs = [], []
        for _ in range(trials):
            topo = topology(kind, unique("bf"))
            plan = build_plan(topo)
            journal = Journal(topo.name)
            journal.open()
            t0 = time.monotonic()
            Fabric(plan, journal).build()
            t1 = time.monotonic()
            lifecycle.teardown(journal)
            ups.append(t1 - t0)
            downs.append(time.monotonic() - t1)
        out[kind] = {"nodes": len(plan.nodes), "links": len(plan.links),
                     "up_s": stats(ups), "down_s": stats(downs)}
    show("fabric only (namespaces, links, addresses, routes, sysctls)",
         ["topology", "nodes", "links", "up median s", "down median s"],
         [[k, v["nodes"], v["links"], v["up_s"]["median"], v["down_s"]["median"]]
          for k, v in out.items()])
    return out


def bench_converge(trials: int) -> dict:
    out = {}
    for kind in ("default", "gen50"):
        totals, converge = [], []
        for _ in range(trials):
            topo = topology(kind, unique("bc"))
            t0 = time.monotonic()
            lab = lifecycle.up(topo, lambda _m: None, converge_deadline_s=120)
            totals.append(time.monotonic() - t0)
            converge.append(lab.state.get("converge_s", 0.0))
            lifecycle.teardown(lab.journal)
        out[kind] = {"up_total_s": stats(totals), "converge_after_start_s": stats(converge)}
    show("`up` until every client reaches its expected site",
         ["topology", "up total median s", "max s", "of which converging, median s"],
         [[k, v["up_total_s"]["median"], v["up_total_s"]["max"],
           v["converge_after_start_s"]["median"]] for k, v in out.items()])
    return out


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out


def bench_idle(seconds: float = 20.0) -> dict:
    import os

    topo = topology("default", unique("bi"))
    lab = lifecycle.up(topo, lambda _m: None)
    try:
        time.sleep(3)  # let start-up work settle before measuring idle cost
        procs = {r.name: [r.pid, *_children(r.pid)] for r in lab.journal.owned().processes}
        hz = os.sysconf("SC_CLK_TCK")
        before = {n: sum(_cpu_ticks(p) for p in pids) for n, pids in procs.items()}
        time.sleep(seconds)
        after = {n: sum(_cpu_ticks(p) for p in pids) for n, pids in procs.items()}
        per = {}
        for name, pids in procs.items():
            kind = name.split("@")[0]
            cpu = (after[name] - before[name]) / hz / seconds * 100
            pss = sum(_pss_kib(p) for p in pids) / 1024
            per.setdefault(kind, {"cpu_pct": [], "pss_mib": [], "processes": len(pids)})
            per[kind]["cpu_pct"].append(cpu)
            per[kind]["pss_mib"].append(pss)
    finally:
        lifecycle.teardown(lab.journal)
    out = {kind: {"cpu_pct_mean": round(sum(v["cpu_pct"]) / len(v["cpu_pct"]), 3),
                  "pss_mib_mean": round(sum(v["pss_mib"]) / len(v["pss_mib"]), 1),
                  "processes_each": v["processes"], "instances": len(v["cpu_pct"])}
           for kind, v in per.items()}
    show(f"idle cost per instance over {seconds:.0f} s (process + its children)",
         ["daemon", "instances", "CPU % of a core", "PSS MiB"],
         [[k, v["instances"], v["cpu_pct_mean"], v["pss_mib_mean"]] for k, v in out.items()])
    return {"seconds": seconds, "per_daemon": out}


def bench_withdraw(trials: int) -> dict:
    """Withdraw ams through ExaBGP's API; time until c-eu is answered by its failover."""
    topo = topology("default", unique("bw"), static=True)
    lab = lifecycle.up(topo, lambda _m: None)
    client = lab.plan.nodes["c-eu"]
    expect, failover = topo.clients["c-eu"].expect, topo.clients["c-eu"].failover
    control = names.speaker_socket(lab.journal.dir, expect)
    moved, back, lost = [], [], []
    try:
        for _ in range(trials):
            for action, target, sink in (("withdraw", failover, moved),
                                         ("announce", expect, back)):
                prober = BackgroundProbe("203.0.113.53", 1000, 5.0, netns=client.netns).start()
                time.sleep(0.2)
                t_cmd = time.monotonic()
                assert speaker(control, action)["ok"]
                time.sleep(0.3)
                result = prober.stop()
                after = [s for s in result if s.t >= t_cmd]
                first = next(s for s in after if s.site == target)
                sink.append((first.t + first.rtt_ms / 1000 - t_cmd) * 1000)
                lost.append(sum(1 for s in result if s.site is None))
    finally:
        lifecycle.teardown(lab.journal)
    out = {"withdraw_to_moved_ms": stats(moved), "announce_to_back_ms": stats(back),
           "lost_queries_total": sum(lost), "prober_rate_hz": 1000}
    show("withdraw via ExaBGP API -> client answered by the next site (1000 Hz prober)",
         ["event", "median ms", "max ms"],
         [["withdraw -> moved", out["withdraw_to_moved_ms"]["median"],
           out["withdraw_to_moved_ms"]["max"]],
          ["announce -> back", out["announce_to_back_ms"]["median"],
           out["announce_to_back_ms"]["max"]]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all",
                        choices=["fabric", "converge", "idle", "withdraw", "all"])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    if args.what in ("fabric", "all"):
        save("fabric", bench_fabric(args.trials))
    if args.what in ("converge", "all"):
        save("converge", bench_converge(args.trials))
    if args.what in ("idle", "all"):
        save("idle", bench_idle())
    if args.what in ("withdraw", "all"):
        save("withdraw", bench_withdraw(max(10, args.trials)))


if __name__ == "__main__":
    main()
