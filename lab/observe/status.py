"""`status`: what a running lab looks like, gathered read-only, in the JSON contract's shape
(PRODUCT.md). Which site answers a client comes from the DNS service's own identity.

A site is `announced` when its router holds a route for every anycast prefix the site
announces, learned over the site's own BGP session (best or not: a drained site's route
is held though not preferred). The speaker's own account stays beside it
(`speaker_announced`: null when it cannot be asked, as under ExaBGP's bundled
healthcheck); when the two disagree, `notes` says so. A disagreement is a moment of
BGP in flight (a withdrawal on its way, a route not yet received) or a frozen speaker the
hold timer has not caught yet: it is reported, and `ok` stays about sessions and clients."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lab.cli import ui
from lab.host import procs
from lab.host.labs import Lab
from lab.observe.kernel import fabric_status
from lab.observe.routing import (
    announced_families,
    anycast_routes,
    best_paths,
    client_sites,
    held_from_sites,
    misplaced,
    sessions,
    speaker_state,
)
from lab.render.health import state_file
from lab.render.launch import node_dir


def collect(lab: Lab, fabric: bool = True) -> dict[str, Any]:
    report: dict[str, Any] = {"lab": lab.name, "phase": lab.state.get("phase"),
                              "anycast": [], "sites": {}, "routers": {}, "clients": {}}
    if lab.plan is None or lab.topology is None:
        report["ok"] = False
        report["problems"] = ["the lab's topology record is missing: run `anycast-lab down`"]
        return report
    topo, plan, lab_dir = lab.topology, lab.plan, lab.journal.dir
    report["anycast"] = plan.anycast
    problems: list[str] = []
    notes: list[str] = []

    sess = sessions(plan, lab_dir)
    routes = anycast_routes(plan, lab_dir)
    paths = best_paths(plan, lab_dir)
    held = held_from_sites(plan, routes)
    families = announced_families(topo)
    for name, site in topo.sites.items():
        session = next((s for s in sess if s.peer == name), None)
        speaker = speaker_state(lab_dir, name).get("state")
        seen = announcement(name, site.router, held[name], families, speaker)
        report["sites"][name] = {
            "router": site.router, "asn": site.asn,
            "session": session.state if session else "down",
            "announced": seen.announced,
            "announced_by_family": seen.by_family,
            "speaker": speaker,
            "speaker_announced": seen.speaker_announced,
            **site_health(lab, name),
        }
        if seen.disagreement:
            notes.append(seen.disagreement)
    for name, router in topo.routers.items():
        peers = {s.protocol: s.state for s in sess if s.router == name}
        report["routers"][name] = {"asn": router.asn, "router_id": plan.nodes[name].router_id,
                                   "sessions": peers, "best": paths.get(name, {})}
        problems += [f"{name}: session {p} is {st}" for p, st in peers.items()
                     if st != "Established"]
    answers = client_sites(plan)
    for name, client in topo.clients.items():
        v4, v6 = answers[name]["v4"], answers[name]["v6"]
        report["clients"][name] = {
            "router": client.router, "expected": client.expect, "failover": client.failover,
            "site": v4.site, "site6": v6.site, "rtt_ms": v4.rtt_ms, "rtt6_ms": v6.rtt_ms,
            "error": v4.error, "error6": v6.error,
        }
    problems += misplaced(topo, answers)
    if fabric:
        report["fabric"] = fabric_status(plan)
        problems += [f"namespace {n['netns']} is missing"
                     for n in report["fabric"]["nodes"].values() if not n["exists"]]
    report["ok"] = not problems
    report["problems"] = problems
    report["notes"] = notes
    return report


@dataclass(frozen=True)
class Announcement:
    announced: bool  # the router holds the site's route for every announced family
    by_family: dict[str, bool]
    speaker_announced: bool | None  # None: the speaker could not say (gone, or unsure)
    disagreement: str | None  # one sentence when the speaker and the router disagree


def announcement(site: str, router: str, held: dict[str, bool], families: tuple[str, ...],
                 speaker: str | None) -> Announcement:
    """Compare what the router holds from the site (per family) with what the site's
    speaker says it announces ('announced', 'announced-gshut', 'withdrawn', 'unknown')."""
    by_family = {f: bool(held.get(f)) for f in families}
    missing = [f for f in families if not by_family[f]]
    present = [f for f in families if by_family[f]]
    said = None if speaker in (None, "unknown") else speaker.startswith("announced")
    note = None
    if said and missing:
        which = "" if not present else f" for {', '.join(missing)}"
        note = (f"{site}: speaker says {speaker}, router {router} holds no route from "
                f"{site}{which}")
    elif said is False and present:
        note = (f"{site}: speaker says {speaker}, router {router} still holds its route "
                f"({', '.join(present)})")
    return Announcement(not missing, by_family, said, note)


def site_health(lab: Lab, site: str) -> dict[str, Any]:
    """The health daemon's own account (its state file), or why there is none."""
    assert lab.topology is not None
    if not lab.topology.health.enabled:
        return {"health": "static", "drained": False}
    if lab.topology.health.checker == "exabgp-healthcheck":
        return {"health": "exabgp-healthcheck", "drained": False}
    path = state_file(node_dir(lab.journal.dir, site))
    running = procs.running(lab.journal, f"healthd@{site}") is not None
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"health": "unknown", "drained": False, "healthd": running}
    return {
        "health": state.get("health") if running else "unknown (healthd not running)",
        "health_since": state.get("health_since"),
        "health_reason": state.get("health_reason"),
        "drained": state.get("drained", False),
        "route": state.get("route"),
        "flaps": state.get("flaps"),
        "saturation": state.get("saturation"),  # {"policy": absorb|withdraw, "saturated"}
        "checks": {n: {"state": c.get("state"), "since": c.get("since"),
                       "reason": c.get("reason"), "latency_ms": c.get("latency_ms")}
                   for n, c in state.get("checks", {}).items()},
        "healthd": running,
    }


