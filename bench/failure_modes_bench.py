"""Failure modes a DNS prober does not see: the failover matrix by probe kind and family,
a silent blackhole with and without BFD, and every site's DNS down under each last-site
policy. Writes the `failure_modes` section of bench/results.json.

    python -m bench.failure_modes_bench [--trials N] [--bfd-trials N] [--rate HZ]
        [--parts matrix,bfd,last]
        [--faults F,...] [--probes P,...] [--families 4,6]

- matrix: default lab, each fault at ams x each probe kind (dns, https new connection,
  https keep-alive, tcp streams) x family: outage median/p95/max, lost, broken
  connections, time to an answer on a new connection;
- bfd: two-sites lab, `blackhole` at west, DNS probe at 200 q/s: BGP hold time 3 s alone,
  then BFD 100 ms x 3;
- last: default lab per `health.last_site` policy; every site's DNS killed one after the
  other; an HTTPS probe (new connection per request) from every client for 3 s after the
  last site failed: share answered and by which sites.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

import yaml

from bench.common import save, show, unique
from bench.lab_bench import DEFAULT, topology
from lab.measure.failover import (
    PROBE_TIMEOUT_S,
    PROBES,
    fault_actions,
    probe_factory,
    wait_expected,
)
from lab.measure.trials import run_trial, summarise, trial_json
from lab.model import load_text
from lab.ops import faults, lifecycle

SITE = "ams"
FAULTS = ["dns", "dns-hang", "introspect", "introspect-hang", "speaker", "blackhole"]
TWO_SITES = DEFAULT.parent / "two-sites.yaml"


def _topology(path, name: str, **sections: Any):
    data = yaml.safe_load(path.read_text())
    data["name"] = name
    data.update(sections)
    report = load_text(yaml.safe_dump(data, sort_keys=False), str(path))
    assert report.ok and report.topology is not None, report.problems
    return report.topology


def _trials(lab, site: str, fault: str, probe: str, family: int, rate: float,
            trials: int) -> dict[str, Any]:
    clients = {c.name: c.netns for c in lab.plan.by_role("client")}
    anycast = lab.plan.anycast4 if family == 4 else lab.plan.anycast6
    server = str(anycast.network_address)
    make = probe_factory(lab, probe, rate)
    inject, heal = fault_actions(lab, site, fault)
    records = []
    for _ in range(trials):
        wait_expected(lab, family=family)
        try:
            records.append(run_trial(clients, server, rate, inject, heal, max_wait_s=12,
                                     timeout_s=PROBE_TIMEOUT_S[probe], make_probe=make))
        finally:
            if any(f["site"] == site for f in faults.active(lab).values()):
                faults.heal(lab, site)
    return {"summary": summarise([r.clients for r in records]),
            "trials": [trial_json(r) for r in records]}


def matrix(args: argparse.Namespace) -> dict[str, Any]:
    lab = lifecycle.up(topology("default", unique("fm")), lambda _m: None)
    out: dict[str, Any] = {}
    rows = []
    try:
        for fault in args.faults:
            for probe in args.probes:
                for family in args.families:
                    rate = min(args.rate, 50.0) if probe == "https" else args.rate
                    cell = _trials(lab, SITE, fault, probe, family, rate, args.trials)
                    out[f"{fault}/{probe}/v{family}"] = {"rate_hz": rate, **cell}
                    s = cell["summary"]
                    o = s["outage_ms"]
                    rows.append([fault, probe, family, s["affected_client_trials"],
                                 o["median"], o["p95"], o["max"], s["lost"]["max"],
                                 s.get("broken_total", ""),
                                 (s.get("reconnect_ms") or {}).get("max", "")])
                    print(f"{fault} {probe} v{family}: outage median {o['median']} "
                          f"p95 {o['p95']} ms, lost max {s['lost']['max']}, broken "
                          f"{s.get('broken_total', '-')}", flush=True)
    finally:
        lifecycle.teardown(lab.journal)
    show(f"failure modes: fault at {SITE} x probe x family, {args.trials} trials",
         ["fault", "probe", "IPv", "moved", "outage median ms", "p95", "max", "lost max",
          "broken", "reconnect max ms"], rows)
    return out


def bfd(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows = []
    for label, setting in (("hold timer (3 s)", {"enabled": False}),
                           ("BFD 100 ms x 3", {"enabled": True, "interval_ms": 100,
                                               "multiplier": 3})):
        topo = _topology(TWO_SITES, unique("fb"), bgp={"bfd": setting})
        lab = lifecycle.up(topo, lambda _m: None)
        try:
            cell = _trials(lab, "west", "blackhole", "dns", 4, 200.0, args.bfd_trials)
        finally:
            lifecycle.teardown(lab.journal)
        out[label] = cell
        s = cell["summary"]
        rows.append([label, s["affected_client_trials"], s["outage_ms"]["median"],
                     s["outage_ms"]["p95"], s["outage_ms"]["max"], s["lost"]["median"],
                     s["lost"]["max"]])
        print(f"blackhole, {label}: {s['outage_ms']}", flush=True)
    show(f"silent blackhole at west, DNS probe 200 q/s, {args.bfd_trials} trials",
         ["detection", "moved", "outage median ms", "p95", "max", "lost median", "lost max"],
         rows)
    return out


def last_site(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows = []
    for policy in ("withdraw", "backup-route", "keep-last"):
        topo = _topology(DEFAULT, unique("fl"), health={"last_site": policy})
        lab = lifecycle.up(topo, lambda _m: None)
        try:
            sites = [s.name for s in lab.plan.by_role("site")]
            for site in sites:
                faults.inject(lab, site, "dns")
                time.sleep(1.0)  # one after the other
            time.sleep(1.0)
            server = str(lab.plan.anycast4.network_address)
            make = probe_factory(lab, "https", 20.0)
            probes = {c.name: make(c.netns, 10, server).start()
                      for c in lab.plan.by_role("client")}
            time.sleep(3.0)
            seen = {name: p.stop() for name, p in probes.items()}
            for site in sites:
                faults.heal(lab, site)
        finally:
            lifecycle.teardown(lab.journal)
        result = {name: {"sent": len(samples),
                         "answered": sum(1 for s in samples if s.site),
                         "sites": dict(Counter(s.site for s in samples if s.site))}
                  for name, samples in seen.items()}
        out[policy] = result
        for name, r in result.items():
            rows.append([policy, name, r["sent"], r["answered"],
                         " ".join(f"{k}:{v}" for k, v in sorted(r["sites"].items()))])
        print(f"{policy}: {result}", flush=True)
    show("every site's DNS killed in turn: HTTPS from each client for 3 s after",
         ["policy", "client", "sent", "answered", "by site"], rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--bfd-trials", type=int, default=5)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--parts", default="matrix,bfd,last")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--probes", default=",".join(PROBES))
    parser.add_argument("--families", default="4,6")
    args = parser.parse_args()
    args.faults = args.faults.split(",")
    args.probes = args.probes.split(",")
    args.families = [int(f) for f in args.families.split(",")]
    parts = args.parts.split(",")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    results: dict[str, Any] = {"load_average_at_start": load, "trials": args.trials,
                               "bfd_trials": args.bfd_trials}
    if "bfd" in parts:
        results["bfd_blackhole"] = bfd(args)
    if "last" in parts:
        results["last_site"] = last_site(args)
    if "matrix" in parts:
        results["matrix"] = matrix(args)
    with open("/proc/loadavg") as f:
        results["load_average_at_end"] = f.read().split()[:3]
    save("failure_modes", results)


if __name__ == "__main__":
    main()
