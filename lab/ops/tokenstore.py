"""`anycast-lab token`: issue lab tokens, revoke them on every site, list them.

Issued tokens are recorded by metadata only (jti, subject, client, scope, expiry) in
<lab dir>/pki/tokens.jsonl; the token itself is printed once and never stored.

Input is checked before any lab is opened: a lifetime of 1 s to MAX_TTL_S, a token id
of 1 to MAX_JTI printable characters.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt

from lab.model.errors import BadInput
from lab.model.names import node_dir
from lab.model.plan import AddressPlan
from lab.render.credentials import AUDIENCE, ISSUER, paths
from lab.render.introspect import revocation_path
from lab.shared import revocation, tokens

# A lab token lives no longer than its lab; a year is longer than any lab, and keeps
# `exp` where every clock function (and a 32-bit time_t, until 2038) can show it.
MAX_TTL_S = 365 * 24 * 3600
# Our token ids are 32 hex digits; 256 characters leaves room for other issuers' ids and
# keeps every site's revocation list small.
MAX_JTI = 256


def check_ttl(ttl_s: int) -> int:
    """A token lifetime in seconds, 1 to MAX_TTL_S; BadInput otherwise."""
    if not 1 <= ttl_s <= MAX_TTL_S:
        shown = str(ttl_s) if len(str(ttl_s)) <= 20 else f"a {len(str(ttl_s))}-digit number"
        raise BadInput(f"--ttl must be between 1 and {MAX_TTL_S} seconds (one year); "
                       f"got {shown}")
    return ttl_s


def issue(lab_dir: Path, client_id: str, scope: str, ttl_s: int,
          sub: str | None = None) -> tuple[str, dict[str, Any]]:
    p = paths(lab_dir)
    check_ttl(ttl_s)
    token, claims = tokens.issue_token(p.signing_key.read_bytes(), issuer=ISSUER,
                                       audience=AUDIENCE, client_id=client_id,
                                       sub=sub or client_id, scope=scope, ttl_s=ttl_s)
    with p.tokens.open("a") as f:
        f.write(json.dumps({k: claims[k] for k in ("jti", "sub", "client_id", "scope",
                                                    "iat", "exp")}) + "\n")
    return token, claims


def jti_of(text: str) -> str:
    """A JTI as given, or the `jti` claim of a token (read without trusting it);
    BadInput for anything that cannot be a token id."""
    text = text.strip()
    if not text:
        raise BadInput("give the id (jti) of the token to revoke, or the token itself; "
                       "got an empty string")
    if text.count(".") == 2:
        try:
            claims = jwt.decode(text, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise BadInput(f"that is neither a token id nor a readable token: {exc}") from exc
        if not isinstance(claims, dict) or not isinstance(claims.get("jti"), str) \
                or not claims["jti"]:
            raise BadInput("the token has no 'jti' claim, so it cannot be revoked by id")
        text = claims["jti"]
    if len(text) > MAX_JTI or not text.isprintable() or any(c.isspace() for c in text):
        raise BadInput(f"a token id is 1 to {MAX_JTI} printable characters without spaces "
                       f"(ours are 32 hex digits); got {len(text)} characters")
    return text


def revoke_sites(lab_dir: Path, plan: AddressPlan,
                 jti: str) -> tuple[dict[str, int], list[str]]:
    """Add the jti to every site's revocation list that does not hold it yet.

    Returns each list's version afterwards, and the sites where the jti was already
    revoked: their list is left as it was (same version), so revoking twice is a no-op.
    """
    versions, already = {}, []
    for site in plan.by_role("site"):
        path = revocation_path(node_dir(lab_dir, site.name))
        path.parent.mkdir(parents=True, exist_ok=True)
        versions[site.name], added = revocation.revoke_if_new(path, jti)
        if not added:
            already.append(site.name)
    return versions, already


def revoke(lab_dir: Path, plan: AddressPlan, jti: str) -> dict[str, int]:
    """Revoke the jti on every site (see `revoke_sites`); returns each list's version."""
    return revoke_sites(lab_dir, plan, jti)[0]


def revoke_text(jti: str, versions: dict[str, int], already: list[str]) -> str:
    """One sentence saying where the jti was revoked now and where it already was."""
    def listed(sites: list[str]) -> str:
        return ", ".join(f"{site} v{versions[site]}" for site in sites)

    new = [site for site in versions if site not in already]
    if not new:
        return (f"{jti} was already revoked on all {len(versions)} sites; nothing changed "
                f"({listed(already)})")
    text = f"revoked {jti} on {len(new)} site{'s' if len(new) != 1 else ''}: {listed(new)}"
    if already:
        text += f"; already revoked on {listed(already)} (unchanged)"
    return text


def listing(lab_dir: Path, plan: AddressPlan) -> list[dict[str, Any]]:
    p = paths(lab_dir)
    if not p.tokens.exists():
        return []
    lists = {s.name: revocation.read_revocations(
        revocation_path(node_dir(lab_dir, s.name)))[1] for s in plan.by_role("site")}
    now = time.time()
    out = []
    for line in p.tokens.read_text().splitlines():
        try:
            meta = json.loads(line)
        except ValueError:  # a line torn by a crash while it was appended
            continue
        if not isinstance(meta, dict) or not isinstance(meta.get("jti"), str) \
                or not isinstance(meta.get("exp"), int | float):
            continue
        revoked_at = [site for site, revoked in lists.items() if meta["jti"] in revoked]
        meta["revoked_on"] = revoked_at
        meta["expired"] = meta["exp"] <= now
        out.append(meta)
    return out


def expiry_text(exp: float) -> str:
    """An expiry time as local HH:MM:SS, or the raw number where the clock cannot show it
    (a record written before lifetimes were bounded)."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(exp))
    except (OverflowError, OSError, ValueError):
        return str(exp)
