"""`anycast-lab token`: issue lab tokens, revoke them on every site, list them.

Issued tokens are recorded by metadata only (jti, subject, client, scope, expiry) in
<lab dir>/pki/tokens.jsonl; the token itself is printed once and never stored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt

from lab.credentials import AUDIENCE, ISSUER, paths
from lab.daemons.introspect import revocation_path
from lab.daemons.launch import node_dir
from lab.errors import BadInput
from lab.introspect import revocation, tokens
from lab.plan import AddressPlan


def issue(lab_dir: Path, client_id: str, scope: str, ttl_s: int,
          sub: str | None = None) -> tuple[str, dict[str, Any]]:
    p = paths(lab_dir)
    if ttl_s <= 0:
        raise BadInput(f"--ttl must be a positive number of seconds (got {ttl_s})")
    token, claims = tokens.issue_token(p.signing_key.read_bytes(), issuer=ISSUER,
                                       audience=AUDIENCE, client_id=client_id,
                                       sub=sub or client_id, scope=scope, ttl_s=ttl_s)
    with p.tokens.open("a") as f:
        f.write(json.dumps({k: claims[k] for k in ("jti", "sub", "client_id", "scope",
                                                    "iat", "exp")}) + "\n")
    return token, claims


def jti_of(text: str) -> str:
    """A JTI as given, or the `jti` claim of a token (read without trusting it)."""
    if text.count(".") != 2:
        return text
    try:
        claims = jwt.decode(text, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise BadInput(f"that is neither a token id nor a readable token: {exc}") from exc
    if not isinstance(claims.get("jti"), str):
        raise BadInput("the token has no 'jti' claim, so it cannot be revoked by id")
    return claims["jti"]


def revoke(lab_dir: Path, plan: AddressPlan, jti: str) -> dict[str, int]:
    """Add the jti to every site's revocation list; returns each list's new version."""
    versions = {}
    for site in plan.by_role("site"):
        path = revocation_path(node_dir(lab_dir, site.name))
        path.parent.mkdir(parents=True, exist_ok=True)
        versions[site.name] = revocation.revoke(path, jti)
    return versions


def listing(lab_dir: Path, plan: AddressPlan) -> list[dict[str, Any]]:
    p = paths(lab_dir)
    if not p.tokens.exists():
        return []
    lists = {s.name: revocation.read_revocations(
        revocation_path(node_dir(lab_dir, s.name)))[1] for s in plan.by_role("site")}
    now = time.time()
    out = []
    for line in p.tokens.read_text().splitlines():
        meta = json.loads(line)
        revoked_at = [site for site, revoked in lists.items() if meta["jti"] in revoked]
        meta["revoked_on"] = revoked_at
        meta["expired"] = meta["exp"] <= now
        out.append(meta)
    return out
