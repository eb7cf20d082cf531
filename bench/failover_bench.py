"""The failover matrix on the default topology — for each fault at one site,
the outage its clients see (median, p95, max), queries lost and recovery after heal.

    python -m bench.failover_bench [--trials N] [--rate HZ]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import save, show, unique
from bench.lab_bench import topology
from lab.measure.failover import fault_actions, wait_expected
from lab.measure.plot import timeline
from lab.measure.trials import run_trial, summarise, trial_json
from lab.ops import lifecycle

SITE = "ams"
FAULTS = ["dns", "dns-hang", "introspect", "introspect-hang", "speaker", "link", "blackhole",
          "drain"]
PLOT = Path(__file__).resolve().parents[1] / "docs" / "failover-matrix-dns-hang.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    lab = lifecycle.up(topology("default", unique("bf")), lambda _m: None)
    results, rows = {}, []
    try:
        clients = {c.name: c.netns for c in lab.plan.by_role("client")}
        for fault in FAULTS:
            inject, heal = fault_actions(lab, SITE, fault)
            records = []
            for _ in range(args.trials):
                wait_expected(lab)  # every trial starts from the normal state
                records.append(run_trial(clients, "203.0.113.53", args.rate, inject, heal,
                                         max_wait_s=12))
            summary = summarise([r.clients for r in records])
            results[fault] = {"summary": summary, "trials": [trial_json(r) for r in records]}
            if fault == "dns-hang":
                timeline(records[:2], PLOT, f"{fault} at {SITE} (default profile)")
            o, lost, rec = summary["outage_ms"], summary["lost"], summary["recovery_ms"]
            rows.append([fault, summary["affected_client_trials"], summary["never_recovered"],
                         o["median"], o["p95"], o["max"], lost["median"], lost["max"],
                         rec["median"]])
            print(f"{fault}: outage median {o['median']} ms, p95 {o['p95']} ms", flush=True)
    finally:
        lifecycle.teardown(lab.journal)
    show(f"failover matrix: fault at {SITE}, {args.trials} trials, {args.rate:.0f} queries/s "
         "per client", ["fault", "client-trials moved", "never", "outage median ms", "p95",
                        "max", "lost median", "lost max", "recovery median ms"], rows)
    save("failover", {"site": SITE, "rate_hz": args.rate, "trials_per_fault": args.trials,
                      "faults": results})


if __name__ == "__main__":
    main()
