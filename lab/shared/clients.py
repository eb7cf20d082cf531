"""API clients: owns the registry of callers allowed to use the introspection endpoint.

Callers (resource servers) authenticate with HTTP Basic (RFC 6749 §2.3.1). Their
secrets are never stored: the registry file keeps, per client, a random salt and
an scrypt hash (``hashlib.scrypt``), compared in constant time.

Registry file (JSON, written atomically with mode 0600)::

    {"format": "anycast-lab-clients/1",
     "clients": {"<client_id>": {"kdf": "scrypt", "n": 16384, "r": 8, "p": 1,
                                 "salt": "<base64>", "hash": "<base64>"}}}

Because a resource server calls on every request, a successful scrypt check is
remembered as an HMAC of the secret under a per-process random key; later calls
with the same secret cost one HMAC instead of one scrypt (``check_cached``).
Failed attempts are never cached, and an unknown ``client_id`` is checked
against a dummy record so that it costs as much as a wrong secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from lab.shared.atomic import write_json_atomic

__all__ = [
    "DEFAULT_SCRYPT_N",
    "ClientRegistry",
    "generate_secret",
    "load_registry",
    "parse_basic_auth",
    "write_registry",
]

REGISTRY_FORMAT = "anycast-lab-clients/1"
DEFAULT_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_DKLEN = 32
_SALT_BYTES = 16
# Bounds on what a registry file may ask for, so that a bad file cannot make
# every authentication attempt eat gigabytes or minutes.
_MIN_N, _MAX_N = 2**1, 2**20
_MAX_R, _MAX_P = 32, 16
_MAX_SECRET_BYTES = 1024


@dataclass(frozen=True, slots=True)
class _Record:
    n: int
    r: int
    p: int
    salt: bytes
    hash: bytes


def _scrypt(secret: bytes, rec: _Record) -> bytes:
    maxmem = 128 * rec.r * (rec.n + rec.p + 2) + (1 << 20)
    return hashlib.scrypt(
        secret, salt=rec.salt, n=rec.n, r=rec.r, p=rec.p, maxmem=maxmem, dklen=len(rec.hash)
    )


def _hash_secret(secret: str, n: int) -> _Record:
    template = _Record(
        n=n, r=_SCRYPT_R, p=_SCRYPT_P, salt=secrets.token_bytes(_SALT_BYTES), hash=b"\0" * _DKLEN
    )
    digest = _scrypt(secret.encode("utf-8"), template)
    return _Record(n=n, r=template.r, p=template.p, salt=template.salt, hash=digest)


def _check_params(n: int, r: int, p: int) -> None:
    if not (_MIN_N <= n <= _MAX_N and n & (n - 1) == 0):
        raise ValueError(f"scrypt n must be a power of two in [{_MIN_N}, {_MAX_N}]")
    if not (1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        raise ValueError("scrypt r or p out of range")


def generate_secret() -> str:
    """Return a new random client secret (256 bits, URL-safe, needs no escaping)."""
    return secrets.token_urlsafe(32)


def write_registry(
    path: str | os.PathLike[str],
    clients: Mapping[str, str],
    *,
    n: int = DEFAULT_SCRYPT_N,
) -> None:
    """Write a registry file for ``{client_id: secret}``; secrets are stored only as hashes.

    The file is replaced atomically and fsynced (``lab.shared.atomic``), mode 0600.
    ``n`` is the scrypt cost; lower it only in tests.
    """
    _check_params(n, _SCRYPT_R, _SCRYPT_P)
    entries: dict[str, dict[str, object]] = {}
    for client_id, secret in clients.items():
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client ids must be non-empty strings")
        if not isinstance(secret, str) or not secret:
            raise ValueError(f"client {client_id!r}: secret must be a non-empty string")
        rec = _hash_secret(secret, n)
        entries[client_id] = {
            "kdf": "scrypt",
            "n": rec.n,
            "r": rec.r,
            "p": rec.p,
            "salt": base64.b64encode(rec.salt).decode("ascii"),
            "hash": base64.b64encode(rec.hash).decode("ascii"),
        }
    write_json_atomic(path, {"format": REGISTRY_FORMAT, "clients": entries}, 0o600)


def _parse_record(client_id: str, raw: object) -> _Record:
    if not isinstance(raw, dict) or raw.get("kdf") != "scrypt":
        raise ValueError(f"client {client_id!r}: unsupported or missing kdf")
    try:
        n, r, p = raw["n"], raw["r"], raw["p"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)):
            raise ValueError("n, r, p must be integers")
        _check_params(n, r, p)
        salt = base64.b64decode(raw["salt"], validate=True)
        digest = base64.b64decode(raw["hash"], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"client {client_id!r}: bad record ({exc})") from None
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError(f"client {client_id!r}: salt or hash too short")
    return _Record(n=n, r=r, p=p, salt=salt, hash=digest)


class ClientRegistry:
    """The loaded registry: ``verify(client_id, secret) -> bool``."""

    def __init__(self, records: Mapping[str, _Record]) -> None:
        self._records = dict(records)
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        n = max((rec.n for rec in self._records.values()), default=DEFAULT_SCRYPT_N)
        # An unknown client is checked against this, so it costs as much as a known one.
        self._dummy = _Record(
            n=n,
            r=_SCRYPT_R,
            p=_SCRYPT_P,
            salt=secrets.token_bytes(_SALT_BYTES),
            hash=b"\0" * _DKLEN,
        )

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def _mac(self, client_id: str, secret: bytes) -> bytes:
        msg = client_id.encode("utf-8") + b"\0" + secret
        return hmac.new(self._cache_key, msg, hashlib.sha256).digest()

    def check_cached(self, client_id: str, secret: str) -> bool:
        """Cheap check: True only if this exact pair already passed ``verify``.

        False means "not known to be good", not "bad": call ``verify`` then.
        """
        remembered = self._verified.get(client_id)
        if remembered is None:
            return False
        return hmac.compare_digest(remembered, self._mac(client_id, secret.encode("utf-8")))

    def verify(self, client_id: str, secret: str) -> bool:
        """Full check: True iff ``secret`` is ``client_id``'s secret.

        Answers from the cache of earlier successes when it can, otherwise runs
        one scrypt (blocking: ~30 ms and 16 MiB at the default cost -- callers
        should bound how many run at once).
        """
        secret_bytes = secret.encode("utf-8")
        if len(secret_bytes) > _MAX_SECRET_BYTES:
            return False
        if self.check_cached(client_id, secret):
            return True
        rec = self._records.get(client_id)
        computed = _scrypt(secret_bytes, rec if rec is not None else self._dummy)
        ok = hmac.compare_digest(computed, (rec or self._dummy).hash) and rec is not None
        if ok:
            self._verified[client_id] = self._mac(client_id, secret_bytes)
        return ok


def load_registry(path: str | os.PathLike[str]) -> ClientRegistry:
    """Load a registry file written by ``write_registry``; raises ``ValueError`` if invalid."""
    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != REGISTRY_FORMAT:
        raise ValueError(f"{path}: not an {REGISTRY_FORMAT} file")
    clients = doc.get("clients")
    if not isinstance(clients, dict):
        raise ValueError(f"{path}: 'clients' must be an object")
    return ClientRegistry({cid: _parse_record(cid, raw) for cid, raw in clients.items()})


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """Parse an ``Authorization: Basic`` value into ``(client_id, secret)``; None if malformed.

    Per RFC 6749 §2.3.1 both parts are form-urlencoded before base64, so they are
    decoded with ``unquote_plus``. (Secrets from ``generate_secret`` contain no
    characters that change under that decoding.)
    """
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    try:
        client_id = urllib.parse.unquote_plus(user, errors="strict")
        secret = urllib.parse.unquote_plus(password, errors="strict")
    except UnicodeDecodeError:
        return None
    if not client_id or not secret:
        return None
    return client_id, secret
