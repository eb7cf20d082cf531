"""Unit tests for the introspection service's parts: pki, tokens, clients, revocation, server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import h11
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    DNSName,
    IPAddress,
    PolicyBuilder,
    Store,
    VerificationError,
)

from lab.observe import connections
from lab.shared import clients, pki, revocation, tokens
from lab.sites.introspect import guard, server

ISSUER = "https://issuer.anycast.lab"
AUDIENCE = "https://api.anycast.lab"
NOW = 1_750_000_000


@pytest.fixture(scope="module")
def signing_key() -> bytes:
    return pki.create_signing_key()


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return pki.create_ca("anycast-lab unit CA")


# --- pki -----------------------------------------------------------------------


def _verifier_for(ca_cert_pem: bytes, subject: DNSName | IPAddress) -> Any:
    store = Store([x509.load_pem_x509_certificate(ca_cert_pem)])
    return PolicyBuilder().store(store).build_server_verifier(subject)


def test_server_cert_verifies_against_its_ca_for_every_san(ca: tuple[bytes, bytes]) -> None:
    ca_key, ca_cert = ca
    _, cert_pem = pki.issue_server_cert(
        ca_key,
        ca_cert,
        ["introspect.lab", "site-a.introspect.lab"],
        ["203.0.113.53", "2001:db8::1"],
    )
    leaf = x509.load_pem_x509_certificate(cert_pem)
    subjects: list[DNSName | IPAddress] = [
        DNSName("introspect.lab"),
        DNSName("site-a.introspect.lab"),
        IPAddress(ipaddress.ip_address("203.0.113.53")),
        IPAddress(ipaddress.ip_address("2001:db8::1")),
    ]
    for subject in subjects:
        chain = _verifier_for(ca_cert, subject).verify(leaf, [])
        assert chain[0] == leaf
        assert chain[-1] == x509.load_pem_x509_certificate(ca_cert)


def test_server_cert_does_not_verify_for_other_names_or_other_ca(ca: tuple[bytes, bytes]) -> None:
    ca_key, ca_cert = ca
    _, cert_pem = pki.issue_server_cert(ca_key, ca_cert, ["introspect.lab"], ["203.0.113.53"])
    leaf = x509.load_pem_x509_certificate(cert_pem)
    with pytest.raises(VerificationError):
        _verifier_for(ca_cert, DNSName("evil.lab")).verify(leaf, [])
    with pytest.raises(VerificationError):
        _verifier_for(ca_cert, IPAddress(ipaddress.ip_address("203.0.113.54"))).verify(leaf, [])
    _, other_ca_cert = pki.create_ca("another CA")
    with pytest.raises(VerificationError):
        _verifier_for(other_ca_cert, DNSName("introspect.lab")).verify(leaf, [])


def test_server_cert_properties(ca: tuple[bytes, bytes]) -> None:
    ca_key, ca_cert = ca
    key_pem, cert_pem = pki.issue_server_cert(ca_key, ca_cert, ["introspect.lab"], ["100.64.0.5"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["introspect.lab"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("100.64.0.5")]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=29) < lifetime < dt.timedelta(days=31)
    assert cert.not_valid_before_utc <= dt.datetime.now(dt.UTC) < cert.not_valid_after_utc
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert cert.public_key() == key.public_key()


def test_ca_is_a_ca(ca: tuple[bytes, bytes]) -> None:
    cert = x509.load_pem_x509_certificate(ca[1])
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
    assert cert.subject == cert.issuer


def test_issue_server_cert_rejects_bad_input(ca: tuple[bytes, bytes]) -> None:
    ca_key, ca_cert = ca
    with pytest.raises(ValueError):
        pki.issue_server_cert(ca_key, ca_cert, [], [])
    with pytest.raises(ValueError):
        pki.issue_server_cert(ca_key, ca_cert, [], ["not-an-ip"])
    other_key, _ = pki.create_ca("x")
    with pytest.raises(ValueError, match="does not match"):
        pki.issue_server_cert(other_key, ca_cert, ["a.lab"], [])


def test_signing_key_and_public_pem(signing_key: bytes) -> None:
    pub = serialization.load_pem_public_key(pki.public_pem(signing_key))
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    assert pub.curve.name == "secp256r1"
    assert pki.public_pem(signing_key) != pki.public_pem(pki.create_signing_key())
    assert b"PRIVATE" not in pki.public_pem(signing_key)


# --- tokens --------------------------------------------------------------------


def _issue(signing_key: bytes, **kw: Any) -> tuple[str, dict[str, Any]]:
    args: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "client_id": "web",
        "sub": "bob",
        "scope": "read",
        "ttl_s": 300,
        "now": NOW,
    }
    args.update(kw)
    return tokens.issue_token(signing_key, **args)


def _verify(signing_key: bytes, token: str, **kw: Any) -> dict[str, Any] | None:
    args: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "revoked": set(), "now": NOW}
    args.update(kw)
    return tokens.verify_token(token, pki.public_pem(signing_key), **args)


def test_issue_token_claims_and_header(signing_key: bytes) -> None:
    token, claims = _issue(signing_key, jti="fixed-jti", token_type="DPoP")
    assert claims == {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bob",
        "client_id": "web",
        "scope": "read",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 300,
        "jti": "fixed-jti",
        "token_type": "DPoP",
    }
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    assert _issue(signing_key)[1]["jti"] != _issue(signing_key)[1]["jti"]


def test_verify_token_active_response(signing_key: bytes) -> None:
    token, claims = _issue(signing_key, token_type="DPoP")
    result = _verify(signing_key, token, now=NOW + 10)
    assert result == {
        "active": True,
        "scope": "read",
        "client_id": "web",
        "sub": "bob",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": NOW + 300,
        "iat": NOW,
        "jti": claims["jti"],
        "token_type": "DPoP",
    }
    assert tuple(result) == tokens.ACTIVE_KEYS


def test_verify_token_time_boundaries(signing_key: bytes) -> None:
    token, _ = _issue(signing_key)
    assert _verify(signing_key, token, now=NOW) is not None
    assert _verify(signing_key, token, now=NOW + 299.9) is not None
    assert _verify(signing_key, token, now=NOW + 300) is None  # exp is exclusive
    assert _verify(signing_key, token, now=NOW - 1) is None  # nbf/iat in the future
    assert _verify(signing_key, token, now=NOW + 305, leeway_s=10) is not None
    assert _verify(signing_key, token, now=NOW - 5, leeway_s=10) is not None


def test_a_token_verified_before_is_checked_again_for_all_that_can_change(
        signing_key: bytes) -> None:
    """Its signature is verified once per key; its times, revocation, issuer, audience
    and the key it is checked with are not taken from that."""
    token, claims = _issue(signing_key)
    assert _verify(signing_key, token, now=NOW + 10) is not None
    assert _verify(signing_key, token, now=NOW + 300) is None  # expired since
    assert _verify(signing_key, token, now=NOW + 10, revoked={claims["jti"]}) is None
    assert _verify(signing_key, token, now=NOW + 10, audience="other.lab") is None
    assert _verify(signing_key, token, now=NOW + 10, issuer="https://other.lab") is None
    assert _verify(pki.create_signing_key(), token, now=NOW + 10) is None  # another key
    assert _verify(signing_key, token, now=NOW + 10) is not None


def test_verify_token_rejects_iat_in_future_without_nbf(signing_key: bytes) -> None:
    _, claims = _issue(signing_key, now=NOW + 100)
    del claims["nbf"]
    token = tokens.sign_claims(signing_key, claims)
    assert _verify(signing_key, token, now=NOW) is None
    assert _verify(signing_key, token, now=NOW + 100) is not None


def test_verify_token_rejects(signing_key: bytes) -> None:
    token, claims = _issue(signing_key)
    assert _verify(signing_key, token, issuer="https://other") is None
    assert _verify(signing_key, token, audience="other") is None
    assert _verify(signing_key, token, revoked={claims["jti"]}) is None
    assert _verify(signing_key, token, revoked={"x": 1}) is not None
    assert _verify(pki.create_signing_key(), token) is None
    for junk in ("", "x", "a.b.c", "..", token + "x", token.replace(".", "", 1)):
        assert _verify(signing_key, junk) is None


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("scope", ["read"]),
        ("sub", 42),
        ("client_id", None),
        ("jti", ""),
        ("exp", True),
        ("exp", float("nan")),  # JSON parsers read NaN and Infinity: never expiring
        ("exp", float("inf")),
        ("nbf", float("-inf")),
        ("iat", "now"),
        ("aud", []),
        ("token_type", 5),
    ],
)
def test_verify_token_rejects_mistyped_claims(signing_key: bytes, claim: str, value: Any) -> None:
    _, claims = _issue(signing_key)
    claims[claim] = value
    bad = tokens.sign_claims(signing_key, claims)
    assert _verify(signing_key, bad, now=NOW + 1) is None


def test_verify_token_accepts_audience_list(signing_key: bytes) -> None:
    _, claims = _issue(signing_key)
    claims["aud"] = ["other", AUDIENCE]
    token = tokens.sign_claims(signing_key, claims)
    result = _verify(signing_key, token, now=NOW + 1)
    assert result is not None
    assert result["aud"] == ["other", AUDIENCE]


def test_verify_token_only_es256(signing_key: bytes) -> None:
    _, claims = _issue(signing_key)
    es384 = ec.generate_private_key(ec.SECP384R1())
    assert _verify(signing_key, jwt.encode(claims, None, algorithm="none"), now=NOW + 1) is None
    assert _verify(signing_key, jwt.encode(claims, es384, algorithm="ES384"), now=NOW + 1) is None
    hs = jwt.encode(claims, "shared-secret-of-at-least-32-bytes!!", algorithm="HS256")
    assert _verify(signing_key, hs, now=NOW + 1) is None


def test_verify_token_bad_key_is_a_config_error(signing_key: bytes) -> None:
    token, _ = _issue(signing_key)
    with pytest.raises(ValueError):
        tokens.verify_token(
            token, b"not a key", issuer=ISSUER, audience=AUDIENCE, revoked=set(), now=NOW
        )


# --- clients -------------------------------------------------------------------


def test_registry_stores_only_hashes_and_verifies(tmp_path: Path) -> None:
    secret = clients.generate_secret()
    path = tmp_path / "clients.json"
    clients.write_registry(path, {"rs-a": secret, "rs-b": "correct horse"})
    text = path.read_text()
    assert secret not in text
    assert base64.b64encode(secret.encode()).decode() not in text
    assert "correct horse" not in text
    doc = json.loads(text)
    assert doc["clients"]["rs-a"]["kdf"] == "scrypt"
    assert doc["clients"]["rs-a"]["n"] == clients.DEFAULT_SCRYPT_N
    assert doc["clients"]["rs-a"]["salt"] != doc["clients"]["rs-b"]["salt"]
    assert path.stat().st_mode & 0o777 == 0o600

    reg = clients.load_registry(path)
    assert len(reg) == 2
    assert "rs-a" in reg
    assert reg.verify("rs-a", secret) is True
    assert reg.verify("rs-b", "correct horse") is True
    assert reg.verify("rs-a", secret + "x") is False
    assert reg.verify("rs-a", "correct horse") is False
    assert reg.verify("nobody", secret) is False
    assert reg.verify("rs-a", "x" * 5000) is False


def test_same_secret_hashes_differently_per_client(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    clients.write_registry(path, {"a": "same", "b": "same"}, n=2**10)
    entries = json.loads(path.read_text())["clients"]
    assert entries["a"]["hash"] != entries["b"]["hash"]


def test_cached_check_only_after_successful_verify(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    clients.write_registry(path, {"a": "s3cret"}, n=2**10)
    reg = clients.load_registry(path)
    assert reg.check_cached("a", "s3cret") is False
    assert reg.verify("a", "wrong") is False
    assert reg.check_cached("a", "wrong") is False
    assert reg.verify("a", "s3cret") is True
    assert reg.check_cached("a", "s3cret") is True
    assert reg.check_cached("a", "wrong") is False
    assert reg.check_cached("b", "s3cret") is False


@pytest.mark.parametrize(
    "doc",
    [
        "not json",
        json.dumps({"clients": {}}),
        json.dumps({"format": "anycast-lab-clients/1", "clients": []}),
        json.dumps({"format": "anycast-lab-clients/1", "clients": {"a": {"kdf": "md5"}}}),
        json.dumps(
            {
                "format": "anycast-lab-clients/1",
                "clients": {
                    "a": {"kdf": "scrypt", "n": 3, "r": 8, "p": 1, "salt": "AAAA", "hash": "AAAA"}
                },
            }
        ),
    ],
)
def test_load_registry_rejects_bad_files(tmp_path: Path, doc: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(doc)
    with pytest.raises(ValueError):
        clients.load_registry(path)


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_parse_basic_auth() -> None:
    assert clients.parse_basic_auth(_basic(b"rs-a:s3cret")) == ("rs-a", "s3cret")
    assert clients.parse_basic_auth(_basic(b"rs-a:with:colon")) == ("rs-a", "with:colon")
    # RFC 6749 2.3.1: both parts are form-urlencoded
    assert clients.parse_basic_auth(_basic(b"rs%3Aa:p%25w+d")) == ("rs:a", "p%w d")
    for bad in (None, "", "Basic", "Basic ", "Digest abc", _basic(b"nocolon"), "Basic ***"):
        assert clients.parse_basic_auth(bad) is None
    assert clients.parse_basic_auth(_basic(b":s")) is None
    assert clients.parse_basic_auth(_basic(b"a:")) is None
    assert clients.parse_basic_auth(_basic(b"a:%ff")) is None


# --- revocation ----------------------------------------------------------------


def test_missing_file_is_empty_version_zero(tmp_path: Path) -> None:
    rl = revocation.RevocationList(tmp_path / "revoked.json")
    assert rl.healthy is True
    assert rl.version == 0
    assert len(rl) == 0
    assert "anything" not in rl


def test_revoke_writes_versioned_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    assert revocation.revoke(path, "j1", now=NOW) == 1
    assert revocation.revoke(path, "j2", now=NOW + 5) == 2
    assert revocation.revoke(path, "j1", now=NOW + 9) == 3  # keeps first timestamp
    assert json.loads(path.read_text()) == {"version": 3, "revoked": {"j1": NOW, "j2": NOW + 5}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["revoked.json", "revoked.json.lock"]
    with pytest.raises(ValueError):
        revocation.revoke(path, "")


def test_revoke_refuses_to_overwrite_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    path.write_text('{"version": 1, "revoked": {"j1": 1')
    with pytest.raises(ValueError):
        revocation.revoke(path, "j2")
    assert path.read_text() == '{"version": 1, "revoked": {"j1": 1'


def test_concurrent_revokes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    threads = [
        threading.Thread(
            target=lambda i=i: [revocation.revoke(path, f"t{i}-{k}") for k in range(10)]
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    version, revoked = revocation.read_revocations(path)
    assert version == 40
    assert len(revoked) == 40


def test_list_follows_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    rl = revocation.RevocationList(path)
    revocation.revoke(path, "j1")
    assert "j1" not in rl  # not refreshed yet
    rl.refresh()
    assert "j1" in rl
    assert rl.version == 1
    assert set(rl.revoked) == {"j1"}
    # Same-size rewrite in the same instant still shows up (new inode via os.replace).
    revocation._write_atomic(path, 2, {"j9": 1})
    rl.refresh()
    assert set(rl.revoked) == {"j9"}
    assert rl.version == 2


def test_min_interval_limits_stats(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    clock = [100.0]
    rl = revocation.RevocationList(path, min_interval_s=0.2, clock=lambda: clock[0])
    revocation.revoke(path, "j1")
    clock[0] += 0.1
    rl.refresh()
    assert "j1" not in rl
    clock[0] += 0.2
    rl.refresh()
    assert "j1" in rl


@pytest.mark.parametrize(
    "content",
    [
        "{",
        "[]",
        '{"version": -1, "revoked": {}}',
        '{"version": true, "revoked": {}}',
        '{"version": 1, "revoked": []}',
        '{"version": 1, "revoked": {"j": "yesterday"}}',
        '{"version": 1}',
        "\xff",
    ],
)
def test_corrupt_file_never_loaded_is_unhealthy(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "revoked.json"
    path.write_bytes(content.encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="lab.shared.revocation"):
        rl = revocation.RevocationList(path)
        rl.refresh()
        rl.refresh()
    assert rl.healthy is False
    assert rl.version == 0
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 1  # not per request


def test_corrupt_file_after_good_keeps_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "revoked.json"
    revocation.revoke(path, "j1")
    rl = revocation.RevocationList(path)
    path.write_text("garbage")
    with caplog.at_level(logging.WARNING, logger="lab.shared.revocation"):
        rl.refresh()
    assert rl.healthy is True
    assert "j1" in rl
    assert rl.version == 1
    assert "keeping version 1" in caplog.text


def test_version_going_back_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    revocation._write_atomic(path, 5, {"j5": 1})
    rl = revocation.RevocationList(path)
    revocation._write_atomic(path, 4, {})
    rl.refresh()
    assert rl.version == 5
    assert "j5" in rl


def test_deleted_file_does_not_unrevoke(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    revocation.revoke(path, "j1")
    rl = revocation.RevocationList(path)
    path.unlink()
    rl.refresh()
    assert rl.healthy is True
    assert "j1" in rl


def test_revocation_list_is_a_container_for_verify_token(
    tmp_path: Path, signing_key: bytes
) -> None:
    path = tmp_path / "revoked.json"
    token, claims = _issue(signing_key)
    rl = revocation.RevocationList(path)
    assert _verify(signing_key, token, revoked=rl, now=NOW + 1) is not None
    revocation.revoke(path, claims["jti"])
    rl.refresh()
    assert _verify(signing_key, token, revoked=rl, now=NOW + 1) is None


# --- server --------------------------------------------------------------------


def _write_server_config(tmp_path: Path, signing_key: bytes, **overrides: Any) -> Path:
    (tmp_path / "signing.pub").write_bytes(pki.public_pem(signing_key))
    clients.write_registry(tmp_path / "clients.json", {"rs": "s"}, n=2**10)
    config: dict[str, Any] = {
        "site": "site-b",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "public_key_file": "signing.pub",
        "clients_path": "clients.json",
        "revocation_path": "revoked.json",
        "listen": ["203.0.113.53", "2001:db8:53::53", "100.64.0.5"],
        "tls_cert": "server.crt",
        "tls_key": "server.key",
    }
    config.update(overrides)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_load_server_config(tmp_path: Path, signing_key: bytes) -> None:
    cfg = server.load_server_config(_write_server_config(tmp_path, signing_key))
    assert cfg.port == 443
    assert cfg.max_body_bytes == 4096
    assert cfg.limit_concurrency == 512
    assert cfg.log_file is None
    assert cfg.listen == ["203.0.113.53", "2001:db8:53::53", "100.64.0.5"]
    assert cfg.clients_path == tmp_path / "clients.json"
    assert cfg.tls_cert == tmp_path / "server.crt"
    assert cfg.public_key_pem == pki.public_pem(signing_key).decode()


@pytest.mark.parametrize(
    "overrides",
    [
        {"listen": []},
        {"listen": ["not-an-ip"]},
        {"listen": ["203.0.113.53", "203.0.113.53"]},
        {"port": 70000},
        {"unknown_key": 1},
        {"site": "bad site\r\nX-Injected: 1"},
        {"public_key_pem": "-----BEGIN PUBLIC KEY-----"},  # together with public_key_file
    ],
)
def test_load_server_config_rejects(tmp_path: Path, signing_key: bytes, overrides: Any) -> None:
    with pytest.raises(ValueError):
        server.load_server_config(_write_server_config(tmp_path, signing_key, **overrides))


def test_main_reports_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    assert server.main(["--config", str(path)]) == 2
    assert "error:" in capsys.readouterr().err


def _ipv6_usable() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_bind_sockets_uses_freebind_for_addresses_not_yet_configured() -> None:
    # Documentation prefixes are not on any interface here: IP_FREEBIND makes bind() work.
    addresses = ["203.0.113.53", "100.64.0.5"]
    if _ipv6_usable():
        addresses.append("2001:db8:53::53")
    sockets = server.bind_sockets(addresses, 0)
    try:
        assert [s.getsockname()[0] for s in sockets] == addresses
        for s in sockets:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
            assert s.getsockopt(socket.IPPROTO_IP, server.IP_FREEBIND) == 1
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            # asyncio sets TCP_NODELAY on accepted sockets only if proto is IPPROTO_TCP
            assert s.proto == socket.IPPROTO_TCP
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert s.getblocking() is False
    finally:
        for s in sockets:
            s.close()


def test_bind_sockets_closes_everything_on_failure() -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ValueError):
        server.bind_sockets(["127.0.0.1", "not-an-ip"], 0)
    assert len(os.listdir("/proc/self/fd")) == before


def test_server_runs_a_full_gc_periodically(
    tmp_path: Path, signing_key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_key, ca_cert = pki.create_ca("gc test CA")
    key, cert = pki.issue_server_cert(ca_key, ca_cert, ["introspect.lab"], [])
    (tmp_path / "server.key").write_bytes(key)
    (tmp_path / "server.crt").write_bytes(cert)
    cfg = server.load_server_config(_write_server_config(tmp_path, signing_key))
    srv = server.build_server(cfg)
    srv.config.load()
    assert srv.config.ssl is not None
    assert srv.config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    assert srv.config.access_log is False
    assert srv.config.timeout_keep_alive == 5
    # Connections are limited at accept by the guard, not by uvicorn's 503 (plain text,
    # and shared with the health daemon's connection).
    assert srv.config.limit_concurrency is None
    assert (srv.admission.limit, srv.admission.per_client) == (512, 256)
    assert srv.config.h11_max_incomplete_event_size == server.H11_MAX_INCOMPLETE_EVENT_SIZE
    collections: list[tuple[Any, ...]] = []
    monkeypatch.setattr(server.gc, "collect", lambda *a: collections.append(a) or 0)

    async def ticks() -> None:
        for counter in range(server.GC_EVERY_TICKS * 3):
            assert await srv.on_tick(counter) is False

    asyncio.run(ticks())
    assert len(collections) == 3


# --- guard: admission and the request-head limit -------------------------------------


def test_client_key_is_the_address_or_its_ipv6_slash_64() -> None:
    assert guard.client_key("192.0.2.7") == "192.0.2.7"
    assert guard.client_key("2001:db8:1:2:aaaa::1") == guard.client_key("2001:db8:1:2::ffff")
    assert guard.client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert guard.client_key("2001:db8:1:3::1") != guard.client_key("2001:db8:1:2::1")


def test_admission_limits_per_client_per_site_and_keeps_health_apart() -> None:
    now = [100.0]
    adm = guard.Admission(limit=3, per_client=2, health_limit=1, clock=lambda: now[0])
    a1, a2 = adm.admit(guard.CLIENT, "192.0.2.1"), adm.admit(guard.CLIENT, "192.0.2.1")
    assert a1 is not None and a2 is not None
    assert adm.admit(guard.CLIENT, "192.0.2.1") is None  # that client is at its limit
    assert not adm.saturated  # ... which does not saturate the site
    b1 = adm.admit(guard.CLIENT, "192.0.2.2")
    assert b1 is not None and adm.saturated  # the site is at its limit now
    assert adm.admit(guard.CLIENT, "192.0.2.3") is None
    health = adm.admit(guard.HEALTH, "127.0.0.1")
    assert health is not None  # client connections never use the health listener's room
    assert adm.admit(guard.HEALTH, "127.0.0.1") is None
    assert adm.refused == {"client at its limit": 1, "site at its limit": 1,
                           "health listener full": 1}
    b1.release()
    b1.release()  # a second release changes nothing
    assert adm.held[guard.CLIENT] == 2 and adm.per_key["192.0.2.1"] == 2
    assert adm.saturated  # a refusal for the site's limit was a moment ago
    now[0] += guard.SATURATION_HOLD_S
    assert not adm.saturated
    for slot in (a1, a2, health):
        slot.release()
    assert adm.held == {guard.CLIENT: 0, guard.HEALTH: 0} and not adm.per_key
    assert adm.client_peak == 2  # the most one client held, kept after it let go


def test_one_client_has_a_bounded_number_of_handshakes_in_progress_the_rest_wait() -> None:
    adm = guard.Admission(limit=10, per_client=5, handshakes_per_client=2)
    started: list[guard.Slot] = []

    def begin(address: str, kind: str = guard.CLIENT) -> guard.Slot:
        slot = adm.admit(kind, address)
        assert slot is not None
        adm.begin_handshake(slot, lambda: started.append(slot))
        return slot

    a1, a2, a3, a4 = (begin("192.0.2.1") for _ in range(4))
    assert started == [a1, a2]  # two handshakes in progress; a3 and a4 wait their turn
    b1 = begin("192.0.2.2")
    assert started[-1] is b1  # another client's turns are its own
    a3.release()  # given up while it waited: skipped when its turn comes
    a1.handshake_done()
    assert started[-1] is a4 and adm.handshaking["192.0.2.1"] == 2
    a1.handshake_done()  # once only
    assert adm.handshaking["192.0.2.1"] == 2
    a2.release()  # a connection that ends in its handshake ends that handshake too
    assert adm.handshaking["192.0.2.1"] == 1 and adm.per_key["192.0.2.1"] == 2  # a1, a4
    a4.handshake_done()
    b1.release()
    assert not adm.handshaking and not adm.waiting
    assert not adm.refused and not adm.saturated  # waiting is neither refused nor saturated
    health = begin("127.0.0.1", guard.HEALTH)
    assert started[-1] is health and not adm.handshaking  # health handshakes are not counted


def _tls_pair(tmp_path: Path, ca: tuple[bytes, bytes]) -> tuple[ssl.SSLContext,
                                                                ssl.SSLContext]:
    ca_key, ca_cert = ca
    key_pem, cert_pem = pki.issue_server_cert(ca_key, ca_cert, ["introspect.lab"],
                                              ["127.0.0.1"])
    (tmp_path / "key.pem").write_bytes(key_pem)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "ca.pem").write_bytes(ca_cert)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return server_tls, ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))


@contextlib.asynccontextmanager
async def _acceptor(server_tls: ssl.SSLContext, handshake_timeout_s: float) -> Any:
    """A client Acceptor on 127.0.0.1 (protocol: a bare asyncio.Protocol): its Admission
    and port; closed on the way out."""
    admission = guard.Admission()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    acceptor = guard.Acceptor(listener, guard.CLIENT, admission, server_tls,
                              lambda slot: asyncio.Protocol(),
                              handshake_timeout_s=handshake_timeout_s)
    acceptor.start()
    try:
        yield admission, listener.getsockname()[1]
    finally:
        acceptor.close()
        await acceptor.wait_closed()
        listener.close()


async def _until(condition: Any, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_a_client_past_its_handshakes_waits_its_turn_and_another_is_served(
        tmp_path: Path, ca: tuple[bytes, bytes]) -> None:
    """Real sockets and TLS: a client whose handshakes stall (it connects and sends nothing)
    has HANDSHAKES_PER_CLIENT of them in progress; its next connection, a real TLS client,
    waits until one of those ends, then completes; another client (another source
    address) is served meanwhile. Nothing is refused."""
    server_tls, client_tls = _tls_pair(tmp_path, ca)
    limit = guard.HANDSHAKES_PER_CLIENT

    def tls_client(source: str, port: int) -> Any:
        return asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0),
                                       ssl=client_tls, server_hostname="introspect.lab")

    async def scenario() -> dict[str, Any]:
        async with _acceptor(server_tls, 30) as (admission, port):
            stalled = [await asyncio.open_connection("127.0.0.1", port)
                       for _ in range(limit)]
            out: dict[str, Any] = {"in_progress": await _until(
                lambda: admission.handshaking["127.0.0.1"] == limit, 5)}
            waiter = asyncio.ensure_future(tls_client("127.0.0.1", port))
            out["waits"] = await _until(lambda: admission.waiting.get("127.0.0.1"), 5)
            _, other = await asyncio.wait_for(tls_client("127.0.0.2", port), 5)
            out["other_served"] = other.get_extra_info("ssl_object") is not None
            out["still_waiting"] = not waiter.done()
            stalled[0][1].close()  # one of its handshakes ends: the waiting one's turn
            _, writer = await asyncio.wait_for(waiter, 5)
            out["served_in_turn"] = writer.get_extra_info("ssl_object") is not None
            for w in (other, writer, *(w for _, w in stalled[1:])):
                w.close()
            out["refused"] = dict(admission.refused)
            return out

    out = asyncio.run(scenario())
    assert out == {"in_progress": True, "waits": True, "other_served": True,
                   "still_waiting": True, "served_in_turn": True, "refused": {}}


def test_connections_that_wait_for_a_handshake_turn_keep_the_handshake_timeout(
        tmp_path: Path, ca: tuple[bytes, bytes]) -> None:
    """Twice HANDSHAKES_PER_CLIENT stalled connections from one client, handshake timeout
    1 s: all of them are gone from the service (slots released, sockets reset) within
    the timeout of their accept, the waiting ones as well as those in progress (a waiting
    one's handshake gets what is left of its time, not a whole timeout more)."""
    server_tls, _ = _tls_pair(tmp_path, ca)
    timeout = 1.0

    async def scenario() -> tuple[bool, bool, dict[str, int]]:
        async with _acceptor(server_tls, timeout) as (admission, port):
            stalled = [await asyncio.open_connection("127.0.0.1", port)
                       for _ in range(2 * guard.HANDSHAKES_PER_CLIENT)]
            queued = await _until(lambda: len(admission.waiting.get("127.0.0.1", ())) ==
                                  guard.HANDSHAKES_PER_CLIENT, 5)
            gone = await _until(lambda: admission.held[guard.CLIENT] == 0, 1.5 * timeout)
            for _, w in stalled:
                w.close()
            return queued, gone, dict(admission.handshaking)

    queued, gone, handshaking = asyncio.run(scenario())
    assert queued and gone and handshaking == {}


def test_admission_metrics_say_what_is_held_the_client_peak_and_each_refusal() -> None:
    adm = guard.Admission(limit=4, per_client=2, health_limit=1)
    slots = [adm.admit(guard.CLIENT, "192.0.2.1") for _ in range(3)]
    assert slots[2] is None
    adm.admit(guard.CLIENT, "192.0.2.2")
    adm.admit(guard.HEALTH, "127.0.0.1")
    lines = adm.metrics("s1")
    assert 'anycast_connections_held{site="s1",listener="client"} 3' in lines
    assert 'anycast_connections_held{site="s1",listener="health"} 1' in lines
    assert 'anycast_connections_client_peak{site="s1"} 2' in lines
    assert 'anycast_connections_saturated{site="s1"} 0' in lines
    assert 'anycast_connections_refused_total{site="s1",reason="client at its limit"} 1' \
        in lines
    assert all(line.startswith(("# TYPE ", "anycast_connections_")) for line in lines)
    # What lab.observe.connections reads back from them (the Prometheus text parser).
    parsed = connections.parse("\n".join(lines) + "\n")
    assert parsed == {"held{listener=client}": 3, "held{listener=health}": 1,
                      "client_peak": 2, "saturated": 0,
                      "refused_total{reason=client at its limit}": 1}


def _head(extra: bytes = b"") -> bytes:
    return b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


def _padded(total: int) -> bytes:
    head = _head(b"X-Pad: ")
    return _head(b"X-Pad: " + b"a" * (total - len(head) - 2) + b"\r\n")


def _events(conn: guard.HeadLimitedConnection, data: bytes) -> list[Any]:
    conn.receive_data(data)
    out = []
    while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
        out.append(event)
    return out


@pytest.mark.parametrize("size", [9 * 1024, 20 * 1024, 200 * 1024])
def test_a_complete_head_over_the_limit_is_431_even_in_one_read(size: int) -> None:
    ends: list[int] = []
    conn = guard.HeadLimitedConnection(guard.HEAD_LIMIT, lambda: ends.append(1))
    with pytest.raises(h11.RemoteProtocolError):
        _events(conn, _padded(size))
    assert conn.error_status == 431 and not ends


def test_head_limit_counts_each_request_of_a_keep_alive_connection() -> None:
    ends: list[int] = []
    conn = guard.HeadLimitedConnection(guard.HEAD_LIMIT, lambda: ends.append(1))
    events = _events(conn, _padded(guard.HEAD_LIMIT))  # exactly at the limit: fine
    assert isinstance(events[0], h11.Request) and ends == [1]
    conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.start_next_cycle()
    assert isinstance(_events(conn, _padded(guard.HEAD_LIMIT))[0], h11.Request)
    conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.start_next_cycle()
    with pytest.raises(h11.RemoteProtocolError):
        _events(conn, _padded(guard.HEAD_LIMIT + 1))
    assert conn.error_status == 431


@pytest.mark.parametrize(("head", "status"), [
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
     400),
    (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"NOT HTTP\r\n\r\n", 400),
])
def test_framing_the_guard_refuses_and_its_status(head: bytes, status: int) -> None:
    conn = guard.HeadLimitedConnection(guard.HEAD_LIMIT, lambda: None)
    with pytest.raises(h11.RemoteProtocolError):
        _events(conn, head)
    assert conn.error_status == status
    headers, body = guard.error_response(status, "site-a")
    assert json.loads(body)["error"] == "invalid_request"
    assert (b"cache-control", b"no-store") in headers
    assert (b"content-length", str(len(body)).encode()) in headers


