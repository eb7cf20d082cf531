"""`status`: what a running lab looks like, gathered read-only, as the JSON contract says."""

from __future__ import annotations

from typing import Any

from lab import ui
from lab.inspect import fabric_status
from lab.lifecycle import Lab


def collect(lab: Lab) -> dict[str, Any]:
    report: dict[str, Any] = {"lab": lab.name, "phase": lab.state.get("phase"),
                              "anycast": [], "sites": {}, "routers": {}, "clients": {}}
    if lab.plan is None or lab.topology is None:
        report["ok"] = False
        report["problem"] = "the lab's topology record is missing: run `anycast-lab down`"
        return report
    topo, plan = lab.topology, lab.plan
    report["anycast"] = plan.anycast
    fabric = fabric_status(plan)
    for name, site in topo.sites.items():
        report["sites"][name] = {"router": site.router, "asn": site.asn,
                                 "session": None, "announced": None, "health": None}
    for name, router in topo.routers.items():
        report["routers"][name] = {"asn": router.asn, "router_id": plan.nodes[name].router_id,
                                   "best": {}}
    for name, client in topo.clients.items():
        report["clients"][name] = {"router": client.router, "expected": client.expect,
                                   "site": None, "site6": None, "rtt_ms": None}
    report["fabric"] = fabric
    report["ok"] = all(n["exists"] for n in fabric["nodes"].values())
    return report


def print_human(report: dict[str, Any]) -> None:
    fabric = report.get("fabric", {"nodes": {}})
    rows = []
    for name, node in fabric["nodes"].items():
        ifaces = [i for i in node["interfaces"] if i["ifname"] != "lo"]
        addrs = "; ".join(f"{i['ifname']} {' '.join(i['addresses'])}" for i in ifaces)
        rows.append([name, node["role"], "yes" if node["exists"] else "[red]missing[/]",
                     addrs])
    ui.out.print(ui.table(f"lab '{report['lab']}' ({report.get('phase')}): nodes",
                          ["node", "role", "netns", "interfaces"], rows))
