"""`status`: what a running lab looks like, gathered read-only, in the JSON contract's shape
(`status --json`). Which site answers a client comes from the DNS service's own identity.

A site is `announced` when its router holds a route for every anycast prefix the site
announces, learned over the site's own BGP session (best or not: a drained site's route
is held though not preferred). The speaker's own account stays beside it
(`speaker_announced`: null when it cannot be asked, as under ExaBGP's bundled
healthcheck); when the two disagree, `notes` says so. A disagreement is a moment of
BGP in flight (a withdrawal on its way, a route not yet received) or a frozen speaker the
hold timer has not caught yet: it is reported, and `ok` stays about sessions and clients."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lab.host import procs
from lab.host.birdctl import Birds
from lab.host.labs import Lab, recorded_impairments
from lab.model import names
from lab.model.names import node_dir
from lab.model.topology import CHECK_DEFAULTS, Client, bfd_sites, site_bfd
from lab.observe import reasons
from lab.observe.routing import (
    WrongAnswer,
    announced_families,
    anycast_routes,
    best_paths,
    bfd_sessions,
    client_sites,
    client_spread,
    expected_words,
    held_from_sites,
    router_bfd_sessions,
    sessions,
    speaker_state,
)

if TYPE_CHECKING:
    from lab.shared.dnsid import Identity


def collect(lab: Lab, fabric: bool = True, identity: bool = True) -> dict[str, Any]:
    """The report; `fabric`: every interface and address too; `identity`: each site's
    identity state and the issuer's (lab.observe.identity: a request per site)."""
    report: dict[str, Any] = {"lab": lab.name, "phase": lab.state.get("phase"),
                              "anycast": [], "sites": {}, "routers": {}, "clients": {}}
    if lab.plan is None or lab.topology is None:
        report["ok"] = False
        report["problems"] = [f"the lab's topology record is missing: run "
                              f"`anycast-lab down --lab {lab.name}`"]
        return report
    topo, plan, lab_dir = lab.topology, lab.plan, lab.journal.dir
    report["anycast"] = plan.anycast
    problems: list[str] = []
    notes: list[str] = []

    with Birds(lab_dir) as birds:
        sess = sessions(plan, lab_dir, birds)
        routes = anycast_routes(plan, lab_dir, birds)
        paths = best_paths(plan, lab_dir, birds)
        bfd = bfd_sessions(plan, lab_dir, bfd_sites(topo), birds)
        core_bfd = router_bfd_sessions(plan, lab_dir, birds) if topo.bgp.bfd.routers \
            else None
    problems += [f"{router}: {exc}" for router, exc in birds.unavailable.items()]
    held = held_from_sites(plan, routes)
    families = announced_families(topo)
    now = time.time()
    in_force = active_faults(lab)
    report["faults"] = [{"site": f.get("site"), "fault": f.get("fault"),
                         "since": reasons.iso(f.get("t"))} for f in in_force.values()]
    for name, site in topo.sites.items():
        session = next((s for s in sess if s.peer == name), None)
        speaker = speaker_state(lab_dir, name).get("state")
        seen = announcement(name, site.router, held[name], families, speaker)
        health, facts = health_and_facts(lab, name, now)
        site_faults = [f for f in in_force.values() if f.get("site") == name]
        facts = reasons.SiteFacts(
            name=name, router=site.router, mode=health_mode(lab),
            session=session.state if session else "down",
            session_info=session.info if session else "no such BGP session",
            held=seen.by_family, now=now, watchdog_ms=topo.health.watchdog_ms,
            faults=site_faults, **facts)
        report["sites"][name] = {
            "router": site.router, "asn": site.asn,
            "session": session.state if session else "down",
            "announced": seen.announced,
            "announced_by_family": seen.by_family,
            "speaker": speaker,
            "speaker_announced": seen.speaker_announced,
            **health,
            "check_timing": configured_timing(lab),
            "reason": reasons.site_reason(facts),
            "faults": [{"fault": f.get("fault"), "since": reasons.iso(f.get("t"))}
                       for f in site_faults],
            "bfd": bfd_status(lab, name, bfd) if name in bfd else None,
        }
        if seen.disagreement:
            notes.append(seen.disagreement)
        bfd_note = _bfd_note(name, report["sites"][name])
        if bfd_note:
            notes.append(bfd_note)
    for name, router in topo.routers.items():
        peers = {s.protocol: s.state for s in sess if s.router == name}
        report["routers"][name] = {"asn": router.asn, "router_id": plan.nodes[name].router_id,
                                   "sessions": peers, "best": paths.get(name, {}),
                                   "bfd": core_bfd.get(name) if core_bfd is not None else None}
        if core_bfd is not None:
            down = [f"{peer} ({fam})" for peer, fams in core_bfd.get(name, {}).items()
                    for fam, st in fams.items() if st != "Up"]
            if down:
                notes.append(f"{name}: BFD towards {', '.join(down)} is not Up: a silent "
                             "core link is caught by the hold timer only until it is")
        problems += [f"{name}: session {p} is {st}" for p, st in peers.items()
                     if st != "Established"]
    answers = client_sites(plan)
    spread = client_spread(plan) if topo.bgp.ecmp else None
    faulted = {f.get("site") for f in in_force.values()}
    unavailable = {fam: {name for name in topo.sites
                         if not held[name].get(fam) or name in faulted}
                   for fam in families}
    for name, client in topo.clients.items():
        v4, v6 = answers[name]["v4"], answers[name]["v6"]
        entry = report["clients"][name] = {
            "router": client.router, "expected": client.expect, "failover": client.failover,
            "site": v4.site, "site6": v6.site, "rtt_ms": v4.rtt_ms, "rtt6_ms": v6.rtt_ms,
            "error": v4.error, "error6": v6.error,
        }
        if spread is not None:
            entry["sites"], entry["sites6"] = spread[name]["v4"], spread[name]["v6"]
        verdict, wrong = judge_client(
            name, client, answers[name],
            {fam: spread[name][fam] for fam in families} if spread is not None else None,
            unavailable)
        entry["as_expected"] = verdict
        problems += wrong
    if fabric:
        from lab.observe.kernel import fabric_status  # pyroute2: only when the fabric is asked

        report["fabric"] = fabric_status(plan)
        problems += [f"namespace {n['netns']} is missing"
                     for n in report["fabric"]["nodes"].values() if not n["exists"]]
    if identity:
        add_identity(lab, report)
    report["impairments"] = recorded_impairments(lab)
    report["ok"] = not problems
    report["problems"] = problems
    report["notes"] = notes
    return report


