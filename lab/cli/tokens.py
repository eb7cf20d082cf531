"""`token issue`, `token revoke`, `token list`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from lab.cli import ui
from lab.cli.main import JsonOpt, LabOpt, app
from lab.host.lock import locked

token_app = typer.Typer(help="Issue, revoke and list the lab's tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("issue")
def token_issue(client: Annotated[str, typer.Option("--client", help="client id")],
                scope: Annotated[str, typer.Option("--scope", help="space-separated scopes")]
                = "read",
                ttl: Annotated[int, typer.Option("--ttl", help="lifetime in seconds")] = 3600,
                sub: Annotated[str | None, typer.Option("--sub", help="subject")] = None,
                lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Issue a signed token (printed once; only its metadata is kept)."""
    from lab.host import labs
    from lab.ops import tokenstore

    tokenstore.check_ttl(ttl)
    opened = labs.open_lab(lab)
    token, claims = tokenstore.issue(opened.journal.dir, client, scope, ttl, sub, opened.plan)
    if json_out:
        ui.emit_json({"token": token, "claims": claims})
    else:
        ui.err.print(f"jti {claims['jti']}, client {client}, scope '{scope}', expires in "
                     f"{ttl} s", markup=False, highlight=False)
        print(token)


@token_app.command("revoke")
def token_revoke(what: Annotated[str, typer.Argument(help="a token id (jti) or a token")],
                 lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Revoke a token: at the issuer, from which every site syncs (the answer says when
    each site held it), or, in a lab without an issuer, in every site's list. Revoking it
    again changes nothing."""
    from lab.host import labs
    from lab.ops import tokenstore

    jti = tokenstore.jti_of(what)
    opened = labs.open_lab(lab)
    assert opened.plan is not None
    extra: dict = {}
    doc: dict | None = None
    with locked(opened.name, "token revoke"):
        if opened.plan.issuer is not None:
            doc = tokenstore.revoke_via_issuer(opened.journal.dir, opened.plan, jti)
            versions = doc["versions"]
            already = [] if doc["added"] else list(versions)
            extra = {"issuer_version": doc["version"], "propagated_ms": doc["propagated_ms"]}
        else:
            versions, already = tokenstore.revoke_sites(opened.journal.dir, opened.plan, jti)
    if json_out:
        ui.emit_json({"jti": jti, "versions": versions,
                      "already_revoked": bool(versions) and len(already) == len(versions),
                      "already_revoked_on": already, **extra})
    else:
        text = (tokenstore.issuer_revoke_text(jti, doc) if doc is not None
                else tokenstore.revoke_text(jti, versions, already))
        ui.out.print(text, markup=False, highlight=False, soft_wrap=True)


@token_app.command("list")
def token_list(lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Tokens issued in this lab, and where each is revoked."""
    from lab.host import labs
    from lab.ops import tokenstore

    opened = labs.open_lab(lab)
    assert opened.plan is not None
    items = tokenstore.listing(opened.journal.dir, opened.plan)
    if json_out:
        ui.emit_json({"tokens": items})
        return
    ui.out.print(ui.table("tokens", ["jti", "client", "sub", "scope", "expires", "revoked on"], [
        [*(escape(str(t[k])) for k in ("jti", "client_id", "sub", "scope")),
         "expired" if t["expired"] else tokenstore.expiry_text(t["exp"]),
         ", ".join(t["revoked_on"]) or "-"] for t in items], copyable=("jti",)))
