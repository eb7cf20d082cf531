"""Our RFC 7662 token-introspection service on every site: HTTPS on port 443 of the
anycast and the site's unicast addresses, the site's own revocation list. Ready when its
/healthz answers 200 for the site over TLS on the site's unicast address."""

from __future__ import annotations

import json
import socket
import ssl
import sys
from pathlib import Path

from lab.model import names
from lab.model.plan import AddressPlan, NodePlan
from lab.render import credentials
from lab.render.base import DaemonSpec, Readiness, ReadyTarget
from lab.render.credentials import AUDIENCE, ISSUER, SERVICE_NAME, Paths
from lab.render.unbound import site_listen
from lab.shared.nsnet import socket_in

PORT = 443
READY_TIMEOUT_S = 1.0  # one /healthz call; the service answers in milliseconds
# The health daemon's own listener: loopback of the site's namespace, reachable by nothing
# outside it, so client connections can never use up what the health checks need.
HEALTH_ADDRESS, HEALTH_PORT = "127.0.0.1", 8443


def revocation_path(node_dir: Path) -> Path:
    return node_dir / names.REVOCATION


def introspect_config(plan: AddressPlan, site: NodePlan, node_dir: Path,
                      pki: Paths, replica: dict | None = None) -> dict:
    extra = {"replica": replica} if replica is not None else {}
    return {**extra,
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
                    pki: Paths, replica: dict | None = None,
                    python: str = sys.executable) -> DaemonSpec:
    conf = node_dir / names.INTROSPECT_CONF
    argv = [python, "-m", "lab.sites.introspect", "--config", str(conf)]
    return DaemonSpec(
        name="introspect", node=site.name, netns=site.netns, config_path=conf,
        config=json.dumps(introspect_config(plan, site, node_dir, pki, replica), indent=2),
        check_argv=[python, "-m", "lab.sites.introspect", "--check-config", str(conf)],
        argv=argv,
        log_path=node_dir / names.log_name("introspect"),
        batch_check=True,
    )


def introspect_ready(t: ReadyTarget) -> Readiness:
    """GET /healthz on the site's unicast address, from inside the site's namespace, over
    TLS checked against the lab CA: ready when it answers 200 naming the site."""
    address = str(t.node.interfaces[0].v4.ip)
    try:
        status, body = _get_healthz(t.node.netns, address, credentials.paths(t.lab_dir).ca_cert)
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Readiness(False, f"no /healthz answer on {address}:{PORT} "
                                f"({reason or type(exc).__name__})")
    if status == 200 and body.get("site") == t.node.name:
        return Readiness(True, f"answers /healthz on {address}:{PORT}")
    return Readiness(False, f"/healthz on {address}:{PORT} answered {status} "
                            f"{body.get('status', '')}".rstrip())


def _get_healthz(netns: str, address: str, ca_file: Path) -> tuple[int, dict]:
    """One HTTP/1.1 GET /healthz; returns the status code and the JSON body."""
    context = ssl.create_default_context(cafile=str(ca_file))
    raw = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(READY_TIMEOUT_S)
    with raw:
        raw.connect((address, PORT))
        with context.wrap_socket(raw, server_hostname=SERVICE_NAME) as tls:
            tls.sendall(f"GET /healthz HTTP/1.1\r\nHost: {SERVICE_NAME}\r\n"
                        "Connection: close\r\n\r\n".encode())
            data = b""
            while len(data) < 65536:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ValueError(f"not an HTTP answer: {head[:40]!r}")
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        doc = {}
    return int(status_line[1]), doc if isinstance(doc, dict) else {}