def _yes(value: bool | None) -> str:
    return "[green]yes[/]" if value else "[red]no[/]"


def _announced(site: dict[str, Any]) -> str:
    """What the router holds, and the speaker's word where it says otherwise."""
    families = site.get("announced_by_family", {})
    text = _yes(site["announced"])
    if not site["announced"] and any(families.values()):
        text += f" ({' '.join(f for f, held in families.items() if held)} only)"
    said = site.get("speaker_announced")
    if said is not None and said != site["announced"]:
        text += f" [yellow](speaker: {site.get('speaker')})[/]"
    return text


def _health(site: dict[str, Any]) -> str:
    health = site.get("health") or "unknown"
    colour = "green" if health in ("up", "static") else "red"
    text = f"[{colour}]{health}[/]"
    text += " [yellow](saturated)[/]" if (site.get("saturation") or {}).get("saturated") else ""
    return text + (" [yellow](drained)[/]" if site.get("drained") else "")


def _state(state: str | None) -> str:
    return f"[green]{state}[/]" if state == "Established" else f"[red]{state}[/]"


def print_human(report: dict[str, Any], show_fabric: bool = False) -> None:
    lab = report["lab"]
    ui.out.print(f"lab [bold]{lab}[/] ({report.get('phase')}), anycast "
                 f"{', '.join(report['anycast'])}", highlight=False)
    ui.out.print(ui.table("sites", ["site", "router", "BGP session", "announced", "health",
                                    "checks", "since"], [
        [name, s["router"], _state(s["session"]), _announced(s),
         _health(s), " ".join(f"{c}:{v['state']}" for c, v in s.get("checks", {}).items()),
         (s.get("health_since") or "")[11:19]]
        for name, s in report["sites"].items()]))
    rows = []
    for name, r in report["routers"].items():
        for prefix, best in r["best"].items():
            rows.append([name, prefix, best["site"] or "[red]none[/]", best["next_hop"],
                         " ".join(str(a) for a in best["as_path"])])
    ui.out.print(ui.table("routers: best path to the anycast prefixes",
                          ["router", "prefix", "site", "next hop", "AS path"], rows))

    def where(site: str | None, expected: str, rtt: float | None) -> str:
        if site is None:
            return "[red]no answer[/]"
        colour = "green" if site == expected else "yellow"
        return f"[{colour}]{site}[/] ({rtt:.2f} ms)" if rtt is not None else site

    ui.out.print(ui.table("clients: which site answers (DNS id.server)",
                          ["client", "expected", "IPv4 anycast", "IPv6 anycast"], [
        [name, c["expected"], where(c["site"], c["expected"], c["rtt_ms"]),
         where(c["site6"], c["expected"], c["rtt6_ms"])]
        for name, c in report["clients"].items()]))
    if show_fabric and "fabric" in report:
        rows = []
        for name, node in report["fabric"]["nodes"].items():
            for iface in node["interfaces"]:
                if iface["ifname"] == "lo" and node["role"] != "site":
                    continue
                addrs = [a for a in iface["addresses"] if not a.startswith("fe80")]
                rows.append([name, node["role"], iface["ifname"], iface["state"],
                             " ".join(addrs)])
        ui.out.print(ui.table("fabric", ["node", "role", "interface", "state", "addresses"],
                              rows))
    for problem in report.get("problems", []):
        ui.out.print(f"[red]![/] {problem}", highlight=False)
    for note in report.get("notes", []):
        ui.out.print(f"[yellow]note:[/] {note}", highlight=False)
