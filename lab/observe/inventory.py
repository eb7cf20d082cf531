"""The labs on this machine at a glance (`anycast-lab list`): name, the topology file it
was built from, phase, age, how many nodes, and a health summary (each site's health
daemon's word and how many BGP sessions are Established). Read-only and quick: no
client is probed, for that see `status`. Labs seen here without a journal in this run
root are orphans (ours, journal gone) or another run directory's (not ours)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lab.host.journal import existing_labs
from lab.host.labs import Lab, open_lab
from lab.observe.routing import sessions
from lab.observe.status import site_health

# Health words that name no problem: the daemon says up, or no daemon of ours judges.
FINE = frozenset({"up", "static", "exabgp-healthcheck"})


def labs(orphans: list[str] | None = None,
         elsewhere: dict[str, Path] | None = None) -> list[dict[str, Any]]:
    """One entry per lab with a journal, then one per lab known only by its markers
    (`orphans`: processes or namespaces of ours whose journal is gone), then one per lab
    of another run directory (`elsewhere`: name -> its directory there; not ours)."""
    out = [summarize(open_lab(name, need_topology=False)) for name in existing_labs()]
    out += [_unjournaled(name, "orphaned", "journal gone: `anycast-lab down --lab "
                                           f"{name}` removes what is left")
            for name in orphans or []]
    out += [_unjournaled(name, OTHER_RUN_DIR, f"not ours: its journal is in {lab_dir}; "
                         f"`ANYCAST_LAB_RUN_DIR={lab_dir.parent} anycast-lab list` shows it")
            for name, lab_dir in sorted((elsewhere or {}).items())]
    return out


OTHER_RUN_DIR = "other-run-dir"  # the phase of a lab whose journal is in another run root


def _unjournaled(name: str, phase: str, summary: str) -> dict[str, Any]:
    return {"name": name, "topology": None, "phase": phase, "started": None, "age_s": None,
            "nodes": None, "health": {"summary": summary}}


def summarize(lab: Lab) -> dict[str, Any]:
    state = lab.state
    started = state.get("started")
    age = time.time() - started if isinstance(started, int | float) else None
    entry: dict[str, Any] = {
        "name": lab.name,
        "topology": state.get("topology_file"),
        "phase": state.get("phase"),
        "started": (time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))
                    if age is not None else None),
        "age_s": round(age, 1) if age is not None else None,
    }
    if state.get("failure"):
        entry["failure"] = state["failure"]
    if lab.topology is None or lab.plan is None:
        entry |= {"nodes": None, "health": {"summary": "topology record missing"}}
        return entry
    topo = lab.topology
    entry["nodes"] = {"routers": len(topo.routers), "sites": len(topo.sites),
                      "clients": len(topo.clients)}
    entry["health"] = health_summary(lab)
    return entry


def health_summary(lab: Lab) -> dict[str, Any]:
    """Sites by their health ('up', 'down', 'static', ...) and BGP sessions Established."""
    assert lab.plan is not None and lab.topology is not None
    by_health: dict[str, list[str]] = {}
    for site in lab.topology.sites:
        health = str(site_health(lab, site).get("health") or "unknown")
        by_health.setdefault(health, []).append(site)
    sess = sessions(lab.plan, lab.journal.dir)
    established = sum(s.state == "Established" for s in sess)
    words = []
    for health, sites in sorted(by_health.items(), key=lambda kv: kv[0] != "up"):
        named = "" if health in FINE else f" ({', '.join(sites[:3])}" + (
            ", ...)" if len(sites) > 3 else ")")
        words.append(f"{len(sites)} {health}{named}")
    return {"sites": {h: len(s) for h, s in by_health.items()},
            "unhealthy": sorted(s for h, sites in by_health.items()
                                if h not in FINE for s in sites),
            "sessions": {"established": established, "total": len(sess)},
            "summary": f"{', '.join(words) or 'no sites'}; BGP {established}/{len(sess)}"}
