"""Identity state the issuer publishes and the sites replicate: the JWKS (signing keys by
`kid`) and the versioned revocation feed, their entity tags, and the checks a replica
applies to what it is sent. Pure (no I/O besides parsing PEM keys).

* A key's `kid` is its RFC 7638 JWK thumbprint (SHA-256 over the canonical JSON of
  `crv`, `kty`, `x`, `y`), so the same key has the same `kid` everywhere.
* The JWKS's entity tag is a digest of its kid set; the revocation feed's is its version.
  A one-off reader asks with `If-None-Match` and gets 304 when it holds the current one
  (the sites follow the issuer's feed instead: `lab.sites.introspect.replica`).
* A feed whose version is lower than the one a replica holds is refused: revocations
  never go back.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["Feed", "jwk_of", "jwks_etag", "jwks_of", "kid_of", "parse_feed", "parse_jwks",
           "pem_of_jwk", "revocation_etag"]


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public(pem: bytes | str) -> ec.EllipticCurvePublicKey:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    if b"PRIVATE KEY" in data:
        key: Any = serialization.load_pem_private_key(data, password=None).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("a lab signing key is an ECDSA P-256 key")
    return key


def jwk_of(pem: bytes | str) -> dict[str, str]:
    """The public JWK (RFC 7517) of a P-256 key given as a public or private PEM, with its
    `kid` (the RFC 7638 thumbprint), `use: sig` and `alg: ES256`."""
    numbers = _public(pem).public_numbers()
    core = {"crv": "P-256", "kty": "EC", "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big"))}
    canonical = json.dumps(core, separators=(",", ":"), sort_keys=True).encode()
    return {**core, "kid": _b64url(hashlib.sha256(canonical).digest()), "use": "sig",
            "alg": "ES256"}


def kid_of(pem: bytes | str) -> str:
    """The `kid` of a key (see `jwk_of`)."""
    return jwk_of(pem)["kid"]


def jwks_of(pems: Iterable[bytes | str]) -> dict[str, list[dict[str, str]]]:
    """A JWKS document of these keys."""
    return {"keys": [jwk_of(p) for p in pems]}


def pem_of_jwk(jwk: Mapping[str, Any]) -> bytes:
    """The public PEM of an EC P-256 JWK; ValueError for anything else."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("only EC P-256 keys are lab keys")
    try:
        x, y = (int.from_bytes(_unb64url(str(jwk[c])), "big") for c in ("x", "y"))
        key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not a usable EC key: {exc}") from None
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def parse_jwks(doc: Any) -> dict[str, bytes]:
    """`{kid: public PEM}` of a JWKS document; ValueError if it is not one, a key's `kid`
    is not its thumbprint, or a kid is given twice."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("a JWKS is an object with a 'keys' list")
    out: dict[str, bytes] = {}
    for jwk in doc["keys"]:
        if not isinstance(jwk, dict):
            raise ValueError("every key of a JWKS is an object")
        pem = pem_of_jwk(jwk)
        kid = jwk.get("kid")
        if kid != kid_of(pem):
            raise ValueError(f"kid {kid!r} is not the key's thumbprint")
        if kid in out:
            raise ValueError(f"kid {kid!r} given twice")
        out[kid] = pem
    return out


def jwks_etag(kids: Iterable[str]) -> str:
    """The entity tag of a JWKS: a digest of its sorted kid set (quoted, RFC 9110)."""
    digest = hashlib.sha256("\n".join(sorted(kids)).encode()).hexdigest()[:16]
    return f'"k-{digest}"'


def revocation_etag(version: int) -> str:
    """The entity tag of revocation feed version N."""
    return f'"r-{version}"'


@dataclass(frozen=True)
class Feed:
    """One revocation feed document: its version and `{jti: revoked_at}`."""

    version: int
    revoked: dict[str, float]


def parse_feed(doc: Any, held_version: int = 0) -> Feed:
    """A revocation feed document (`{"version": N, "revoked": {jti: t}}`) checked; a
    version below `held_version` (what the replica already holds) is refused."""
    if not isinstance(doc, dict):
        raise ValueError("a revocation feed is an object")
    version, revoked = doc.get("version"), doc.get("revoked")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError("'version' must be a non-negative integer")
    if not isinstance(revoked, dict) or not all(
            isinstance(j, str) and j and isinstance(t, int | float) and not isinstance(t, bool)
            for j, t in revoked.items()):
        raise ValueError("'revoked' must map non-empty jti strings to epoch numbers")
    if version < held_version:
        raise ValueError(f"version went back from {held_version} to {version}")
    return Feed(version, dict(revoked))
