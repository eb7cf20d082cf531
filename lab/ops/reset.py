"""`reset`: return a running lab to its normal state, and say how long that took.

In order: heal every fault (network faults first, then daemons in the order `up` starts
them: lab.ops.faults), clear every run-time impairment, set every router's sysctls
back to what `up` set (an `exec` may have changed its multipath hash), undrain every
site, put every site's revocation list back to the lab's truth (lab.ops.revocations),
then wait until the lab's normal state holds: no fault recorded, every BGP session
Established, every site announced, healthy and not drained, every BFD session (with
bgp.bfd) Up at its router, and every client answered
by its `expect:` site on both families (under ECMP, every site of its spread). Read
from `status`, the lab's own view."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lab.host.fabric import Fabric
from lab.host.labs import Lab, recorded_impairments
from lab.observe import status
from lab.ops import drain, faults, impair, revocations
from lab.shared.wait import wait_until

RESET_TIMEOUT_S = 60.0
POLL_S = 0.2


def abnormal(report: dict[str, Any]) -> list[str]:
    """What keeps a `status` report from the lab's normal state (empty: normal)."""
    out = [f"fault {f['fault']} at {f['site']} is still recorded"
           for f in report.get("faults", [])]
    out += list(report.get("problems", []))
    healthd = report.get("sites") and all(
        s.get("health") not in ("static", "exabgp-healthcheck")
        for s in report["sites"].values())
    for name, site in report.get("sites", {}).items():
        if not site.get("announced"):
            out.append(f"site {name} is not announced ({site.get('reason') or 'no reason'})")
        if site.get("drained"):
            out.append(f"site {name} is drained")
        if healthd and site.get("health") != "up":
            out.append(f"site {name}'s health is {site.get('health')}")
        bfd = site.get("bfd")
        if bfd and bfd.get("state") != "Up":  # else a silent link waits for the hold timer
            out.append(f"site {name}'s BFD session is {bfd.get('state')} at its router")
    for name, router in report.get("routers", {}).items():
        for peer, fams in (router.get("bfd") or {}).items():  # bgp.bfd.routers
            out += [f"router {name}'s BFD session to {peer} ({fam}) is {st}"
                    for fam, st in fams.items() if st != "Up"]
    for name, client in report.get("clients", {}).items():
        if client.get("as_expected") != "expected":
            out.append(f"client {name} is answered by {client.get('site') or 'nobody'} "
                       f"(v4) / {client.get('site6') or 'nobody'} (v6), expected "
                       f"{client.get('expected')}")
    return out


def reset(lab: Lab, timeout_s: float = RESET_TIMEOUT_S,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Reset the lab (the caller holds its lock); the report has `ok`, what was undone,
    `elapsed_s` and, when the normal state did not come back, `problems`."""
    assert lab.plan is not None and lab.topology is not None
    note = progress or (lambda _msg: None)
    started = time.monotonic()
    healed: list[dict[str, Any]] = []
    for site in sorted({entry["site"] for entry in faults.active(lab).values()}):
        done = faults.heal(lab, site)
        healed += [{"site": site, "fault": h["fault"], "ready": h["ready"],
                    "detail": h["detail"]} for h in done]
        note(f"healed {', '.join(h['fault'] for h in done)} at {site}")
    cleared = []
    for link in recorded_impairments(lab):
        impair.clear(lab, link)
        cleared.append(link)
        note(f"cleared the impairment of {link}")
    # A router's sysctls (its multipath hash among them) set again exactly as `up` set
    # them: the fabric's own code, so reset follows whatever `up` does.
    fabric = Fabric(lab.plan, lab.journal, lab.topology.bgp.multipath_hash)
    for router in lab.plan.by_role("router"):
        fabric.set_sysctls(router)
    undrained = []
    if lab.topology.health.enabled:
        for site in lab.topology.sites:
            if drain.undrain(lab, site):
                undrained.append(site)
                note(f"undrained {site}")
    versions = revocations.restore(lab)
    last: dict[str, Any] = {}

    def normal() -> bool:
        last.clear()
        last.update(status.collect(lab, fabric=False, identity=False))
        return not abnormal(last)

    ok = bool(wait_until(normal, timeout_s, POLL_S))
    elapsed = round(time.monotonic() - started, 3)
    report: dict[str, Any] = {"ok": ok, "lab": lab.name, "healed": healed,
                              "impairments_cleared": cleared, "undrained": undrained,
                              "revocation_versions": versions, "elapsed_s": elapsed}
    if not ok:
        report["problems"] = abnormal(last)
    return report
