"""The introspection endpoint's request matrix (in-process) and one TLS run on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from lab.shared.clients import generate_secret, write_registry
from lab.shared.pki import create_ca, create_signing_key, issue_server_cert, public_pem
from lab.shared.revocation import revoke
from lab.shared.tokens import issue_token, sign_claims
from lab.sites.introspect.app import IntrospectConfig, create_app

from .helpers import free_port, start_service, stop_process

with warnings.catch_warnings():
    # starlette 1.10 prefers the httpx2 fork for its TestClient; the pinned httpx works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ISSUER = "https://issuer.anycast.lab"
AUDIENCE = "https://api.anycast.lab"
SITE = "site-a"
CLIENT_ID = "rs-orders"
CLIENT_SECRET = generate_secret()
OTHER_ID = "rs-billing"
OTHER_SECRET = generate_secret()
ACTIVE_KEYS = {
    *("active", "scope", "client_id", "sub", "aud"),
    *("iss", "exp", "iat", "jti", "token_type"),
}
WWW_AUTH = 'Basic realm="anycast-lab"'
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PATHS = ["/introspect", "/oauth2/introspect"]
FAST_SCRYPT_N = 2**10  # keeps the suite fast; the default cost is tested in the units file


@pytest.fixture(scope="module")
def registry_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clients") / "clients.json"
    write_registry(path, {CLIENT_ID: CLIENT_SECRET, OTHER_ID: OTHER_SECRET}, n=FAST_SCRYPT_N)
    return path


def make_config(signing_key: bytes, registry_file: Path, revocation: Path) -> IntrospectConfig:
    return IntrospectConfig(
        site=SITE,
        issuer=ISSUER,
        audience=AUDIENCE,
        public_key_pem=public_pem(signing_key).decode(),
        clients_path=registry_file,
        revocation_path=revocation,
    )


@pytest.fixture
def revocation_file(tmp_path: Path) -> Path:
    return tmp_path / "revoked.json"


@pytest.fixture
def client(signing_key: bytes, registry_file: Path, revocation_file: Path) -> Iterator[TestClient]:
    app = create_app(make_config(signing_key, registry_file, revocation_file))
    with TestClient(app) as c:
        yield c


def token_for(signing_key: bytes, **overrides: Any) -> tuple[str, dict[str, Any]]:
    kwargs: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "client_id": "web-shop",
        "sub": "alice",
        "scope": "orders:read orders:write",
        "ttl_s": 600,
    }
    kwargs.update(overrides)
    return issue_token(signing_key, **kwargs)


def introspect(
    client: TestClient,
    token: str | None,
    *,
    auth: tuple[str, str] | None = (CLIENT_ID, CLIENT_SECRET),
    path: str = "/introspect",
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    data = {} if token is None else {"token": token}
    data.update(extra or {})
    return client.post(path, data=data, auth=auth)


def assert_stamped(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-anycast-site"] == SITE
    assert response.headers["content-type"].startswith("application/json")


# --- 405 / 404 ---------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_with_allow_post(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path, auth=(CLIENT_ID, CLIENT_SECRET))
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json() == {"error": "method_not_allowed"}
    assert_stamped(r)


def test_unknown_path_is_404_json(client: TestClient) -> None:
    for path in ("/", "/introspect/", "/token", "/oauth2/introspect/x"):
        r = client.post(path, data={"token": "x"}, auth=(CLIENT_ID, CLIENT_SECRET))
        assert r.status_code == 404, path
        assert r.json() == {"error": "not_found"}
        assert_stamped(r)


# --- 415 ---------------------------------------------------------------------


def test_json_body_is_415(client: TestClient, signing_key: bytes) -> None:
    token, _ = token_for(signing_key)
    r = client.post("/introspect", json={"token": token}, auth=(CLIENT_ID, CLIENT_SECRET))
    assert r.status_code == 415
    assert r.json()["error"] == "invalid_request"
    assert "application/x-www-form-urlencoded" in r.json()["error_description"]
    assert_stamped(r)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "multipart/form-data; boundary=x", "application/x-www"]
)
def test_other_content_types_are_415(client: TestClient, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = client.post(
        "/introspect", content=b"token=abc", headers=headers, auth=(CLIENT_ID, CLIENT_SECRET)
    )
    assert r.status_code == 415
    assert r.json()["error"] == "invalid_request"


def test_form_content_type_parameters_are_allowed(client: TestClient, signing_key: bytes) -> None:
    token, _ = token_for(signing_key)
    r = client.post(
        "/introspect",
        content=f"token={token}".encode(),
        headers={"Content-Type": "Application/X-WWW-Form-Urlencoded ; charset=UTF-8"},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert r.status_code == 200
    assert r.json()["active"] is True


# --- 413 ---------------------------------------------------------------------


def test_body_over_limit_with_content_length_is_413(client: TestClient) -> None:
    r = introspect(client, "x" * 5000)
    assert r.status_code == 413
    assert r.json()["error"] == "invalid_request"
    assert_stamped(r)


def test_oversized_content_length_is_413_before_authentication(client: TestClient) -> None:
    r = introspect(client, "x" * 5000, auth=None)
    assert r.status_code == 413


def test_body_at_limit_is_not_413(client: TestClient) -> None:
    body = b"token=" + b"a" * (4096 - len(b"token="))
    r = client.post("/introspect", content=body, headers=FORM, auth=(CLIENT_ID, CLIENT_SECRET))
    assert r.status_code == 200
    assert r.json() == {"active": False}


def test_chunked_body_over_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"token="
        for _ in range(10):
            yield b"a" * 1000

    r = client.post("/introspect", content=chunks(), headers=FORM, auth=(CLIENT_ID, CLIENT_SECRET))
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert r.status_code == 413


def test_endless_chunked_body_is_cut_off_while_reading(
    signing_key: bytes, registry_file: Path, revocation_file: Path
) -> None:
    """Drive the ASGI app directly: it must answer 413 after reading ~limit bytes."""
    app = create_app(make_config(signing_key, registry_file, revocation_file))
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode())
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/introspect",
        "raw_path": b"/introspect",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"introspect.lab"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"transfer-encoding", b"chunked"),
            (b"authorization", b"Basic " + basic),
        ],
        "client": ("192.0.2.1", 40000),
        "server": ("203.0.113.53", 443),
    }
    chunks_read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal chunks_read
        chunks_read += 1
        if chunks_read > 1000:
            raise AssertionError("the app kept reading an endless body")
        return {"type": "http.request", "body": b"a" * 512, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert chunks_read <= 4096 // 512 + 1
    headers = dict(start["headers"])
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"x-anycast-site"] == SITE.encode()


# --- 401 ---------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("Basic " + _b64(f"{CLIENT_ID}:wrong-secret".encode()), id="wrong-secret"),
        pytest.param("Basic " + _b64(f"nobody:{CLIENT_SECRET}".encode()), id="unknown-client"),
        pytest.param("Basic " + _b64(f"{OTHER_ID}:{CLIENT_SECRET}".encode()), id="other-secret"),
        pytest.param("Basic !!!not-base64!!!", id="not-base64"),
        pytest.param("Basic " + _b64(b"no-colon-here"), id="no-colon"),
        pytest.param("Basic " + _b64(b":" + CLIENT_SECRET.encode()), id="empty-id"),
        pytest.param("Basic " + _b64(f"{CLIENT_ID}:".encode()), id="empty-secret"),
        pytest.param("Basic " + _b64(b"\xff\xfe:\xff"), id="not-utf8"),
        pytest.param("Basic", id="no-credentials"),
        pytest.param("Bearer " + _b64(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()), id="bearer"),
    ],
)
def test_bad_client_credentials_are_401(
    client: TestClient, signing_key: bytes, authorization: str | None
) -> None:
    token, _ = token_for(signing_key)
    headers = dict(FORM)
    if authorization is not None:
        headers["Authorization"] = authorization
    r = client.post("/introspect", content=f"token={token}".encode(), headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == WWW_AUTH
    assert r.json() == {"error": "invalid_client"}
    assert_stamped(r)


def test_two_authorization_headers_are_401(client: TestClient, signing_key: bytes) -> None:
    token, _ = token_for(signing_key)
    good = "Basic " + _b64(f"{CLIENT_ID}:{CLIENT_SECRET}".encode())
    headers = [*FORM.items(), ("Authorization", good), ("Authorization", good)]
    r = client.post("/introspect", content=f"token={token}".encode(), headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == WWW_AUTH


def test_authentication_is_checked_before_the_token(client: TestClient) -> None:
    for body in (b"", b"token=", b"token_type_hint=access_token"):
        for auth in ((CLIENT_ID, "wrong"), None):
            r = client.post("/introspect", content=body, headers=FORM, auth=auth)
            assert r.status_code == 401, (body, auth)


def test_every_registered_client_can_call(client: TestClient, signing_key: bytes) -> None:
    token, _ = token_for(signing_key)
    for auth in ((CLIENT_ID, CLIENT_SECRET), (OTHER_ID, OTHER_SECRET)):
        for _ in range(2):  # second call takes the cached path
            r = introspect(client, token, auth=auth)
            assert r.status_code == 200
            assert r.json()["active"] is True


def test_scrypt_work_is_bounded_under_a_burst(
    signing_key: bytes,
    registry_file: Path,
    revocation_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lab.shared import clients as clients_module
    from lab.sites.introspect import app as app_module

    running = peak = calls = 0
    lock = threading.Lock()
    real_scrypt = clients_module._scrypt

    def counting_scrypt(*args: Any) -> bytes:
        nonlocal running, peak, calls
        with lock:
            running += 1
            calls += 1
            peak = max(peak, running)
        try:
            time.sleep(0.01)  # widen the window in which overlaps would show
            return real_scrypt(*args)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(clients_module, "_scrypt", counting_scrypt)
    app = create_app(make_config(signing_key, registry_file, revocation_file))
    token, _ = token_for(signing_key)

    async def burst(auth: tuple[str, str], n: int) -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as c:
            rs = await asyncio.gather(
                *(c.post("/introspect", data={"token": token}, auth=auth) for _ in range(n))
            )
        return [r.status_code for r in rs]

    assert asyncio.run(burst((CLIENT_ID, CLIENT_SECRET), 20)) == [200] * 20
    # One new client's burst: at most one scrypt per slot, the rest hit the cache.
    assert calls <= app_module.KDF_CONCURRENCY
    calls = 0
    assert asyncio.run(burst((OTHER_ID, "wrong"), 8)) == [401] * 8
    assert calls == 8  # failures are never cached ...
    assert peak <= app_module.KDF_CONCURRENCY  # ... but never run more than the bound at once


def test_scheme_name_is_case_insensitive(client: TestClient, signing_key: bytes) -> None:
    token, _ = token_for(signing_key)
    headers = dict(FORM, Authorization="bAsIc " + _b64(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()))
    r = client.post("/introspect", content=f"token={token}".encode(), headers=headers)
    assert r.status_code == 200


# --- 400 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="no-body"),
        pytest.param(b"token_type_hint=access_token", id="missing-token"),
        pytest.param(b"token=", id="empty-token"),
        pytest.param(b"token", id="bare-token-name"),
        pytest.param(b"token=a&token=b", id="repeated-token"),
        pytest.param(b"token=%ff%fe", id="not-utf8"),
        pytest.param(b"&".join(b"p%d=1" % i for i in range(40)), id="too-many-fields"),
    ],
)
def test_bad_form_is_400(client: TestClient, body: bytes) -> None:
    r = client.post("/introspect", content=body, headers=FORM, auth=(CLIENT_ID, CLIENT_SECRET))
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    assert isinstance(r.json()["error_description"], str)
    assert_stamped(r)


# --- 200 active --------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_active_token(client: TestClient, signing_key: bytes, path: str) -> None:
    token, claims = token_for(signing_key)
    r = introspect(client, token, path=path)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == ACTIVE_KEYS
    assert body == {
        "active": True,
        "scope": "orders:read orders:write",
        "client_id": "web-shop",
        "sub": "alice",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": claims["exp"],
        "iat": claims["iat"],
        "jti": claims["jti"],
        "token_type": "Bearer",
    }
    assert body["exp"] - body["iat"] == 600
    assert_stamped(r)


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "something_unknown", ""])
def test_token_type_hint_is_optional_and_any_value_is_accepted(
    client: TestClient, signing_key: bytes, hint: str
) -> None:
    token, claims = token_for(signing_key)
    r = introspect(client, token, extra={"token_type_hint": hint})
    assert r.status_code == 200
    assert r.json()["jti"] == claims["jti"]


# --- 200 inactive ------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "client_id": "web-shop",
        "scope": "orders:read",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "jti-" + os.urandom(6).hex(),
        "token_type": "Bearer",
    }
    claims.update(overrides)
    return claims


def _bad_tokens(signing_key: bytes) -> dict[str, str]:
    now = int(time.time())
    other_key = create_signing_key()
    good, _ = token_for(signing_key)
    header, payload, sig = good.split(".")
    forged_payload = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_payload["scope"] = "admin"
    hs_header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    hs_body = _b64url(json.dumps(_claims()).encode())
    hs_sig = hmac.new(public_pem(signing_key), f"{hs_header}.{hs_body}".encode(), hashlib.sha256)
    return {
        "expired": token_for(signing_key, now=now - 7200, ttl_s=3600)[0],
        "expires-now": sign_claims(signing_key, _claims(exp=now)),
        "nbf-in-future": sign_claims(signing_key, _claims(nbf=now + 600)),
        "iat-in-future": sign_claims(signing_key, _claims(iat=now + 600, nbf=now + 600)),
        "wrong-issuer": token_for(signing_key, issuer="https://evil.example")[0],
        "wrong-audience": token_for(signing_key, audience="https://other-api.lab")[0],
        "signed-by-other-key": token_for(other_key)[0],
        "alg-none": jwt.encode(_claims(), None, algorithm="none"),
        "alg-none-with-sig": jwt.encode(_claims(), None, algorithm="none") + sig,
        "hs256-with-public-key": f"{hs_header}.{hs_body}.{_b64url(hs_sig.digest())}",
        "tampered-payload": f"{header}.{_b64url(json.dumps(forged_payload).encode())}.{sig}",
        "missing-jti": sign_claims(
            signing_key, {k: v for k, v in _claims().items() if k != "jti"}
        ),
        "missing-exp": sign_claims(
            signing_key, {k: v for k, v in _claims().items() if k != "exp"}
        ),
        "exp-not-a-number": sign_claims(signing_key, _claims(exp="never")),
        "garbage": "this is not a token",
        "three-dots": "a.b.c",
        "truncated": good[: len(good) // 2],
    }


BAD_TOKEN_KINDS = list(_bad_tokens(create_signing_key()))


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
def test_inactive_tokens_answer_exactly_active_false(
    client: TestClient, signing_key: bytes, kind: str
) -> None:
    token = _bad_tokens(signing_key)[kind]
    r = introspect(client, token)
    assert r.status_code == 200
    assert r.json() == {"active": False}
    assert r.content == b'{"active":false}'
    assert_stamped(r)


def test_revoked_token_is_inactive(
    client: TestClient, signing_key: bytes, revocation_file: Path
) -> None:
    token, claims = token_for(signing_key)
    revoke(revocation_file, claims["jti"])
    r = introspect(client, token)
    assert r.status_code == 200
    assert r.json() == {"active": False}


def test_revocation_is_picked_up_without_restart(
    client: TestClient, signing_key: bytes, revocation_file: Path
) -> None:
    token, claims = token_for(signing_key)
    bystander, _ = token_for(signing_key)
    assert introspect(client, token).json()["active"] is True
    assert client.get("/healthz").json()["revocation_version"] == 0

    assert revoke(revocation_file, claims["jti"]) == 1
    assert introspect(client, token).json() == {"active": False}
    assert introspect(client, bystander).json()["active"] is True
    assert client.get("/healthz").json()["revocation_version"] == 1

    # Several rewrites in a row (same second, maybe same mtime tick) are all seen.
    for i in range(5):
        t, c = token_for(signing_key)
        assert introspect(client, t).json()["active"] is True
        assert revoke(revocation_file, c["jti"]) == 2 + i
        assert introspect(client, t).json() == {"active": False}


# --- every response is stamped ------------------------------------------------


def test_every_response_carries_no_store_and_site(client: TestClient, signing_key: bytes) -> None:
    token, _ = token_for(signing_key)
    auth = (CLIENT_ID, CLIENT_SECRET)
    responses = {
        200: introspect(client, token),
        400: introspect(client, ""),
        401: introspect(client, token, auth=None),
        404: client.get("/nope"),
        405: client.get("/introspect"),
        413: introspect(client, "x" * 9000),
        415: client.post("/introspect", json={"token": token}, auth=auth),
    }
    responses[201] = client.get("/healthz")  # key only labels it; status checked below
    for status, r in responses.items():
        assert r.status_code == (200 if status == 201 else status)
        assert_stamped(r)


def test_unexpected_errors_are_json_500_and_stamped(
    signing_key: bytes, registry_file: Path, revocation_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_config(signing_key, registry_file, revocation_file))

    def explode(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("detail quoting " + CLIENT_SECRET)

    app.state.registry.check_cached = explode
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR):
        r = introspect(c, "tok")
    assert r.status_code == 500
    assert r.json() == {"error": "server_error"}
    assert_stamped(r)
    assert "RuntimeError" in caplog.text
    assert CLIENT_SECRET not in caplog.text


def test_tokens_and_secrets_are_never_logged(
    client: TestClient, signing_key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    token, _ = token_for(signing_key)
    bad = _bad_tokens(signing_key)["signed-by-other-key"]
    with caplog.at_level(logging.DEBUG):
        introspect(client, token)
        introspect(client, bad)
        introspect(client, token, auth=(CLIENT_ID, "wrong-" + CLIENT_SECRET))
        introspect(client, token, auth=("nobody-" + CLIENT_SECRET, CLIENT_SECRET))
    assert caplog.records, "expected at least the authentication-failure lines"
    for secret in (token, bad, CLIENT_SECRET, token.split(".")[2]):
        assert secret not in caplog.text


# --- health ------------------------------------------------------------------


def test_healthz_ok(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "site": SITE, "revocation_version": 0}
    assert_stamped(r)


def test_healthz_reports_file_version(
    signing_key: bytes, registry_file: Path, revocation_file: Path
) -> None:
    revoke(revocation_file, "a")
    revoke(revocation_file, "b")
    with TestClient(create_app(make_config(signing_key, registry_file, revocation_file))) as c:
        assert c.get("/healthz").json()["revocation_version"] == 2


def test_never_loaded_revocation_list_is_not_ready(
    signing_key: bytes, registry_file: Path, revocation_file: Path
) -> None:
    revocation_file.write_text("{not json")
    app = create_app(make_config(signing_key, registry_file, revocation_file))
    with TestClient(app) as c:
        r = c.get("/healthz")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable"
        assert_stamped(r)
        token, _ = token_for(signing_key)
        r = introspect(c, token)
        assert r.status_code == 503
        assert r.json()["error"] == "temporarily_unavailable"
        # Repairing the file makes the site ready without a restart.
        revocation_file.write_text(json.dumps({"version": 3, "revoked": {}}))
        assert c.get("/healthz").json() == {"status": "ok", "site": SITE, "revocation_version": 3}
        assert introspect(c, token).json()["active"] is True


def test_corrupt_revocation_file_keeps_last_good_state(
    client: TestClient,
    signing_key: bytes,
    revocation_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token, claims = token_for(signing_key)
    revoke(revocation_file, claims["jti"])
    assert introspect(client, token).json() == {"active": False}
    with caplog.at_level(logging.WARNING):
        revocation_file.write_text('{"version": 2, "revoked": ')  # truncated
        assert introspect(client, token).json() == {"active": False}
    assert "rejected" in caplog.text
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["revocation_version"] == 1


# --- TLS on loopback through the real runner ----------------------------------


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def tls_server(tmp_path: Path, signing_key: bytes, registry_file: Path) -> Iterator[dict[str, Any]]:
    ca_key, ca_cert = create_ca("anycast-lab test CA")
    addresses = ["127.0.0.1"] + (["::1"] if _ipv6_loopback_works() else [])
    key, cert = issue_server_cert(ca_key, ca_cert, ["introspect.lab"], addresses)
    (tmp_path / "ca.pem").write_bytes(ca_cert)
    (tmp_path / "server.key").write_bytes(key)
    (tmp_path / "server.crt").write_bytes(cert)
    (tmp_path / "signing.pub").write_bytes(public_pem(signing_key))
    port = free_port()
    config = {
        "site": SITE,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "public_key_file": "signing.pub",
        "clients_path": str(registry_file),
        "revocation_path": "revoked.json",
        "listen": addresses,
        "port": port,
        "tls_cert": "server.crt",
        "tls_key": "server.key",
        "log_file": "introspect.log",
    }
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    proc = start_service(config_path)
    try:
        yield {
            "proc": proc,
            "port": port,
            "addresses": addresses,
            "ca": ca_cert,
            "dir": tmp_path,
        }
    finally:
        stop_process(proc, signal.SIGKILL)


def _url(address: str, port: int, path: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}{path}"


def test_tls_server_on_loopback(tls_server: dict[str, Any], signing_key: bytes) -> None:
    port = tls_server["port"]
    ca_ctx = ssl.create_default_context(cadata=tls_server["ca"].decode())
    token, claims = token_for(signing_key)
    with httpx.Client(verify=ca_ctx, timeout=10) as http:
        for address in tls_server["addresses"]:  # one process serves every address
            r = http.post(
                _url(address, port, "/introspect"),
                data={"token": token},
                auth=(CLIENT_ID, CLIENT_SECRET),
            )
            assert r.status_code == 200
            assert r.json()["jti"] == claims["jti"]
            assert r.headers["x-anycast-site"] == SITE
            assert "server" not in r.headers
            h = http.get(_url(address, port, "/healthz"))
            assert h.json() == {"status": "ok", "site": SITE, "revocation_version": 0}

        # Keep-alive responses are not held back by Nagle + delayed ACK: that stall is a
        # fixed ~40 ms on every request after the first, so most requests would show it.
        stalled = 0
        for _ in range(20):
            started = time.monotonic()
            assert http.get(_url("127.0.0.1", port, "/healthz")).status_code == 200
            stalled += time.monotonic() - started >= 0.035
        assert stalled < 10

        # Revocation reaches the running process.
        revoke(tls_server["dir"] / "revoked.json", claims["jti"])
        r = http.post(
            _url("127.0.0.1", port, "/introspect"),
            data={"token": token},
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
        assert r.json() == {"active": False}

    # Without the lab CA the certificate does not verify.
    system_ctx = ssl.create_default_context()
    with (
        httpx.Client(verify=system_ctx, timeout=10) as http,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        http.get(_url("127.0.0.1", port, "/healthz"))

    # Plain HTTP on the TLS port gets no answer from the app.
    with httpx.Client(timeout=10) as http, pytest.raises(httpx.HTTPError):
        http.get(f"http://127.0.0.1:{port}/healthz")

    proc: subprocess.Popen[str] = tls_server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    log_text = (tls_server["dir"] / "introspect.log").read_text()
    assert "listening on https://127.0.0.1" in log_text
    assert token not in log_text
    assert CLIENT_SECRET not in log_text
