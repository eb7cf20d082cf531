"""Observing a running lab for a step's expectations: the `status` report (only when an
expectation needs it), introspection answers (only for the tokens asked about) and the
identity audit (only when an expectation asks about it). The background prober's samples
come from the runner."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import urllib.parse
from typing import Any

from lab.host.labs import Lab
from lab.observe import status
from lab.render.credentials import SERVICE_NAME, client_secret, paths
from lab.scenario import model as m
from lab.scenario.actions import Tokens
from lab.scenario.evaluate import Observation, token_key
from lab.shared.nsnet import socket_in

STATUS_KINDS = (m.ClientExpect, m.SpreadExpect, m.SiteExpect, m.RouterExpect,
                m.SessionExpect, m.IdentityExpect)
INTROSPECT_TIMEOUT_S = 2.0


def observe(lab: Lab, expectations: list[Any], tokens: Tokens, base: Observation) -> Observation:
    """One look at the lab for these expectations (samples and instants from `base`)."""
    obs = Observation(samples=base.samples, t_action=base.t_action, rate_hz=base.rate_hz,
                      by_kind=base.by_kind, rates=base.rates, breaks=base.breaks)
    if any(isinstance(e, STATUS_KINDS) for e in expectations):
        obs.status = status.collect(
            lab, fabric=False,
            identity=any(isinstance(e, m.IdentityExpect) for e in expectations))
    if any(isinstance(e, m.AuditExpect) for e in expectations):
        from lab.observe.audit import audit

        assert lab.topology is not None and lab.plan is not None
        obs.audit = audit(lab.topology, lab.plan, lab.journal.dir)
    for exp in expectations:
        if isinstance(exp, m.TokenExpect):
            obs.tokens[token_key(exp)] = introspect(lab, tokens, exp)
    return obs


class _HttpsIn(http.client.HTTPSConnection):
    """HTTPS from inside a namespace: the TCP socket is made there (lab.shared.nsnet),
    the rest is the standard library's client."""

    def __init__(self, netns: str, address: str, context: ssl.SSLContext,
                 timeout: float) -> None:
        super().__init__(address, 443, context=context, timeout=timeout)
        self._netns = netns
        self._tls = context

    def connect(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket_in(self._netns, family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect((self.host, self.port))
            self.sock = self._tls.wrap_socket(sock, server_hostname=SERVICE_NAME)
        except BaseException:
            sock.close()
            raise


def introspect(lab: Lab, tokens: Tokens, exp: m.TokenExpect) -> dict[str, Any]:
    """One introspection request for the token (client lab-admin): at a site's own
    address from inside the site, or at the anycast address from a client
    ({"active", "site", "error"}; the site from the answer's X-Anycast-Site)."""
    assert lab.plan is not None
    if exp.at is not None:
        node = lab.plan.nodes[exp.at]
        address = str(node.interfaces[0].v4.ip)
    else:
        node = lab.plan.nodes[exp.via or ""]
        address = str(lab.plan.anycast4.network_address)
    lab_dir = lab.journal.dir
    p = paths(lab_dir)
    token = tokens.file(lab, exp.token).read_text().strip()
    auth = base64.b64encode(f"lab-admin:{client_secret(lab_dir, 'lab-admin')}".encode())
    body = urllib.parse.urlencode({"token": token})
    context = ssl.create_default_context(cafile=str(p.ca_cert))
    conn = _HttpsIn(node.netns, address, context, INTROSPECT_TIMEOUT_S)
    try:
        conn.request("POST", "/introspect", body=body, headers={
            "Authorization": f"Basic {auth.decode()}",
            "Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        site = response.getheader("X-Anycast-Site")
        data = response.read(65536)
        if response.status != 200:
            return {"active": None, "site": site, "error": f"HTTP {response.status}"}
        answer = json.loads(data)
    except (OSError, ssl.SSLError, http.client.HTTPException, ValueError) as exc:
        return {"active": None, "site": None, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()
    if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
        return {"active": None, "site": site, "error": "not an introspection answer"}
    return {"active": answer["active"], "site": site, "error": None}
