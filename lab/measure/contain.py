"""Containment of a compromised site, measured: withdraw it at once (the `contain` fault)
and time, from the instant before the withdrawal, until no client's anycast query (either
family) is answered by it any more."""

from __future__ import annotations

import time
from typing import Any

from lab.host.labs import Lab
from lab.observe.routing import client_sites
from lab.ops import faults

DEADLINE_S = 10.0


def _reaching(lab: Lab, site: str) -> list[str]:
    assert lab.plan is not None
    answers = client_sites(lab.plan, timeout=0.2)
    return sorted(c for c, a in answers.items() if site in (a["v4"].site, a["v6"].site))


def contain(lab: Lab, site: str, deadline_s: float = DEADLINE_S) -> dict[str, Any]:
    before = _reaching(lab, site)
    started = time.monotonic()
    entry = faults.inject(lab, site, "contain")
    took: float | None = None
    still = before
    while time.monotonic() - started < deadline_s:
        still = _reaching(lab, site)
        if not still:
            took = (time.monotonic() - started) * 1000
            break
        time.sleep(0.005)
    return {"site": site, "clients_before": before,
            "unreached_after_ms": None if took is None else round(took, 1),
            "still_reaching": still, "deadline_s": deadline_s, "t": entry["t"]}
