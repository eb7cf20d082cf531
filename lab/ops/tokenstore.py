"""`anycast-lab token`: issue lab tokens, revoke them on every site, list them.

In a lab with an issuer node every call goes to the issuer over the lab network, from
inside the namespace of the issuer's router (`lab.shared.https`): the issuer signs, records
the token's metadata and holds the revocation list; the sites learn of a revocation when
they next pull the feed, so `revoke` waits (bounded) until every site holds the new
version and says how long that took. In a lab without one, tokens are signed here, their
metadata recorded in <lab dir>/pki/tokens.jsonl, and a revocation is written into every
site's list in place. Either way the token itself is printed once and never stored.

Input is checked before any lab is opened: a lifetime of 1 s to MAX_TTL_S, a token id
of 1 to MAX_JTI printable characters.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt

from lab.model.errors import BadInput, LabError
from lab.model.names import node_dir
from lab.model.plan import AddressPlan
from lab.render.credentials import AUDIENCE, ISSUER, ISSUER_NAME, client_secret, paths
from lab.render.introspect import revocation_path
from lab.render.issuer import PORT as ISSUER_PORT
from lab.render.issuer import issuer_address, seed_lab
from lab.shared import https, identity, revocation, tokens
from lab.shared.wait import wait_until

# How long `revoke` waits for every site to hold the new revocation version.
PROPAGATION_WAIT_S = 10.0

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


def call_issuer(lab_dir: Path, plan: AddressPlan, method: str, path: str,
                body: Any = None, timeout_s: float = 5.0) -> https.Answer:
    """One admin call to the issuer, from its router's namespace; LabError when the
    issuer does not answer or refuses."""
    issuer = plan.issuer
    assert issuer is not None and issuer.router is not None
    address = issuer_address(issuer)
    try:
        answer = https.request(
            address, ISSUER_PORT, method, path, ca_file=paths(lab_dir).ca_cert,
            server_name=ISSUER_NAME, netns=plan.nodes[issuer.router].netns, body=body,
            headers={"Authorization": https.basic("lab-admin",
                                                  client_secret(lab_dir, "lab-admin"))},
            timeout_s=timeout_s)
    except (OSError, ValueError) as exc:
        raise LabError(f"the issuer at {address}:{ISSUER_PORT} does not answer ({exc}): "
                       f"is it running? (`anycast-lab heal {issuer.name}`)") from None
    if answer.status != 200 or not isinstance(answer.body, dict):
        raise LabError(f"the issuer answered {method} {path} with HTTP {answer.status}")
    return answer


def issue(lab_dir: Path, client_id: str, scope: str, ttl_s: int,
          sub: str | None = None, plan: AddressPlan | None = None) -> tuple[str, dict[str, Any]]:
    check_ttl(ttl_s)
    if plan is not None and plan.issuer is not None:
        doc = call_issuer(lab_dir, plan, "POST", "/tokens", {
            "client_id": client_id, "scope": scope, "ttl_s": ttl_s,
            "sub": sub or client_id}).body
        return doc["token"], doc["claims"]
    p = paths(lab_dir)
    key = p.signing_key.read_bytes()
    # Signed here (a lab without an issuer, or a caller that names no plan): with the
    # key's kid all the same, so a site that verifies by kid accepts it.
    token, claims = tokens.issue_token(key, issuer=ISSUER, audience=AUDIENCE,
                                       client_id=client_id, sub=sub or client_id,
                                       scope=scope, ttl_s=ttl_s, kid=identity.kid_of(key))
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


def revoke_at_up(lab_dir: Path, plan: AddressPlan, jti: str) -> None:
    """Before any daemon runs: revoke the jti (the health checks' revoked canary) where
    the lab keeps its revocations, and give every site its starting state
    (`lab.render.issuer.seed_lab`, which an export carries too)."""
    seed_lab(lab_dir, plan, jti)


def site_versions(lab_dir: Path, plan: AddressPlan) -> dict[str, int]:
    """The revocation version each site holds now (its replica's list)."""
    out = {}
    for site in plan.by_role("site"):
        try:
            out[site.name] = revocation.read_revocations(
                revocation_path(node_dir(lab_dir, site.name)))[0]
        except ValueError:
            out[site.name] = -1
    return out


def revoke_via_issuer(lab_dir: Path, plan: AddressPlan, jti: str,
                      wait_s: float = PROPAGATION_WAIT_S) -> dict[str, Any]:
    """Revoke at the issuer, then wait (bounded) until every site holds that version.
    Returns the issuer's answer with `propagated_ms` per site (None: not within wait_s)."""
    started = time.monotonic()
    doc = call_issuer(lab_dir, plan, "POST", "/revoke", {"jti": jti}).body
    target = doc["version"]
    arrived: dict[str, float | None] = dict.fromkeys(s.name for s in plan.by_role("site"))

    def all_there() -> bool:
        for site, version in site_versions(lab_dir, plan).items():
            if arrived[site] is None and version >= target:
                arrived[site] = round((time.monotonic() - started) * 1000, 1)
        return all(v is not None for v in arrived.values())

    wait_until(all_there, wait_s, interval_s=0.01)
    return {**doc, "propagated_ms": arrived, "versions": site_versions(lab_dir, plan)}


def revoke_sites(lab_dir: Path, plan: AddressPlan,
                 jti: str) -> tuple[dict[str, int], list[str]]:
    """Add the jti to every site's revocation list that does not hold it yet.

    Returns each list's version afterwards, and the sites where the jti was already
    revoked: their list is left as it was (same version), so revoking twice is a no-op.
    With an issuer: revoked there, and each site's version once it has pulled it.
    """
    if plan.issuer is not None:
        doc = revoke_via_issuer(lab_dir, plan, jti)
        return doc["versions"], ([] if doc["added"] else list(doc["versions"]))
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


def issuer_revoke_text(name: str, doc: dict[str, Any]) -> str:
    """A revocation at the issuer in one sentence: its version, and when each site held
    it ('revoked student at the issuer (version 2): nyc after 312 ms, sin after 350 ms;
    not at ams within 10 s (cut off or stale)')."""
    if not doc.get("added", True):
        return f"{name} was already revoked at the issuer (version {doc['version']})"
    arrived = {s: ms for s, ms in doc["propagated_ms"].items() if ms is not None}
    late = [s for s, ms in doc["propagated_ms"].items() if ms is None]
    text = f"revoked {name} at the issuer (version {doc['version']})"
    if arrived:
        text += ": " + ", ".join(f"{s} after {ms:.0f} ms" for s, ms in arrived.items())
    if late:
        text += (f"; not at {', '.join(late)} within {PROPAGATION_WAIT_S:g} s "
                 "(cut off or stale)")
    return text


def _issued(lab_dir: Path, plan: AddressPlan) -> list[str]:
    """The metadata lines of every token issued (JSON text, one per token)."""
    if plan.issuer is not None:
        doc = call_issuer(lab_dir, plan, "GET", "/tokens").body
        return [json.dumps(t) for t in doc.get("tokens", [])]
    p = paths(lab_dir)
    return p.tokens.read_text().splitlines() if p.tokens.exists() else []


def listing(lab_dir: Path, plan: AddressPlan) -> list[dict[str, Any]]:
    issued = _issued(lab_dir, plan)
    if not issued:
        return []
    lists = {s.name: revocation.read_revocations(
        revocation_path(node_dir(lab_dir, s.name)))[1] for s in plan.by_role("site")}
    now = time.time()
    out = []
    for line in issued:
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