def add_identity(lab: Lab, report: dict[str, Any]) -> None:
    """Each site's `identity` (None in a lab without an issuer) and the lab's `issuer`."""
    from lab.observe import identity

    assert lab.topology is not None
    checks = {name: (entry.get("checks") or {}).get("identity", {}).get("state")
              for name, entry in report["sites"].items()}
    per_site, issuer = identity.collect(lab, checks,
                                        lab.topology.identity.max_staleness_ms / 1000)
    for name, entry in report["sites"].items():
        entry["identity"] = per_site.get(name)
    report["issuer"] = issuer


def bfd_status(lab: Lab, site: str, sessions: dict[str, Any]) -> dict[str, Any]:
    """A site's BFD: the router's session towards it (state, since, negotiated interval
    and timeout), the settings in force, and the responder process (running, frozen or
    gone). The responder answering proves the site's namespace and link alive, not its
    BGP speaker."""
    assert lab.topology is not None
    settings = site_bfd(lab.topology, site)
    session = sessions.get(site)
    record = procs.running(lab.journal, f"{names.BFD_DAEMON}@{site}")
    responder = reasons.GONE if record is None else (
        reasons.FROZEN if procs.is_stopped(record.pid) else reasons.RUNNING)
    return {"state": session.state if session else "none",
            "since": session.since if session else None,
            "interval_ms": settings.interval_ms, "multiplier": settings.multiplier,
            "detect_ms": settings.interval_ms * settings.multiplier,
            "timeout_s": session.timeout_s if session else None,
            "responder": responder}


def _bfd_note(site: str, entry: dict[str, Any]) -> str | None:
    """One sentence when a site's BGP session runs while its BFD session is not up: BIRD
    drops the BGP session once when BFD goes down, then lets it come back without BFD."""
    bfd = entry.get("bfd")
    if not bfd or bfd["state"] == "Up" or entry["session"] != "Established":
        return None
    return (f"{site}: BFD session is {bfd['state']} (responder {bfd['responder']}) while BGP "
            "is Established: a silent link is caught by the hold timer only until BFD is up")


