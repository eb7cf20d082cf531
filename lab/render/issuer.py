"""The lab's token issuer (lab.sites.issuer) on its own node: HTTPS on port 443 of the
issuer's unicast addresses, the lab's signing key, the authoritative revocation list in its
node directory. Ready when its /healthz answers 200 over TLS on its unicast address.

Also what the sites are told about it (`replica_config`: where to pull from, how often)
and what each site starts with (`seed_site`: the issuer's keys and revocation list at
`up`, as a site's last-known state before its first sync; `seed_lab`: the whole lab's
starting revocation state, which `up` writes and an export carries)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lab.model import names
from lab.model.plan import AddressPlan, NodePlan
from lab.model.topology import Topology
from lab.render.base import DaemonSpec, Readiness, ReadyTarget
from lab.render.credentials import AUDIENCE, ISSUER, ISSUER_NAME, Paths, paths
from lab.shared import identity
from lab.shared.atomic import write_json_atomic
from lab.shared.revocation import read_revocations, revoke_if_new

PORT = 443


def issuer_address(node: NodePlan) -> str:
    return str(node.interfaces[0].v4.ip)


def issuer_config(issuer: NodePlan, node_dir: Path, pki: Paths) -> dict[str, Any]:
    return {
        "site": issuer.name,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "public_key_file": str(pki.signing_pub),
        "signing_key": str(pki.signing_key),
        "clients_path": str(pki.registry),
        "revocation_path": str(node_dir / names.REVOCATION),
        "tokens_path": str(node_dir / names.ISSUED_TOKENS),
        "listen": [issuer_address(issuer), str(issuer.interfaces[0].v6.ip)],
        "port": PORT,
        "tls_cert": str(pki.issuer_cert),
        "tls_key": str(pki.issuer_key),
    }


def issuer_spec(issuer: NodePlan, node_dir: Path, pki: Paths,
                python: str = sys.executable) -> DaemonSpec:
    conf = node_dir / names.ISSUER_CONF
    return DaemonSpec(
        name="issuer", node=issuer.name, netns=issuer.netns, config_path=conf,
        config=json.dumps(issuer_config(issuer, node_dir, pki), indent=2),
        check_argv=[python, "-m", "lab.sites.issuer", "--check-config", str(conf)],
        argv=[python, "-m", "lab.sites.issuer", "--config", str(conf)],
        log_path=node_dir / names.log_name("issuer"),
        batch_check=True,
    )


def replica_config(topo: Topology, plan: AddressPlan, site_dir: Path,
                   pki: Paths) -> dict[str, Any] | None:
    """What a site's introspection service is told about the issuer (None: no issuer)."""
    issuer = plan.issuer
    if issuer is None:
        return None
    interval = topo.identity.sync_interval_ms / 1000
    return {"address": issuer_address(issuer), "port": PORT, "server_name": ISSUER_NAME,
            "ca_file": str(pki.ca_cert), "interval_s": interval,
            "timeout_s": min(1.0, max(0.2, 2 * interval)),
            "jwks_path": str(site_dir / names.JWKS),
            "override_path": str(site_dir / names.JWKS_OVERRIDE)}


def seed_site(site_dir: Path, issuer_dir: Path, pki: Paths) -> None:
    """A site's state before its first sync: the issuer's JWKS and revocation list now."""
    site_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(site_dir / names.JWKS, identity.jwks_of([pki.signing_key.read_bytes()]))
    version, revoked = read_revocations(issuer_dir / names.REVOCATION)
    write_json_atomic(site_dir / names.REVOCATION, {"version": version, "revoked": revoked},
                      indent=None)


def seed_lab(lab_dir: Path, plan: AddressPlan, jti: str, *, now: float | None = None) -> None:
    """Before any daemon runs: revoke the jti (the health checks' revoked canary) where
    the lab keeps its revocations, and give every site its starting state. With an issuer:
    in the issuer's list, each site seeded from it (`seed_site`); without: in every site's
    own list. `now` is the revocation's time (default: now)."""
    pki = paths(lab_dir)
    issuer = plan.issuer
    if issuer is None:
        for site in plan.by_role("site"):
            site_dir = names.node_dir(lab_dir, site.name)
            site_dir.mkdir(parents=True, exist_ok=True)
            revoke_if_new(site_dir / names.REVOCATION, jti, now=now)
        return
    issuer_dir = names.node_dir(lab_dir, issuer.name)
    issuer_dir.mkdir(parents=True, exist_ok=True)
    revoke_if_new(issuer_dir / names.REVOCATION, jti, now=now)
    for site in plan.by_role("site"):
        seed_site(names.node_dir(lab_dir, site.name), issuer_dir, pki)


def issuer_ready(t: ReadyTarget) -> Readiness:
    from lab.shared import https

    address = issuer_address(t.node)
    try:
        answer = https.request(address, PORT, "GET", "/healthz", ca_file=paths(t.lab_dir).ca_cert,
                               server_name=ISSUER_NAME, netns=t.node.netns, timeout_s=1.0)
    except (OSError, ValueError) as exc:
        return Readiness(False, f"no /healthz answer on {address}:{PORT} ({exc})")
    if answer.status == 200:
        return Readiness(True, f"answers /healthz on {address}:{PORT}")
    return Readiness(False, f"/healthz on {address}:{PORT} answered {answer.status}")
