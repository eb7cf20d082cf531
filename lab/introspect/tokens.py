"""Access tokens: owns issuing and verifying the lab's ES256 JWT access tokens.

``issue_token`` signs a token with an ECDSA P-256 key; ``verify_token`` turns a
presented token into the RFC 7662 introspection answer: the "active" response
dict, or ``None`` when the token is inactive for any reason whatsoever (bad
signature, expired, not yet valid, issued in the future, wrong issuer or
audience, revoked ``jti``, missing or mistyped claims, malformed, any ``alg``
other than ES256 -- including ``none``). The reason is deliberately not
returned: an introspection response must not tell a caller why a token is
inactive. Time checks are done here (not by PyJWT) so that ``now`` can be
injected.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Container
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["ACTIVE_KEYS", "ALGORITHM", "issue_token", "load_public_key", "verify_token"]

ALGORITHM = "ES256"
# The exact keys of an active introspection response, in response order.
ACTIVE_KEYS = (
    "active",
    "scope",
    "client_id",
    "sub",
    "aud",
    "iss",
    "exp",
    "iat",
    "jti",
    "token_type",
)
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "client_id", "scope", "exp", "iat", "jti"]
_TOKEN_TYPE_HEADER = "at+jwt"  # RFC 9068 media type of JWT access tokens


def _as_bytes(pem: bytes | str) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else pem


@functools.lru_cache(maxsize=8)
def _private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("the signing key must be an ECDSA P-256 private key")
    return key


@functools.lru_cache(maxsize=8)
def _public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("the verification key must be an ECDSA P-256 public key")
    return key


def load_public_key(public_key_pem: bytes | str) -> ec.EllipticCurvePublicKey:
    """Parse (and cache) a P-256 public key PEM; raises ``ValueError`` if it is not one."""
    return _public_key(_as_bytes(public_key_pem))


def issue_token(
    signing_key_pem: bytes | str,
    *,
    issuer: str,
    audience: str,
    client_id: str,
    sub: str,
    scope: str,
    ttl_s: int,
    now: float | None = None,
    jti: str | None = None,
    token_type: str = "Bearer",
) -> tuple[str, dict[str, Any]]:
    """Sign an ES256 access token; return ``(token, claims)``.

    ``iat`` and ``nbf`` are ``now`` (default: the current time) truncated to whole
    seconds and ``exp`` is ``iat + ttl_s``. ``jti`` defaults to 128 random bits.
    """
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "client_id": client_id,
        "scope": scope,
        "iat": iat,
        "nbf": iat,
        "exp": iat + int(ttl_s),
        # Hex, not base64url: an id that starts with "-" reads as an option on a command line.
        "jti": jti if jti is not None else secrets.token_hex(16),
        "token_type": token_type,
    }
    token = jwt.encode(
        claims,
        _private_key(_as_bytes(signing_key_pem)),
        algorithm=ALGORITHM,
        headers={"typ": _TOKEN_TYPE_HEADER},
    )
    return token, claims


def _is_number(value: object) -> bool:
    # bool is an int subclass; "exp": true is not a time.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _times_ok(claims: dict[str, Any], now: float, leeway_s: float) -> bool:
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    if not _is_number(exp) or not _is_number(iat):
        return False
    if exp <= now - leeway_s:  # expired (RFC 7519 4.1.4: now must be before exp)
        return False
    if iat > now + leeway_s:  # issued in the future
        return False
    return not (nbf is not None and (not _is_number(nbf) or nbf > now + leeway_s))


def _aud_ok(aud: object) -> bool:
    if isinstance(aud, str):
        return True
    return isinstance(aud, list) and bool(aud) and all(isinstance(a, str) for a in aud)


def verify_token(
    token: str,
    public_key_pem: bytes | str,
    *,
    issuer: str,
    audience: str,
    revoked: Container[str],
    now: float | None = None,
    leeway_s: float = 0,
) -> dict[str, Any] | None:
    """Return the RFC 7662 "active" response for ``token``, or ``None`` if it is inactive.

    ``revoked`` is anything supporting ``jti in revoked`` (a set, a dict, a
    ``RevocationList``). A bad ``public_key_pem`` is a configuration error and
    raises ``ValueError``; everything wrong with the *token* yields ``None``.
    """
    key = load_public_key(public_key_pem)
    if not isinstance(token, str) or not token:
        return None
    try:
        header = jwt.get_unverified_header(token)
        # PyJWT enforces algorithms=[ES256] too; checking first is belt and braces.
        if header.get("alg") != ALGORITHM:
            return None
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={
                "require": _REQUIRED_CLAIMS,
                # Time is checked below against the injectable ``now``.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(claims, dict):
        return None
    if not _times_ok(claims, time.time() if now is None else now, leeway_s):
        return None
    for name in ("iss", "sub", "client_id", "scope", "jti"):
        if not isinstance(claims.get(name), str):
            return None
    if not claims["jti"] or not _aud_ok(claims.get("aud")):
        return None
    token_type = claims.get("token_type", "Bearer")
    if not isinstance(token_type, str):
        return None
    if claims["jti"] in revoked:
        return None
    return {
        "active": True,
        "scope": claims["scope"],
        "client_id": claims["client_id"],
        "sub": claims["sub"],
        "aud": claims["aud"],
        "iss": claims["iss"],
        "exp": claims["exp"],
        "iat": claims["iat"],
        "jti": claims["jti"],
        "token_type": token_type,
    }
