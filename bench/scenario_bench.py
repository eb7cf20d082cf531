"""Scenarios: the time of each shipped scenario and of `reset` after each fault kind
(median of N runs), and what one idle lab costs (memory and CPU), for the trainer's
guide.

    python -m bench.scenario_bench [--runs N] [--only NAME...]

Builds one default lab and one ECMP ring lab under unique names and tears them down.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench.common import save, show, stats, unique
from lab.host import labs, procs
from lab.host.journal import Journal
from lab.host.lock import locked
from lab.ops import faults, lifecycle, reset
from lab.scenario import catalog, runner
from lab.scenario.load import load_file

CLK_TCK = os.sysconf("SC_CLK_TCK")
IDLE_S = 10.0


def _processes(lab: labs.Lab) -> list[int]:
    return [r.pid for r in lab.journal.owned().processes if procs.is_running(r)]


def _memory_kib(pid: int, field: str) -> int:
    """A process's resident memory: 'Rss' (shared pages counted in full) or 'Pss' (shared
    pages split between the processes sharing them: what adding a lab costs)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    line = next((ln for ln in text.splitlines() if ln.startswith(f"{field}:")), None)
    return int(line.split()[1]) if line else 0


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def lab_cost(lab: labs.Lab) -> dict[str, Any]:
    """Resident memory of the lab's daemons, and their CPU share while idle."""
    pids = _processes(lab)
    before = {p: _cpu_ticks(p) for p in pids}
    time.sleep(IDLE_S)  # measuring idle CPU: nothing to wait for
    used = sum(_cpu_ticks(p) - t for p, t in before.items()) / CLK_TCK
    return {"processes": len(pids),
            "rss_mib": round(sum(_memory_kib(p, "Rss") for p in pids) / 1024, 1),
            "pss_mib": round(sum(_memory_kib(p, "Pss") for p in pids) / 1024, 1),
            "idle_cpu_percent_of_a_core": round(100 * used / IDLE_S, 1)}


def _up(path: str) -> labs.Lab:
    topo = lifecycle.validated(path, unique("bs"))
    return lifecycle.up(topo, lambda _m: None, source=path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    scenarios = [load_file(p) for p in catalog.shipped()
                 if args.only is None or p.stem in args.only]
    built: dict[str, labs.Lab] = {}
    timings: dict[str, dict[str, Any]] = {}
    resets: dict[str, dict[str, Any]] = {}
    cost: dict[str, Any] = {}
    try:
        for report in scenarios:
            assert report.scenario is not None and report.topology_path is not None
            key = str(report.topology_path)
            if key not in built:
                built[key] = _up(key)
                cost.setdefault(report.topology_path.stem, lab_cost(built[key]))
            lab = built[key]
            runs, passed = [], 0
            for _ in range(args.runs):
                with locked(lab.name, "scenario"):
                    result = runner.run(lab, report.scenario)
                runs.append(result["elapsed_s"])
                passed += bool(result["ok"])
            timings[report.scenario.name] = {"seconds": stats(runs), "passed": passed,
                                             "runs": args.runs}
        path = str(catalog.SCENARIOS.parent / "topologies" / "default.yaml")
        if path not in built:
            built[path] = _up(path)
        default = built[path]
        issuer = default.plan.issuer
        # The default lab runs no BFD responder; faults made at the issuer node are made
        # there.
        for fault in [f for f in faults.fault_names() if f != "bfd"]:
            at = issuer.name if faults.lookup(fault).at_issuer and issuer else "nyc"
            seconds, failed = [], []
            for _ in range(args.runs):
                with locked(default.name, "bench"):
                    faults.inject(default, at, fault)
                    result = reset.reset(default)
                seconds.append(result["elapsed_s"])
                if not result["ok"]:  # kept: a reset that did not end normal is a finding
                    failed.append(result.get("problems", []))
            resets[fault] = {**stats(seconds), "not_normal": failed}
    finally:
        for lab in built.values():
            if Journal(lab.name).exists():
                lifecycle.down(lab.name)
    show("scenarios (seconds per run)", ["scenario", "median", "max", "passed"],
         [[n, t["seconds"]["median"], t["seconds"]["max"], f"{t['passed']}/{t['runs']}"]
          for n, t in timings.items()])
    show("reset after a fault at nyc (the issuer's at the issuer) (seconds)",
         ["fault", "median", "max"],
         [[f, s["median"], s["max"]] for f, s in resets.items()])
    show("one idle lab", ["topology", "processes", "RSS MiB", "PSS MiB",
                          "idle CPU % of a core"],
         [[t, c["processes"], c["rss_mib"], c["pss_mib"], c["idle_cpu_percent_of_a_core"]]
          for t, c in cost.items()])
    save("scenarios", {"runs": args.runs, "scenarios": timings, "reset_after_fault": resets,
                       "lab_cost": cost})


if __name__ == "__main__":
    main()
