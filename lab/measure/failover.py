"""`measure failover`: run trials of a fault at a site while every client probes the
anycast DNS address, then summarise and (optionally) draw the timeline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.host.labs import Lab
from lab.measure.events import RouteWatcher, health_events
from lab.measure.trials import run_trial, summarise, trial_json
from lab.model.errors import BadInput, NotAsExpected
from lab.model.plan import AddressPlan, require_site
from lab.observe.routing import client_sites, misplaced
from lab.ops import faults
from lab.shared.wait import wait_until


def check_plot_path(path: Path | None, what: str = "the timeline") -> Path | None:
    """The --plot path, checked before any measurement (BadInput otherwise): not a
    directory, a name ending in .png, and either an existing regular file that can be
    overwritten or a new file in an existing directory (tried: created, then removed)."""
    if path is None:
        return None
    if path.is_dir():
        raise BadInput(f"--plot {path} is a directory; give a file path ending in .png")
    if path.suffix.lower() != ".png":
        raise BadInput(f"--plot {path}: {what} is a PNG picture; give a path ending "
                       "in .png")
    if not path.parent.is_dir():
        raise BadInput(f"--plot {path}: the directory {path.parent} does not exist")
    if path.exists():
        if not path.is_file():
            raise BadInput(f"--plot {path} exists and is not a regular file")
        if not os.access(path, os.W_OK):
            raise BadInput(f"--plot {path} exists and cannot be overwritten")
        return path
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise BadInput(f"--plot {path}: cannot create a file in {path.parent} "
                       f"({exc.strerror})") from exc
    os.close(fd)
    os.unlink(path)
    return path


def fault_actions(lab: Lab, site: str, fault: str) -> tuple[Callable[[], None],
                                                             Callable[[], None]]:
    if fault == "drain":
        from lab.ops import drain

        return (lambda: drain.drain(lab, site)), (lambda: drain.undrain(lab, site))
    if fault not in faults.REGISTRY:
        known = ", ".join(faults.fault_names())
        raise BadInput(f"unknown fault '{fault}' (faults: {known}, drain)")
    return (lambda: faults.inject(lab, site, fault)), (lambda: faults.heal(lab, site, fault))


def wait_expected(lab: Lab, timeout_s: float = 30.0) -> None:
    """Block until every client is answered by its expected site (IPv4), so that each
    trial starts from the lab's normal state; NotAsExpected if that does not happen."""
    topology, plan = lab.topology, lab.plan
    assert topology is not None and plan is not None
    wrong: list[str] = []

    def normal() -> bool:
        wrong[:] = misplaced(topology, client_sites(plan, timeout=0.2), families=("v4",))
        return not wrong

    if not wait_until(normal, timeout_s, interval_s=0.1):
        raise NotAsExpected(f"the lab is not in its normal state before a trial: {wrong[0]}",
                            details=wrong[1:])


FAMILIES = ("ipv4", "ipv6")
V6_SUFFIX = " v6"  # an IPv6 probe's name: the client's and this


def probe_targets(plan: AddressPlan, families: tuple[str, ...]
                  ) -> tuple[dict[str, str], dict[str, str]]:
    """The probes of a trial: name -> client namespace, name -> anycast address. An IPv4
    probe is named after its client, an IPv6 one after its client and V6_SUFFIX."""
    clients, servers = {}, {}
    for c in plan.by_role("client"):
        if "ipv4" in families:
            clients[c.name], servers[c.name] = c.netns, str(plan.anycast4.network_address)
        if "ipv6" in families:
            name = c.name + V6_SUFFIX
            clients[name], servers[name] = c.netns, str(plan.anycast6.network_address)
    return clients, servers


def split_name(probe: str) -> tuple[str, str]:
    """(client, family) of a probe's name."""
    if probe.endswith(V6_SUFFIX):
        return probe.removesuffix(V6_SUFFIX), "ipv6"
    return probe, "ipv4"


def failover(lab: Lab, site: str, fault: str, trials: int, rate_hz: float,
             plot: Path | None, progress: Callable[[str], None],
             families: tuple[str, ...] = ("ipv4",)) -> dict[str, Any]:
    assert lab.plan is not None
    check_plot_path(plot)
    require_site(lab.plan, site)
    inject, heal = fault_actions(lab, site, fault)
    clients, servers = probe_targets(lab.plan, families)
    routers = sorted({c.router for c in lab.plan.by_role("client") if c.router})
    prefixes = {f: p for f, p in zip(FAMILIES, lab.plan.anycast, strict=True) if f in families}
    records = []
    for n in range(trials):
        wait_expected(lab)
        wall_minus_mono = time.time() - time.monotonic()
        since = time.time()
        watcher = RouteWatcher(lab.journal.dir, routers, prefixes).start()
        try:
            records.append(run_trial(clients, "", rate_hz, inject, heal, servers=servers))
        finally:
            routes = watcher.stop()
            if fault != "drain" and any(f["site"] == site for f in faults.active(lab).values()):
                faults.heal(lab, site)
        r = records[-1]
        r.events = sorted(routes + health_events(lab.journal.dir, site, since, time.time(),
                                                 wall_minus_mono), key=lambda e: e.t)
        for c in r.clients:
            c.client, c.family = split_name(c.client)
        moved = [c for c in r.clients if c.site_after != c.site_before]
        progress(f"trial {n + 1}/{trials}: " + (", ".join(
            f"{c.client}{'' if c.family == 'ipv4' else ' (IPv6)'} {c.site_before}->"
            f"{c.site_after} {c.outage_ms} ms, {c.lost} lost"
            for c in moved) or "no client moved"))
    report = {"lab": lab.name, "site": site, "fault": fault, "rate_hz": rate_hz,
              "families": list(families),
              "trials": [trial_json(r) for r in records],
              "summary": summarise([r.clients for r in records])}
    if plot is not None:
        from lab.measure.plot import timeline

        report["plot"] = str(timeline(records, plot, f"{fault} at {site}: which site answered "
                                                     f"each client ({rate_hz:.0f} queries/s)",
                                      site=site, routers={
                                          c.name: c.router or "" for c in
                                          lab.plan.by_role("client")}))
    return report
