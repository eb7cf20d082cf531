"""`anycast-lab audit`: is every site as trustworthy as every other? Each site is asked over
its own unicast address (never the anycast one, which reaches only the nearest), from a
vantage inside the lab (the namespace of the issuer's router, or of the first router):

* its replicated identity state (`GET /identity`): kid set, revocation version and age;
* the health checks' canaries through `POST /introspect`: the revoked one must be
  inactive, the active one active (a site with the wrong keys rejects valid tokens);
* the TLS certificate it presents: SHA-256 of its public key (SPKI), notAfter, whether it
  verifies against the lab CA;
* its DNS identity (`id.server` CH TXT must name the site) and the lab zone's SOA serial.

`divergences` (pure) compares them: against the issuer where it has the answer (kid set,
revocation version), against a bound (age, notAfter), against the site's own name, and
otherwise against the value most sites have (SPKI, SOA serial). Reading only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lab.model import names
from lab.model.plan import AddressPlan, NodePlan
from lab.model.topology import Topology
from lab.render import credentials
from lab.render.credentials import ISSUER_NAME, SERVICE_NAME
from lab.render.issuer import PORT as ISSUER_PORT
from lab.render.issuer import issuer_address
from lab.shared import https
from lab.shared.dnsid import ask_identity
from lab.shared.nsnet import socket_in

PROPERTIES = ("kids", "revocation_version", "revocation_age_s", "revoked_canary",
              "active_canary", "tls_spki", "tls_not_after", "tls_verified", "dns_identity",
              "soa_serial")
TIMEOUT_S = 1.5


def vantage(plan: AddressPlan) -> NodePlan:
    """Where the audit asks from: the issuer's router, else the first router."""
    if plan.issuer is not None and plan.issuer.router is not None:
        return plan.nodes[plan.issuer.router]
    return plan.by_role("router")[0]


def _cert_facts(der: bytes) -> dict[str, Any]:
    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"tls_spki": hashlib.sha256(spki).hexdigest()[:16],
            "tls_not_after": cert.not_valid_after_utc.isoformat()}


def _introspect(netns: str, address: str, ca: Path, secret: str, token: str,
                context: ssl.SSLContext | None) -> bool | None:
    answer = https.request(address, 443, "POST", "/introspect", ca_file=ca,
                           server_name=SERVICE_NAME, netns=netns, context=context,
                           form=urllib.parse.urlencode({"token": token}),
                           headers={"Authorization": https.basic("healthd", secret)},
                           timeout_s=TIMEOUT_S)
    body = answer.body
    return body.get("active") if answer.status == 200 and isinstance(body, dict) else None


def _soa_serial(netns: str, address: str) -> int | None:
    sock = socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((address, 53))
        query = dns.message.make_query(names.LAB_ZONE, dns.rdatatype.SOA)
        response = dns.query.udp(query, address, timeout=TIMEOUT_S, sock=sock)
        for rrset in response.answer:
            for rdata in rrset:
                return int(rdata.serial)
    except (OSError, dns.exception.DNSException):
        return None
    finally:
        sock.close()
    return None


def site_facts(plan: AddressPlan, lab_dir: Path, site: NodePlan) -> dict[str, Any]:
    """Everything the audit asks one site, each value or None with an error beside it."""
    netns = vantage(plan).netns
    address = str(site.interfaces[0].v4.ip)
    p = credentials.paths(lab_dir)
    facts: dict[str, Any] = dict.fromkeys(PROPERTIES)
    errors: dict[str, str] = {}
    try:
        ident = https.request(address, 443, "GET", "/identity", ca_file=p.ca_cert,
                              server_name=SERVICE_NAME, netns=netns, timeout_s=TIMEOUT_S)
        doc = ident.body if isinstance(ident.body, dict) else {}
        facts["tls_verified"] = True
        facts["kids"] = sorted(doc.get("kids") or []) if doc.get("replicated") else None
        rev = doc.get("revocation") or {}
        facts["revocation_version"] = rev.get("version")
        facts["revocation_age_s"] = rev.get("age_s") if doc.get("replicated") else None
    except ssl.SSLError as exc:
        facts["tls_verified"] = False
        errors["tls_verified"] = getattr(exc, "verify_message", None) or str(exc)
    except (OSError, ValueError) as exc:
        errors["kids"] = errors["revocation_version"] = str(exc)
    # The certificate as presented, whether it verifies or not.
    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    try:
        seen = https.request(address, 443, "GET", "/identity", ca_file=p.ca_cert,
                             server_name=SERVICE_NAME, netns=netns, timeout_s=TIMEOUT_S,
                             context=unverified)
        facts.update(_cert_facts(seen.peer_cert))
        if facts["tls_verified"] is False and isinstance(seen.body, dict):
            doc = seen.body
            facts["kids"] = sorted(doc.get("kids") or []) if doc.get("replicated") else None
            facts["revocation_version"] = (doc.get("revocation") or {}).get("version")
            facts["revocation_age_s"] = (doc.get("revocation") or {}).get("age_s")
    except (OSError, ValueError) as exc:
        errors["tls_spki"] = str(exc)
    secret = p.healthd_secret.read_text().strip()
    for prop, token_file in (("revoked_canary", p.canary_revoked),
                             ("active_canary", p.canary_active)):
        try:
            # Past a certificate that does not verify (reported above), to see the answers.
            facts[prop] = _introspect(netns, address, p.ca_cert, secret,
                                      token_file.read_text().strip(),
                                      unverified if facts["tls_verified"] is False else None)
        except (OSError, ValueError) as exc:
            errors[prop] = str(exc)
    identity = ask_identity(netns, address, timeout=TIMEOUT_S)
    facts["dns_identity"] = identity.site
    if identity.error:
        errors["dns_identity"] = identity.error
    facts["soa_serial"] = _soa_serial(netns, address)
    facts["errors"] = errors
    return facts


