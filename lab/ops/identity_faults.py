"""Identity faults (in the fault registry beside the others, lab.ops.faults): what breaks
trust at a site while routing stays perfectly happy.

* `stale`: an nftables table in the site's namespace drops only its traffic to and from
  the issuer; DNS and clients are untouched, the site's revocation state ages.
* `issuer` (at the issuer node): the issuer process is killed; every site goes stale.
* `wrong-key`: the site serves a JWKS the issuer does not hold (a JWKS override file the
  site's replica prefers): valid tokens are rejected there.
* `expired-cert`: the site's introspection service is restarted presenting a certificate
  from the lab CA that expired yesterday.
* `contain`: a compromised site withdrawn at once -- its health daemon is killed, so the
  speaker's watchdog withdraws the routes within milliseconds, and nothing announces again
  until `heal` restarts it.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass

from lab.host.labs import Lab
from lab.model import names
from lab.model.errors import LabError
from lab.model.plan import NodePlan
from lab.ops.faults import Fault, NftTableFault, ProcessFault, Record, _now, _restore
from lab.render.base import Readiness
from lab.render.credentials import SERVICE_NAME, paths
from lab.render.credentials import server_addresses as cert_addresses
from lab.shared import identity, pki
from lab.shared.atomic import write_atomic, write_json_atomic

STALE_TABLE = "anycast_lab_stale"
STALE_RULES = """table inet {table} {{
  chain in {{ type filter hook input priority -300; ip saddr {v4} drop; ip6 saddr {v6} drop; }}
  chain out {{ type filter hook output priority -300; ip daddr {v4} drop; ip6 daddr {v6} drop; }}
}}
"""
EXPIRED_CERT, EXPIRED_KEY = "expired-cert.pem", "expired-cert.key"


def _issuer(lab: Lab) -> NodePlan:
    assert lab.plan is not None
    if lab.plan.issuer is None:
        raise LabError(f"lab '{lab.name}' has no issuer: identity faults need a topology "
                       "with `issuer:`")
    return lab.plan.issuer


@dataclass(frozen=True)
class IssuerPartition(NftTableFault):
    """Drop only the site's packets to and from the issuer's addresses."""

    table = STALE_TABLE
    refused = "the issuer partition"

    def ruleset(self, lab: Lab, site: NodePlan) -> str:
        issuer = _issuer(lab)
        return STALE_RULES.format(table=STALE_TABLE, v4=issuer.interfaces[0].v4.ip,
                                  v6=issuer.interfaces[0].v6.ip)

    def healed(self, site: NodePlan) -> str:
        return f"{site.name} reaches the issuer again (nftables table removed)"


@dataclass(frozen=True, kw_only=True)
class IssuerStop(ProcessFault):
    """Kill the issuer; made at the issuer node (`fail ISSUER issuer`)."""

    @property
    def at_issuer(self) -> bool:
        return True


@dataclass(frozen=True)
class WrongKey(Fault):
    """The site serves a JWKS holding a key the issuer never had."""

    def inject(self, lab: Lab, site: NodePlan) -> Record:
        _issuer(lab)
        rogue = identity.jwks_of([pki.create_signing_key()])
        entry = {"kid": rogue["keys"][0]["kid"], **_now()}
        write_json_atomic(names.node_dir(lab.journal.dir, site.name) / names.JWKS_OVERRIDE,
                          rogue)
        return entry

    def heal(self, lab: Lab, site: NodePlan, records: list[Record],
             timeout_s: float) -> Readiness:
        (names.node_dir(lab.journal.dir, site.name) / names.JWKS_OVERRIDE).unlink(
            missing_ok=True)
        return Readiness(True, f"{site.name} serves the issuer's keys again")


def _set_cert(lab: Lab, site: NodePlan, expired: bool) -> None:
    """Point the site's introspection config at the expired certificate or back."""
    d = names.node_dir(lab.journal.dir, site.name)
    conf_path = d / names.INTROSPECT_CONF
    conf = json.loads(conf_path.read_text())
    p = paths(lab.journal.dir)
    if expired:
        assert lab.plan is not None
        ca_key, ca_cert = p.ca_key.read_bytes(), p.ca_cert.read_bytes()
        key, cert = pki.issue_server_cert(ca_key, ca_cert, [SERVICE_NAME],
                                          cert_addresses(lab.plan), expired=True)
        write_atomic(d / EXPIRED_KEY, key, 0o600)
        write_atomic(d / EXPIRED_CERT, cert)
        conf["tls_cert"], conf["tls_key"] = str(d / EXPIRED_CERT), str(d / EXPIRED_KEY)
    else:
        conf["tls_cert"], conf["tls_key"] = str(p.server_cert), str(p.server_key)
    write_json_atomic(conf_path, conf, sort_keys=False)


@dataclass(frozen=True)
class ExpiredCert(Fault):
    """Restart the site's introspection service with an expired certificate."""

    def inject(self, lab: Lab, site: NodePlan) -> Record:
        from lab.host import procs

        _set_cert(lab, site, expired=True)
        entry = _now()
        record = procs.running(lab.journal, f"introspect@{site.name}")
        if record is not None:
            procs.stop(record, grace_s=2.0)
        procs.restart(lab.journal, f"introspect@{site.name}")
        return entry

    def heal(self, lab: Lab, site: NodePlan, records: list[Record],
             timeout_s: float) -> Readiness:
        from lab.host import procs

        _set_cert(lab, site, expired=False)
        record = procs.running(lab.journal, f"introspect@{site.name}")
        if record is not None:
            procs.stop(record, grace_s=2.0)
        return _restore(lab, f"introspect@{site.name}", [], timeout_s)

    @property
    def heal_rank(self) -> int:
        return 2  # with the introspection service, before the speaker and healthd


IDENTITY_FAULTS: list[Fault] = [
    IssuerPartition("stale", "cut the site off from the issuer (nftables: only the "
                    "site<->issuer path); its revocation state goes stale"),
    IssuerStop("issuer", "kill the issuer (at the issuer node: `fail ISSUER issuer`); "
               "every site goes stale", daemon="issuer", sig=signal.SIGKILL),
    WrongKey("wrong-key", "the site serves a JWKS the issuer does not hold: valid tokens "
             "are rejected there"),
    ExpiredCert("expired-cert", "restart the site's introspection service with a "
                "certificate from the lab CA that expired yesterday"),
    ProcessFault("contain", "contain a compromised site: kill its health daemon, so the "
                 "speaker withdraws at once and nothing announces until `heal`",
                 daemon="healthd", sig=signal.SIGKILL),
]