class _Recording:
    """Records what a transport is asked to do (the wrapper's underlying transport)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.calls.append(("close", b""))

    def write_eof(self) -> None:
        self.calls.append(("eof", b""))

    def abort(self) -> None:
        self.calls.append(("abort", b""))

    def is_closing(self) -> bool:
        return False


def test_a_response_written_in_pieces_leaves_in_one_write() -> None:
    from lab.sites.introspect.guard import CoalescingTransport

    async def scenario() -> tuple[list, list, list]:
        loop = asyncio.get_running_loop()
        raw = _Recording()
        transport = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"")
        transport.write(memoryview(b'{"active": true}'))
        during = list(raw.calls)  # nothing sent within the turn
        await asyncio.sleep(0)  # the turn ends
        after = list(raw.calls)
        transport.write(b"late")
        transport.close()  # sends what is pending, then closes
        assert transport.is_closing() is False  # the transport's own answer
        return during, after, raw.calls

    during, after, calls = asyncio.run(scenario())
    assert during == []
    assert after == [("write", b'HTTP/1.1 200 OK\r\n\r\n{"active": true}')]
    assert calls[1:] == [("write", b"late"), ("close", b"")]


def test_writelines_eof_and_abort_keep_a_coalesced_responses_order() -> None:
    """`writelines` joins the pending writes (not ahead of them), `write_eof` sends them
    first, `abort` drops them: nothing reaches the transport out of order or after it."""
    from lab.sites.introspect.guard import CoalescingTransport

    async def scenario() -> tuple[list, list]:
        loop = asyncio.get_running_loop()
        raw = _Recording()
        transport = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
        transport.write(b"head ")
        transport.writelines([b"body ", memoryview(b"tail")])
        transport.write_eof()
        ended = list(raw.calls)
        aborted = _Recording()
        transport = CoalescingTransport(aborted, loop)  # type: ignore[arg-type]
        transport.write(b"never sent")
        transport.abort()
        await asyncio.sleep(0)  # the turn ends: nothing pending is flushed after it
        return ended, aborted.calls

    ended, aborted = asyncio.run(scenario())
    assert ended == [("write", b"head body tail"), ("eof", b"")]
    assert aborted == [("abort", b"")]


def test_the_guarded_protocol_sends_each_response_in_one_write() -> None:
    """The protocol the service runs puts its connection behind a CoalescingTransport:
    a response (uvicorn writes its head and its body apart) is one write of the socket's
    transport."""
    import uvicorn
    from uvicorn.server import ServerState

    from lab.sites.introspect.guard import (
        CLIENT,
        Admission,
        CoalescingTransport,
        GuardedH11Protocol,
    )

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario() -> tuple[bool, list[bytes], bytes]:
        loop = asyncio.get_running_loop()
        config = uvicorn.Config(app, lifespan="off", log_level="warning")
        config.load()
        slot = Admission().admit(CLIENT, "127.0.0.1")
        assert slot is not None
        protocol = GuardedH11Protocol(config, ServerState(), {}, slot=slot, site="t")
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
            coalescing = isinstance(protocol.transport, CoalescingTransport)
            writes: list[bytes] = []
            real_write = transport.write
            transport.write = lambda data: (writes.append(bytes(data)),  # type: ignore
                                            real_write(data))[1]
            await loop.sock_sendall(theirs, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            received = b""
            while not received.endswith(b"ok"):
                received += await asyncio.wait_for(loop.sock_recv(theirs, 65536), 5)
            transport.close()
            return coalescing, writes, received
        finally:
            theirs.close()

    coalescing, writes, received = asyncio.run(scenario())
    assert coalescing
    assert received.startswith(b"HTTP/1.1 200 ") and len(writes) == 1
    assert writes[0] == received