def issuer_facts(plan: AddressPlan, lab_dir: Path) -> dict[str, Any] | None:
    """The issuer's own word (`GET /state`): its revocation version and kid set."""
    issuer = plan.issuer
    if issuer is None:
        return None
    try:
        answer = https.request(issuer_address(issuer), ISSUER_PORT, "GET", "/state",
                               ca_file=credentials.paths(lab_dir).ca_cert,
                               server_name=ISSUER_NAME, netns=vantage(plan).netns,
                               timeout_s=TIMEOUT_S)
    except (OSError, ValueError) as exc:
        return {"reachable": False, "error": str(exc)}
    body = answer.body if isinstance(answer.body, dict) else {}
    return {"reachable": answer.status == 200, "version": body.get("version"),
            "kids": sorted(body.get("kids") or [])}


def _majority(values: list[Any]) -> Any:
    present = [repr(v) for v in values if v is not None]
    if not present:
        return None
    top, count = Counter(present).most_common(1)[0]
    return next(v for v in values if repr(v) == top) if count * 2 > len(values) else None


def divergences(sites: dict[str, dict[str, Any]], issuer: dict[str, Any] | None, *,
                max_staleness_s: float, now: dt.datetime) -> dict[str, dict[str, str]]:
    """{site: {property: why it diverges}}; a site absent from the result agrees."""
    out: dict[str, dict[str, str]] = {}

    def mark(site: str, prop: str, why: str) -> None:
        out.setdefault(site, {})[prop] = why

    ref_kids = issuer.get("kids") if issuer and issuer.get("reachable") else None
    ref_version = issuer.get("version") if issuer and issuer.get("reachable") else None
    majority = {prop: _majority([f.get(prop) for f in sites.values()])
                for prop in ("kids", "revocation_version", "tls_spki", "soa_serial")}
    for site, f in sites.items():
        errors = f.get("errors") or {}
        for prop, why in errors.items():
            mark(site, prop, why)
        kids_ref = ref_kids if ref_kids is not None else majority["kids"]
        if f.get("kids") is not None and kids_ref is not None and f["kids"] != kids_ref:
            mark(site, "kids", "not the issuer's key set" if ref_kids is not None
                 else "differs from most sites")
        version_ref = ref_version if ref_version is not None else majority["revocation_version"]
        if f.get("revocation_version") is not None and version_ref is not None \
                and f["revocation_version"] != version_ref:
            mark(site, "revocation_version", f"holds v{f['revocation_version']}, "
                 f"{'issuer' if ref_version is not None else 'most sites'} v{version_ref}")
        age = f.get("revocation_age_s")
        if isinstance(age, int | float) and age > max_staleness_s:
            mark(site, "revocation_age_s", f"{age:.1f} s old (> {max_staleness_s:g} s)")
        if f.get("revoked_canary") is True:
            mark(site, "revoked_canary", "a revoked token is active here")
        elif f.get("revoked_canary") is None and "revoked_canary" not in errors:
            mark(site, "revoked_canary", "no introspection answer")
        if f.get("active_canary") is False:
            mark(site, "active_canary", "a valid token is rejected here")
        elif f.get("active_canary") is None and "active_canary" not in errors:
            mark(site, "active_canary", "no introspection answer")
        if f.get("tls_verified") is False:
            mark(site, "tls_verified", errors.get("tls_verified", "does not verify"))
        not_after = f.get("tls_not_after")
        if not_after and dt.datetime.fromisoformat(not_after) <= now:
            mark(site, "tls_not_after", "expired")
        for prop in ("tls_spki", "soa_serial"):
            if f.get(prop) is not None and majority[prop] is not None \
                    and f[prop] != majority[prop]:
                mark(site, prop, "differs from most sites")
            elif f.get(prop) is None and prop not in errors:
                mark(site, prop, "no answer")
        if f.get("dns_identity") != site and "dns_identity" not in errors:
            mark(site, "dns_identity", f"answers as {f.get('dns_identity')!r}")
    return out


def audit(topo: Topology, plan: AddressPlan, lab_dir: Path) -> dict[str, Any]:
    """The audit's JSON document: every site's facts, the issuer's, what diverges."""
    sites = plan.by_role("site")
    with ThreadPoolExecutor(max_workers=min(8, len(sites) + 1)) as pool:
        jobs = {s.name: pool.submit(site_facts, plan, lab_dir, s) for s in sites}
        issuer_job = pool.submit(issuer_facts, plan, lab_dir)
        facts = {name: job.result() for name, job in jobs.items()}
        issuer = issuer_job.result()
    diverging = divergences(facts, issuer,
                            max_staleness_s=topo.identity.max_staleness_ms / 1000,
                            now=dt.datetime.now(dt.UTC))
    return {"lab": plan.lab, "vantage": vantage(plan).name, "at": time.time(),
            "issuer": issuer, "sites": facts, "divergent": diverging,
            "ok": not diverging}
