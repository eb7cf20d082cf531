"""`measure exposure`: how long a revoked token is still accepted somewhere.

One trial: issue a token; cut `site` off from the issuer (the `stale` fault) and wait until
its revocation state is older than `identity.max_staleness_ms`; start every client
introspecting the token continuously through the anycast address (`rate` per second,
a new TLS connection each, from the client's namespace); revoke the token at the issuer
(T0); force a failover onto the stale site (the `dns` fault at the expected site of the
first client whose failover is `site`); probe on for `window_s`; heal everything.

Per client: the first answer after T0 that said `active: false`, the last that said
`active: true` and the sites that answered. The trial's exposure is the time from T0 to
the last `active: true` answer any client got (0 when none came), the window during which
the revocation did not hold. `analyse` is pure; the rest drives a real lab. With
`identity.coupling` on, the stale site has withdrawn before the failover, so the clients
land on a site that knows the revocation (or nowhere, when none is left).
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from lab.host.labs import Lab
from lab.model.errors import BadInput
from lab.model.plan import require_site
from lab.ops import faults, tokenstore
from lab.render.credentials import SERVICE_NAME, client_secret, paths
from lab.shared import https
from lab.shared.wait import wait_until

Sample = tuple[float, str | None, bool | None]  # (monotonic t, answering site, active)


def analyse(samples: dict[str, list[Sample]], t0: float,
            t_end: float | None = None) -> dict[str, Any]:
    """Per client and overall, what the samples after the revocation at `t0` say;
    `open_at_end`: the token was still accepted within 0.5 s of the end (`t_end`), so the
    exposure is at least the window, not over."""
    clients: dict[str, Any] = {}
    last_active_all: float | None = None
    for client, seen in samples.items():
        after = [s for s in seen if s[0] >= t0]
        active = [s for s in after if s[2] is True]
        inactive = [s for s in after if s[2] is False]
        first_inactive = min((s[0] for s in inactive), default=None)
        last_active = max((s[0] for s in active), default=None)
        if last_active is not None:
            last_active_all = max(last_active_all or last_active, last_active)
        clients[client] = {
            "answers": len([s for s in after if s[2] is not None]),
            "unanswered": len([s for s in after if s[2] is None]),
            "accepted_after_revocation": len(active),
            "first_inactive_ms": None if first_inactive is None
            else round((first_inactive - t0) * 1000, 1),
            "last_active_ms": None if last_active is None
            else round((last_active - t0) * 1000, 1),
            "accepted_by": sorted({s[1] for s in active if s[1]}),
            "sites": sorted({s[1] for s in after if s[1]}),
        }
    return {"clients": clients,
            "exposure_ms": 0.0 if last_active_all is None
            else round((last_active_all - t0) * 1000, 1),
            "open_at_end": t_end is not None and last_active_all is not None
            and last_active_all >= t_end - 0.5}


def _prober(lab: Lab, client: str, token: str, rate_hz: float, stop: threading.Event,
            out: list[Sample]) -> None:
    assert lab.plan is not None
    netns = lab.plan.nodes[client].netns
    address = str(lab.plan.anycast4.network_address)
    p = paths(lab.journal.dir)
    auth = https.basic("lab-admin", client_secret(lab.journal.dir, "lab-admin"))
    form = urllib.parse.urlencode({"token": token})
    period = 1.0 / rate_hz
    while not stop.is_set():
        started = time.monotonic()
        try:
            answer = https.request(address, 443, "POST", "/introspect", ca_file=p.ca_cert,
                                   server_name=SERVICE_NAME, netns=netns, form=form,
                                   headers={"Authorization": auth}, timeout_s=0.5)
            body = answer.body if isinstance(answer.body, dict) else {}
            out.append((started, answer.headers.get("x-anycast-site"),
                        body.get("active") if answer.status == 200 else None))
        except (OSError, ValueError):
            out.append((started, None, None))
        stop.wait(max(0.0, period - (time.monotonic() - started)))


def _age(lab: Lab, site: str) -> float:
    """The age of a site's revocation state, asked from its router's namespace."""
    assert lab.plan is not None
    node = lab.plan.nodes[site]
    assert node.router is not None
    try:
        answer = https.request(str(node.interfaces[0].v4.ip), 443, "GET", "/identity",
                               ca_file=paths(lab.journal.dir).ca_cert,
                               server_name=SERVICE_NAME,
                               netns=lab.plan.nodes[node.router].netns, timeout_s=1.0)
    except (OSError, ValueError):
        return 0.0
    body = answer.body if isinstance(answer.body, dict) else {}
    age = (body.get("revocation") or {}).get("age_s")
    return float(age) if isinstance(age, int | float) else 0.0


def trial(lab: Lab, site: str, rate_hz: float, window_s: float) -> dict[str, Any]:
    assert lab.plan is not None and lab.topology is not None
    topo, plan = lab.topology, lab.plan
    # One failover forced: the expected site of the first client that fails over to
    # `site` (failing all of them could leave no site at all under coupling).
    pushed = [c.expect_sites[0] for c in topo.clients.values()
              if site in c.failover_sites and site not in c.expect_sites][:1]
    token, claims = tokenstore.issue(lab.journal.dir, "lab-admin", "exposure", 600, None, plan)
    faults.inject(lab, site, "stale")
    try:
        max_s = topo.identity.max_staleness_ms / 1000
        wait_until(lambda: _age(lab, site) > max_s, max_s + 10, interval_s=0.2)
        stop = threading.Event()
        samples: dict[str, list[Sample]] = {c: [] for c in topo.clients}
        threads = [threading.Thread(target=_prober, args=(lab, c, token, rate_hz, stop,
                                                          samples[c]), daemon=True)
                   for c in topo.clients]
        for t in threads:
            t.start()
        time.sleep(0.5)  # a baseline of answers before the revocation
        t0 = time.monotonic()
        revoked = tokenstore.revoke_via_issuer(lab.journal.dir, plan, claims["jti"],
                                               wait_s=0.0)
        for primary in pushed:
            faults.inject(lab, primary, "dns")
        stop.wait(window_s)
        t_end = time.monotonic()
        stop.set()
        for t in threads:
            t.join(timeout=2)
    finally:
        for name in [site, *pushed]:
            faults.heal(lab, name)
    result = analyse(samples, t0, t_end)
    return {"revoked_version": revoked["version"], "failover_forced_from": pushed,
            "window_s": window_s, **result, "_samples": samples, "_t0": t0}


def _dist(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None, "max": None}
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 1),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
            "max": ordered[-1]}


def exposure(lab: Lab, site: str, trials: int, rate_hz: float, window_s: float,
             plot: Path | None = None) -> dict[str, Any]:
    """`trials` trials (see `trial`); with `plot`, the first one's timeline as a PNG."""
    assert lab.plan is not None and lab.topology is not None
    require_site(lab.plan, site)
    if lab.plan.issuer is None:
        raise BadInput(f"lab '{lab.name}' has no issuer: exposure needs a topology with "
                       "`issuer:`")
    runs = [trial(lab, site, rate_hz, window_s) for _ in range(trials)]
    if plot is not None:
        from lab.measure.exposure_plot import timeline

        coupling = "on" if lab.topology.identity.coupling else "off"
        timeline(runs[0]["_samples"], runs[0]["_t0"], plot,
                 f"revoked token, {site} cut off from the issuer, failover forced onto it "
                 f"(identity coupling {coupling})")
    for run in runs:
        del run["_samples"], run["_t0"]
    return {"site": site, "plot": str(plot) if plot else None,
            "coupling": lab.topology.identity.coupling,
            "max_staleness_ms": lab.topology.identity.max_staleness_ms,
            "trials": runs,
            "summary": {"exposure_ms": _dist([r["exposure_ms"] for r in runs]),
                        "accepted_after_revocation": sum(
                            c["accepted_after_revocation"] for r in runs
                            for c in r["clients"].values())}}
