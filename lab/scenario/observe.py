"""Observing a running lab for a step's expectations: the `status` report (only when an
expectation needs it) and introspection answers (only for the tokens asked about). The
background prober's samples come from the runner."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from lab.host.labs import Lab
from lab.host.procs import run_in
from lab.observe import status
from lab.render.credentials import paths
from lab.scenario import model as m
from lab.scenario.actions import Tokens
from lab.scenario.evaluate import Observation, token_key

STATUS_KINDS = (m.ClientExpect, m.SpreadExpect, m.SiteExpect, m.RouterExpect,
                m.SessionExpect)
INTROSPECT_TIMEOUT_S = 2.0


def observe(lab: Lab, expectations: list[Any], tokens: Tokens, base: Observation) -> Observation:
    """One look at the lab for these expectations (samples and instants from `base`)."""
    obs = Observation(samples=base.samples, t_action=base.t_action, rate_hz=base.rate_hz)
    if any(isinstance(e, STATUS_KINDS) for e in expectations):
        obs.status = status.collect(lab, fabric=False)
    for exp in expectations:
        if isinstance(exp, m.TokenExpect):
            obs.tokens[token_key(exp)] = introspect(lab, tokens, exp)
    return obs


def introspect(lab: Lab, tokens: Tokens, exp: m.TokenExpect) -> dict[str, Any]:
    """One introspection request for the token: at a site's own address from inside the
    site, or at the anycast address from a client ({"active", "site", "error"})."""
    assert lab.plan is not None
    if exp.at is not None:
        node = lab.plan.nodes[exp.at]
        address = str(node.interfaces[0].v4.ip)
    else:
        node = lab.plan.nodes[exp.via or ""]
        address = str(lab.plan.anycast4.network_address)
    p = paths(lab.journal.dir)
    argv = [sys.executable, "-m", "probes.introspect", "--address", address,
            "--ca", str(p.ca_cert), "--client", "lab-admin", "--secret-file", str(p.secrets),
            "--token-file", str(tokens.file(lab, exp.token)), "--count", "1",
            "--timeout", str(INTROSPECT_TIMEOUT_S), "--deadline", str(INTROSPECT_TIMEOUT_S + 1),
            "--lines"]
    try:
        result = run_in(node.netns, argv, timeout=INTROSPECT_TIMEOUT_S + 10)
        first = json.loads(result.stdout.splitlines()[0])
    except (OSError, ValueError, IndexError) as exc:
        return {"active": None, "site": None, "error": f"the probe failed: {exc}"}
    except subprocess.TimeoutExpired:
        return {"active": None, "site": None, "error": "the probe did not finish"}
    if first.get("status") != 200:
        return {"active": None, "site": first.get("site"),
                "error": first.get("error") or f"HTTP {first.get('status')}"}
    return {"active": bool(first.get("active")), "site": first.get("site"), "error": None}
