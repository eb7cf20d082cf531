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

One token, one string:

* the header must say ``typ: at+jwt`` (RFC 9068 section 2.1; compared as a media type,
  RFC 7515 section 4.1.9: case-insensitive, ``application/at+jwt`` is the same type).
  A token without ``typ``, or with ``JWT``, is not one of our access tokens;
* every part is unpadded base64url (RFC 7515 section 2) and the signature is the one
  canonical encoding of exactly 64 bytes (no ``=`` padding, no stray bits in its last
  character);
* ECDSA signatures are accepted with a low ``s`` only (``s <= n/2``): for any valid
  (r, s) the twin (r, n - s) verifies too, so without this rule a token has two valid
  strings. ``issue_token`` always signs with a low ``s``.
"""

from __future__ import annotations

import base64
import functools
import math
import re
import secrets
import time
from collections.abc import Container
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["ACTIVE_KEYS", "ALGORITHM", "canonical_form", "issue_token", "load_public_key",
           "sign_claims", "verify_token"]

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
VERIFIED_CACHE = 256  # tokens whose signature verified, kept (see _signed_claims)
_TOKEN_TYPE_HEADER = "at+jwt"  # RFC 9068 media type of JWT access tokens
_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # compared in lower case
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")  # unpadded base64url
_ES256_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{86}")  # 64 bytes, unpadded


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


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _low_s(token: str) -> str:
    """The same token with its ECDSA signature's twin of low ``s``, if it had a high one."""
    head, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    if s <= _P256_ORDER // 2:
        return token
    return f"{head}.{_b64url(r + (_P256_ORDER - s).to_bytes(32, 'big'))}"


def canonical_form(token: str) -> bool:
    """True if the token is in the one form we accept (see the module docstring)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts[:2]):
        return False
    signature = parts[2]
    if not _ES256_SIGNATURE.fullmatch(signature):
        return False
    raw = base64.urlsafe_b64decode(signature + "==")
    if _b64url(raw) != signature:  # stray bits in the last character
        return False
    return 0 < int.from_bytes(raw[32:], "big") <= _P256_ORDER // 2


def _typ_ok(header: dict[str, Any]) -> bool:
    typ = header.get("typ")
    return isinstance(typ, str) and typ.lower() in _TOKEN_TYPES


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
    kid: str | None = None,
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
    return sign_claims(signing_key_pem, claims, kid=kid), claims


def sign_claims(signing_key_pem: bytes | str, claims: dict[str, Any],
                kid: str | None = None) -> str:
    """These exact claims as one of our tokens: ES256, ``typ: at+jwt``, a low ``s``
    (and the signing key's ``kid`` in the header, when given)."""
    headers = {"typ": _TOKEN_TYPE_HEADER, **({"kid": kid} if kid is not None else {})}
    token = jwt.encode(claims, _private_key(_as_bytes(signing_key_pem)), algorithm=ALGORITHM,
                       headers=headers)
    return _low_s(token)


def kid_of_token(token: object) -> str | None:
    """The ``kid`` a token's header names (unverified: only to choose the key), or None."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    return kid if isinstance(kid, str) else None


def _is_number(value: object) -> bool:
    # bool is an int subclass; "exp": true is not a time. JSON parsers accept NaN and
    # Infinity: a NaN "exp" compares false with every time, so it would never expire.
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


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


@functools.lru_cache(maxsize=VERIFIED_CACHE)
def _signed_claims(token: str, public_key_pem: bytes, audience: str,
                   issuer: str) -> dict[str, Any]:
    """The claims of a token whose header, signature, issuer and audience verify with this
    key (raises otherwise). Cached, successes only: the same token checked again with the
    same key (a health check's canaries, a client's repeated calls) is not verified again;
    what can change between calls -- its times, its revocation -- `verify_token` checks
    every time. The claims are shared between callers: read them, never change them."""
    header = jwt.get_unverified_header(token)
    # PyJWT enforces algorithms=[ES256] too; checking first is belt and braces.
    if header.get("alg") != ALGORITHM or not _typ_ok(header):
        raise ValueError("not an ES256 access token")
    return jwt.decode(
        token,
        load_public_key(public_key_pem),
        algorithms=[ALGORITHM],
        audience=audience,
        issuer=issuer,
        options={
            "require": _REQUIRED_CLAIMS,
            # Time is checked by the caller against the injectable ``now``.
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        },
    )


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
    load_public_key(public_key_pem)
    if not isinstance(token, str) or not canonical_form(token):
        return None
    try:
        claims = _signed_claims(token, _as_bytes(public_key_pem), audience, issuer)
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