def judge_client(name: str, client: Client, answers: dict[str, Identity],
                 spread: dict[str, dict[str, int]] | None,
                 unavailable: dict[str, set[str]]) -> tuple[str | bool, list[str]]:
    """A client's verdict ("expected", "failover" or False) over its answers per family
    (under ECMP every site of its distribution counts), and one problem line per site
    that answered it wrongly."""
    verdicts: list[str | bool] = []
    problems = []
    for fam in unavailable:
        got = answers[fam]
        seen: dict[str | None, int] = {got.site: 1}
        if spread is not None:
            seen.update({(None if s == "none" else s): n for s, n in spread[fam].items()})
        for site, count in seen.items():
            verdict = reasons.answer_verdict(site, client.expect, client.failover,
                                             unavailable[fam])
            verdicts.append(verdict)
            if not verdict:
                wrong = WrongAnswer(name, fam, site, expected_words(client),
                                    got.error if site is None else None)
                share = f" ({count} of {sum(seen.values())} queries)" if spread else ""
                problems.append(f"{wrong}{share}")
    return reasons.client_verdict(verdicts), problems


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


def configured_timing(lab: Lab) -> dict[str, dict[str, int]] | None:
    """Each health check's pace as the lab's topology sets it (defaults filled in), in
    the health daemon's fields; None when no health daemon runs the checks. What the
    running daemon uses is in each check's `timing` (from its state file)."""
    if health_mode(lab) != "healthd":
        return None
    assert lab.topology is not None
    from lab.render.health import pace

    return {check: pace(lab.topology, check) for check in CHECK_DEFAULTS}


def active_faults(lab: Lab) -> dict[str, dict[str, Any]]:
    """The faults in force (the lab's faults file, as `fail` records them)."""
    try:
        found = json.loads((lab.journal.dir / names.FAULTS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return found if isinstance(found, dict) else {}


def health_mode(lab: Lab) -> str:
    """'healthd', 'exabgp-healthcheck' or 'static': who decides a site's announcement."""
    assert lab.topology is not None
    if not lab.topology.health.enabled:
        return "static"
    return lab.topology.health.checker


def healthd_process(lab: Lab, site: str) -> tuple[bool, str]:
    """(running, how): the site's health daemon is running, frozen (stopped by a signal)
    or gone."""
    record = procs.running(lab.journal, f"healthd@{site}")
    if record is None:
        return False, reasons.GONE
    return True, reasons.FROZEN if procs.is_stopped(record.pid) else reasons.RUNNING


def site_health(lab: Lab, site: str) -> dict[str, Any]:
    """The health daemon's own account (its state file), or why there is none."""
    return health_and_facts(lab, site, time.time())[0]


def health_and_facts(lab: Lab, site: str,
                     now: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """`site_health`, and the facts about the health daemon a site's reason needs
    (`reasons.SiteFacts` fields: its state file, running/frozen/gone)."""
    mode = health_mode(lab)
    if mode == "static":
        return {"health": "static", "drained": False}, {}
    if mode == "exabgp-healthcheck":
        return {"health": "exabgp-healthcheck", "drained": False}, {}
    from lab.render.health import state_file  # the renderer's name for it (lazily: jinja2)

    path = state_file(node_dir(lab.journal.dir, site))
    running, how = healthd_process(lab, site)
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        state = None
    facts = {"state": state if isinstance(state, dict) else None, "healthd": how}
    probe = reasons.SiteFacts(name=site, router="", mode=mode, session="", session_info="",
                              held={}, now=now, **facts)
    process = {"healthd_process": how, "health_state_age_s": _rounded(reasons.state_age(probe)),
               "health_state_stale": reasons.state_stale(probe)}
    if not isinstance(state, dict):
        return {"health": "unknown", "drained": False, "healthd": running, **process}, facts
    health = state.get("health") if running else "unknown (healthd not running)"
    if how == reasons.FROZEN:
        health = "unknown (healthd frozen)"
    return {
        "health": health,
        "health_since": state.get("health_since"),
        "health_reason": state.get("health_reason"),
        "drained": state.get("drained", False),
        "route": state.get("route"),
        "flaps": state.get("flaps"),
        "saturation": state.get("saturation"),  # {"policy": absorb|withdraw, "saturated"}
        "last_site": state.get("last_site"),  # {"policy", "kept", "since", ...} (healthd)
        "checks": {n: {"state": c.get("state"), "since": c.get("since"),
                       "reason": c.get("reason"), "latency_ms": c.get("latency_ms"),
                       "timing": c.get("timing")}
                   for n, c in state.get("checks", {}).items()},
        "healthd": running,
        **process,
    }, facts


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
