"""Identity commands: `audit` (identity consistency of every site, one table, exit 1 on
divergence) and `contain SITE` (withdraw a compromised site at once, measured)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from lab.cli import ui
from lab.cli.main import JsonOpt, LabOpt, app
from lab.host.lock import locked

SHOWN = {"kids": "kids", "revocation_version": "rev. version", "revocation_age_s": "rev. age",
         "revoked_canary": "revoked canary", "active_canary": "active canary",
         "tls_spki": "TLS SPKI", "tls_not_after": "TLS notAfter", "tls_verified": "TLS verifies",
         "dns_identity": "DNS id", "soa_serial": "SOA serial"}


def _cell(prop: str, value: Any) -> str:
    if value is None:
        return "-"
    if prop == "kids":
        return ", ".join(k[:8] for k in value) or "none"
    if prop == "revocation_version":
        return f"v{value}"
    if prop == "revocation_age_s":
        return f"{value:.1f} s"
    if prop == "revoked_canary":
        return "active" if value else "inactive"
    if prop == "active_canary":
        return "active" if value else "inactive"
    if prop == "tls_not_after":
        return str(value)[:10]
    if prop == "tls_verified":
        return "yes" if value else "no"
    return str(value)


@app.command()
def audit(lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Compare every site's identity state over its unicast address (keys, revocation,
    canaries, TLS certificate, DNS identity and SOA serial); exit 1 on any divergence."""
    from lab.host import labs
    from lab.observe.audit import PROPERTIES
    from lab.observe.audit import audit as run_audit

    opened = labs.open_lab(lab)
    assert opened.plan is not None and opened.topology is not None
    doc = run_audit(opened.topology, opened.plan, opened.journal.dir)
    if json_out:
        ui.emit_json(doc)
    else:
        rows = []
        for site, facts in doc["sites"].items():
            bad = doc["divergent"].get(site, {})
            rows.append([site] + [
                f"[red]✗ {escape(_cell(p, facts.get(p)))}[/red]" if p in bad
                else escape(_cell(p, facts.get(p))) for p in PROPERTIES])
        issuer = doc["issuer"]
        title = "audit" + (f" (issuer: v{issuer.get('version')}, kids "
                           f"{', '.join(k[:8] for k in issuer.get('kids') or [])})"
                           if issuer and issuer.get("reachable") else
                           " (issuer unreachable)" if issuer else "")
        ui.out.print(ui.table(title, ["site", *(SHOWN[p] for p in PROPERTIES)], rows))
        for site, bad in doc["divergent"].items():
            for prop, why in bad.items():
                ui.out.print(f"{site}: {SHOWN.get(prop, prop)}: {why}", markup=False,
                             highlight=False)
        if not doc["divergent"]:
            ui.out.print("every site agrees", highlight=False)
    if doc["divergent"]:
        raise typer.Exit(1)


@app.command()
def contain(site: Annotated[str, typer.Argument(help="site name")],
            lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Contain a compromised site: withdraw it at once (its health daemon is killed, so
    the speaker's watchdog withdraws; nothing announces until `heal SITE`) and measure
    the time until no client reaches it; exit 1 if a client still does after 10 s."""
    from lab.host import labs
    from lab.measure.contain import contain as run_contain

    opened = labs.open_lab(lab)
    with locked(opened.name, "contain"):
        doc = run_contain(opened, site)
    if json_out:
        ui.emit_json(doc)
    else:
        took = doc["unreached_after_ms"]
        ui.out.print(f"{site} contained: " + (
            f"no client reaches it {took:.0f} ms after the withdrawal began "
            f"(before: {', '.join(doc['clients_before']) or 'no client'})" if took is not None
            else f"clients still reach it after {doc['deadline_s']:g} s: "
                 f"{', '.join(doc['still_reaching'])}") + f"; undo with `anycast-lab heal {site}`",
            markup=False, highlight=False)
    if doc["unreached_after_ms"] is None:
        raise typer.Exit(1)
