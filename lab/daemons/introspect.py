"""Our RFC 7662 token-introspection service on every site: HTTPS on port 443 of the
anycast and the site's unicast addresses, the site's own revocation list."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lab.credentials import AUDIENCE, ISSUER, Paths
from lab.daemons.base import DaemonSpec
from lab.daemons.unbound import site_listen
from lab.plan import AddressPlan, NodePlan

PORT = 443
# The health daemon's own listener: loopback of the site's namespace, reachable by nothing
# outside it, so client connections can never use up what the health checks need.
HEALTH_ADDRESS, HEALTH_PORT = "127.0.0.1", 8443


def revocation_path(node_dir: Path) -> Path:
    return node_dir / "revoked.json"


def introspect_config(plan: AddressPlan, site: NodePlan, node_dir: Path,
                      pki: Paths) -> dict:
    return {
        "site": site.name,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "public_key_file": str(pki.signing_pub),
        "clients_path": str(pki.registry),
        "revocation_path": str(revocation_path(node_dir)),
        "listen": site_listen(plan, site),
        "port": PORT,
        "health_listen": [HEALTH_ADDRESS],
        "health_port": HEALTH_PORT,
        "tls_cert": str(pki.server_cert),
        "tls_key": str(pki.server_key),
    }


def introspect_spec(plan: AddressPlan, site: NodePlan, node_dir: Path,
                    pki: Paths) -> DaemonSpec:
    conf = node_dir / "introspect.json"
    argv = [sys.executable, "-m", "lab.introspect", "--config", str(conf)]
    return DaemonSpec(
        name="introspect", node=site.name, netns=site.netns, config_path=conf,
        config=json.dumps(introspect_config(plan, site, node_dir, pki), indent=2),
        check_argv=[sys.executable, "-m", "lab.introspect", "--check-config", str(conf)],
        argv=argv,
        log_path=node_dir / "introspect.log",
        batch_check=True,
    )
