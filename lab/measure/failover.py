"""`measure failover`: run trials of a fault at a site while every client probes the
anycast address with one kind of probe, over IPv4, IPv6 or both, then summarise and
(optionally) draw the timeline.

Probe kinds: `dns` (id.server over UDP, `probes.dns`), `https` (an introspection request
on a new TLS connection each time, `probes.https`), `https-keepalive` (the same requests
reusing open connections), `tcp` (long-lived DNS-over-TCP connections to the site's
Unbound, each a stream of small queries: `probes.tcp_stream`, which also counts broken
connections and the time to an answer on a new one)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.host.labs import Lab
from lab.measure.events import RouteWatcher, health_events
from lab.measure.trials import Probe, ProbeFactory, run_trial, summarise, trial_json
from lab.model.errors import BadInput, NotAsExpected
from lab.model.plan import AddressPlan, require_site
from lab.observe.routing import client_sites, misplaced
from lab.ops import faults
from lab.shared.wait import wait_until

PROBES = ("dns", "https", "https-keepalive", "tcp")
# Each probe's own timeout for one query or request: a TLS handshake and a request take a
# few milliseconds here, a few tens on a loaded machine.
PROBE_TIMEOUT_S = {"dns": 0.1, "https": 0.5, "https-keepalive": 0.5, "tcp": 0.2}
MAX_RATE_HZ = {"dns": 1000, "https": 200, "https-keepalive": 500, "tcp": 1000}
TCP_CONNECTIONS = 4  # per client
HTTPS_CLIENT = "lab-admin"  # the lab's own client registration (credentials.create)


def check_probe(probe: str, rate_hz: float) -> None:
    """BadInput for a probe kind or rate the probes do not take."""
    if probe not in PROBES:
        raise BadInput(f"unknown probe '{probe}' (probes: {', '.join(PROBES)})")
    if rate_hz > MAX_RATE_HZ[probe]:
        raise BadInput(f"--rate {rate_hz:g}: the {probe} probe sends at most "
                       f"{MAX_RATE_HZ[probe]} per second per client")


def probe_factory(lab: Lab, probe: str, rate_hz: float) -> ProbeFactory:
    """How each client's probe of this kind is made (its namespace, how long at most, the
    anycast address it asks: one per family)."""
    timeout_s = PROBE_TIMEOUT_S[probe]
    if probe == "dns":
        from probes.dns import BackgroundProbe

        return lambda netns, longest, server: BackgroundProbe(server, rate_hz, longest,
                                                              timeout_s, netns)
    if probe == "tcp":
        from probes.tcp_stream import TcpStreamProbe

        return lambda netns, longest, server: TcpStreamProbe(server, rate_hz, longest,
                                                             timeout_s, netns, TCP_CONNECTIONS)
    from lab.render import credentials
    from probes.https import HttpsProbe, HttpsTarget

    ca = credentials.paths(lab.journal.dir).ca_cert
    secret = credentials.client_secret(lab.journal.dir, HTTPS_CLIENT)
    mode = "keepalive" if probe == "https-keepalive" else "new"

    def make(netns: str, longest: float, server: str) -> Probe:
        return HttpsProbe(HttpsTarget(server, ca, HTTPS_CLIENT, secret), rate_hz, longest,
                          timeout_s, netns, mode)

    return make


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


def wait_expected(lab: Lab, timeout_s: float = 30.0, family: int = 4) -> None:
    """Block until every client is answered by its expected site (in the family measured),
    so that each trial starts from the lab's normal state; NotAsExpected if that does not
    happen."""
    topology, plan = lab.topology, lab.plan
    assert topology is not None and plan is not None
    wrong: list[str] = []

    def normal() -> bool:
        wrong[:] = misplaced(topology, client_sites(plan, timeout=0.2),
                             families=(f"v{family}",))
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
             families: tuple[str, ...] = ("ipv4",), probe: str = "dns") -> dict[str, Any]:
    assert lab.plan is not None
    check_plot_path(plot)
    check_probe(probe, rate_hz)
    require_site(lab.plan, site)
    inject, heal = fault_actions(lab, site, fault)
    clients, servers = probe_targets(lab.plan, families)
    routers = sorted({c.router for c in lab.plan.by_role("client") if c.router})
    prefixes = {f: p for f, p in zip(FAMILIES, lab.plan.anycast, strict=True) if f in families}
    make_probe = probe_factory(lab, probe, rate_hz)
    records = []
    for n in range(trials):
        for family in families:
            wait_expected(lab, family=4 if family == "ipv4" else 6)
        wall_minus_mono = time.time() - time.monotonic()
        since = time.time()
        watcher = RouteWatcher(lab.journal.dir, routers, prefixes).start()
        try:
            records.append(run_trial(clients, "", rate_hz, inject, heal, servers=servers,
                                     timeout_s=PROBE_TIMEOUT_S[probe], make_probe=make_probe))
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
            + (f", {c.broken} broken" if c.broken is not None else "")
            for c in moved) or "no client moved"))
    report = {"lab": lab.name, "site": site, "fault": fault, "probe": probe,
              "rate_hz": rate_hz, "families": list(families),
              "trials": [trial_json(r) for r in records],
              "summary": summarise([r.clients for r in records])}
    if plot is not None:
        from lab.measure.plot import timeline

        report["plot"] = str(timeline(records, plot, f"{fault} at {site}: which site answered "
                                                     f"each client ({probe}, {rate_hz:.0f}/s)",
                                      site=site, routers={
                                          c.name: c.router or "" for c in
                                          lab.plan.by_role("client")}))
    return report
