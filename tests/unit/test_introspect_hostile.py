"""A corpus of hostile requests against the real introspection service (the process, TLS
on loopback): malformed framing, oversized heads however they arrive, slow and idle
connections, connection limits, non-canonical signatures and `typ` variants. Each case has
its expected status and JSON body; every error answer is JSON and never cached."""

from __future__ import annotations

import base64
import json
import select
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from lab.shared.clients import generate_secret, write_registry
from lab.shared.pki import create_ca, create_signing_key, issue_server_cert, public_pem
from lab.shared.tokens import issue_token
from lab.sites.introspect.guard import HEAD_LIMIT

from .helpers import free_port, start_service, stop_process, wait_until

SITE = "site-h"
ISSUER, AUDIENCE = "https://issuer.anycast.lab", "anycast-lab"
SERVICE = "introspect.anycast.lab"
CLIENT_ID, SECRET = "rs-test", generate_secret()
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
REQUEST_TIMEOUT_S = 1.0
READ_DEADLINE_S = 15.0  # generous: a case fails by getting the wrong answer, not by time


class Service:
    """The introspection service as a process, with a client and a health listener."""

    def __init__(self, tmp: Path, signing_key: bytes, **limits: Any) -> None:
        ca_key, ca_cert = create_ca("hostile test CA")
        key, cert = issue_server_cert(ca_key, ca_cert, [SERVICE], ["127.0.0.1"])
        (tmp / "server.key").write_bytes(key)
        (tmp / "server.crt").write_bytes(cert)
        (tmp / "signing.pub").write_bytes(public_pem(signing_key))
        write_registry(tmp / "clients.json", {CLIENT_ID: SECRET}, n=2**10)
        self.port, self.health_port = free_port(), free_port()
        config = {
            "site": SITE, "issuer": ISSUER, "audience": AUDIENCE,
            "public_key_file": "signing.pub", "clients_path": "clients.json",
            "revocation_path": "revoked.json", "listen": ["127.0.0.1"], "port": self.port,
            "health_listen": ["127.0.0.1"], "health_port": self.health_port,
            "tls_cert": "server.crt", "tls_key": "server.key", "log_file": "introspect.log",
            "request_timeout_s": REQUEST_TIMEOUT_S, "tls_handshake_timeout_s": 1.0, **limits,
        }
        (tmp / "config.json").write_text(json.dumps(config))
        self.log = tmp / "introspect.log"
        self.ctx = ssl.create_default_context(cadata=ca_cert.decode())
        self.proc = start_service(tmp / "config.json")

    def connect(self, source: str = "127.0.0.1", *, health: bool = False,
                tls: bool = True) -> socket.socket:
        port = self.health_port if health else self.port
        sock = socket.create_connection(("127.0.0.1", port), timeout=READ_DEADLINE_S,
                                        source_address=(source, 0))
        return self.ctx.wrap_socket(sock, server_hostname=SERVICE) if tls else sock

    def close(self) -> None:
        stop_process(self.proc, timeout=15)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, signing_key: bytes) -> Iterator[Service]:
    s = Service(tmp_path_factory.mktemp("hostile"), signing_key,
                limit_concurrency=64, limit_per_client=64)
    yield s
    s.close()


@pytest.fixture(scope="module")
def patient_service(tmp_path_factory: pytest.TempPathFactory,
                    signing_key: bytes) -> Iterator[Service]:
    """An idle connection is kept for 30 s (the others' request timer closes it in 1 s)."""
    s = Service(tmp_path_factory.mktemp("patient"), signing_key,
                limit_concurrency=64, limit_per_client=64, request_timeout_s=30)
    yield s
    s.close()


@pytest.fixture
def small_service(tmp_path: Path, signing_key: bytes) -> Iterator[Service]:
    """Room for 6 client connections, 4 from any one client."""
    s = Service(tmp_path, signing_key, limit_concurrency=6, limit_per_client=4)
    yield s
    s.close()


# --- reading answers -------------------------------------------------------------


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes] | None:
    """One HTTP response off the socket (None if it closed without one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = _recv(sock)
        if not chunk:
            break
        body += chunk
    return status, headers, body[:length]


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except (ConnectionResetError, ssl.SSLError, TimeoutError):
        return b""


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset) without answering."""
    return _recv(sock) == b""


def exchange(service: Service, parts: list[bytes], pause_s: float = 0.0,
             ) -> tuple[int, dict[str, str], bytes]:
    with service.connect() as sock:
        for part in parts:
            sock.sendall(part)
            if pause_s:
                time.sleep(pause_s)  # spreads the head over many reads, on purpose
        answer = read_answer(sock)
    assert answer is not None, "the service closed the connection without an answer"
    return answer


def assert_json_error(answer: tuple[int, dict[str, str], bytes], status: int,
                      description: str | None) -> None:
    got, headers, body = answer
    assert got == status, body
    assert headers["content-type"].startswith("application/json")
    assert headers["cache-control"] == "no-store"
    assert headers["x-anycast-site"] == SITE
    doc = json.loads(body)
    assert doc["error"] in ("invalid_request", "invalid_client", "not_found",
                            "method_not_allowed")
    if description is not None:
        assert doc == {"error": "invalid_request", "error_description": description}


# --- the corpus --------------------------------------------------------------------

H = b"Host: " + SERVICE.encode() + b"\r\n"
FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"
AUTH = b"Authorization: Basic " + base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()) + b"\r\n"
POST = b"POST /introspect HTTP/1.1\r\n" + H + FORM
MALFORMED = "malformed HTTP request"
TOO_LARGE = f"request head larger than {HEAD_LIMIT} bytes"
LATE = f"request not complete within {REQUEST_TIMEOUT_S:g} s"


def _padded_head(total: int) -> bytes:
    start = b"GET /healthz HTTP/1.1\r\n" + H + b"X-Pad: "
    return start + b"a" * (total - len(start) - 4) + b"\r\n\r\n"


FRAMING = {
    "not-http": ([b"GARBAGE\r\n\r\n"], 400, MALFORMED),
    "no-host": ([b"GET /healthz HTTP/1.1\r\n\r\n"], 400, MALFORMED),
    "space-in-header-name": ([b"GET /healthz HTTP/1.1\r\n" + H + b"Bad Name: x\r\n\r\n"],
                             400, MALFORMED),
    "nul-in-header-value": ([b"GET /healthz HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n"],
                            400, MALFORMED),
    "two-content-lengths": ([POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcde"],
                            400, MALFORMED),
    "negative-content-length": ([POST + b"Content-Length: -1\r\n\r\n"], 400, MALFORMED),
    "signed-content-length": ([POST + b"Content-Length: +5\r\n\r\ntoken"], 400, MALFORMED),
    "transfer-encoding-and-content-length": (
        [POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"],
        400, MALFORMED),
    "bad-chunk-size": ([POST + AUTH + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"],
                       400, MALFORMED),
    "gzip-transfer-coding": ([POST + b"Transfer-Encoding: gzip\r\n\r\n"], 501,
                             "unsupported transfer coding"),
    "http2-preface": ([b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"], 505,
                      "only HTTP/1.0 and HTTP/1.1 are served"),
    "http-1.2": ([b"GET /healthz HTTP/1.2\r\n" + H + b"\r\n"], 505,
                 "only HTTP/1.0 and HTTP/1.1 are served"),
    "head-9k-one-read": ([_padded_head(9 * 1024)], 431, TOO_LARGE),
    "head-20k-one-read": ([_padded_head(20 * 1024)], 431, TOO_LARGE),
    "head-9k-many-reads": ([_padded_head(9 * 1024)[i:i + 512] for i in range(0, 9216, 512)],
                           431, TOO_LARGE),
    "target-9k-one-read": ([b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n"],
                           431, TOO_LARGE),
    "300-small-headers": ([b"GET /healthz HTTP/1.1\r\n" + H
                           + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 20) for i in range(300))
                           + b"\r\n"], 431, TOO_LARGE),
    "slow-head": ([b"GET /healthz HTTP/1.1\r\n" + H], 408, LATE),
    "slow-body": ([POST + AUTH + b"Content-Length: 100\r\n\r\ntoken=abc"], 408, LATE),
    "body-over-limit": ([POST + AUTH + b"Content-Length: 5000\r\n\r\n"], 413, None),
    "wrong-content-type": ([b"POST /introspect HTTP/1.1\r\n" + H + AUTH
                            + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"],
                           415, None),
    "wrong-method": ([b"GET /introspect HTTP/1.1\r\n" + H + b"\r\n"], 405, None),
    "unknown-path": ([b"GET /admin HTTP/1.1\r\n" + H + b"\r\n"], 404, None),
    "no-credentials": ([POST + b"Content-Length: 9\r\n\r\ntoken=abc"], 401, None),
}


@pytest.mark.parametrize("case", list(FRAMING))
def test_hostile_request_gets_its_json_error(service: Service, case: str) -> None:
    parts, status, description = FRAMING[case]
    pause = 0.01 if len(parts) > 1 else 0.0
    assert_json_error(exchange(service, parts, pause), status, description)


def test_head_just_under_the_limit_is_served(service: Service) -> None:
    status, headers, body = exchange(service, [_padded_head(HEAD_LIMIT)])
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert headers["cache-control"] == "no-store"


def test_the_service_keeps_serving_after_the_corpus(service: Service) -> None:
    for parts, _status, _description in FRAMING.values():
        with service.connect() as sock:
            sock.sendall(parts[0])
    status, _headers, body = exchange(service, [b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n"])
    assert status == 200 and json.loads(body)["site"] == SITE
    assert service.proc.poll() is None
    assert "Traceback" not in service.log.read_text()


# --- connections that never get to a request ---------------------------------------


def test_tls_handshake_that_never_finishes_is_closed(service: Service) -> None:
    for greeting in (b"", b"\x16\x03\x01\x00\xff\x01\x00"):  # nothing / half a ClientHello
        with service.connect(tls=False) as sock:
            sock.sendall(greeting)
            assert closed_by_server(sock), greeting


def test_idle_tls_connection_is_closed_without_an_answer(service: Service) -> None:
    with service.connect() as sock:
        assert closed_by_server(sock)


def test_idle_keep_alive_connection_is_closed(service: Service) -> None:
    with service.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
        answer = read_answer(sock)
        assert answer is not None and answer[0] == 200
        assert "connection" not in answer[1]  # kept alive ...
        assert closed_by_server(sock)  # ... until idle too long


# --- limits and saturation ----------------------------------------------------------


def saturated(service: Service) -> str:
    with service.connect(health=True) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
        answer = read_answer(sock)
    assert answer is not None and answer[0] == 200
    return answer[1]["x-anycast-saturated"]


def refused(service: Service, source: str) -> bool:
    try:
        with service.connect(source):
            return False
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        return True


def test_one_client_is_held_to_its_limit_and_the_site_is_not_saturated(
        small_service: Service) -> None:
    held = [small_service.connect("127.0.0.1") for _ in range(4)]
    try:
        assert refused(small_service, "127.0.0.1")
        assert not refused(small_service, "127.0.0.2")  # another client still gets in
        assert saturated(small_service) == "0"  # one client at its limit is contained
    finally:
        for sock in held:
            sock.close()
    assert wait_until(lambda: not refused(small_service, "127.0.0.1"), 10, 0.05)
    # What the service itself counted: that client never held more than its 4.
    status, _headers, body = exchange(small_service,
                                      [b"GET /metrics HTTP/1.1\r\n" + H + b"\r\n"])
    assert status == 200
    assert f'anycast_connections_client_peak{{site="{SITE}"}} 4' in body.decode().splitlines()


def test_site_limit_saturates_but_the_health_listener_still_answers(
        small_service: Service) -> None:
    held = [small_service.connect("127.0.0.1") for _ in range(4)]
    held += [small_service.connect("127.0.0.2") for _ in range(2)]
    try:
        assert refused(small_service, "127.0.0.3")
        assert saturated(small_service) == "1"
        # The health listener is not one of the 6: it answers the canary in full.
        with small_service.connect(health=True) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
            answer = read_answer(sock)
        assert answer is not None and answer[0] == 200
    finally:
        for sock in held:
            sock.close()
    assert wait_until(lambda: saturated(small_service) == "0", 10, 0.05)
    assert not refused(small_service, "127.0.0.3")


def test_idle_connections_at_the_limit_are_reaped_and_the_slot_comes_back(
        small_service: Service) -> None:
    held = [small_service.connect("127.0.0.1") for _ in range(4)]
    try:
        assert refused(small_service, "127.0.0.1")
        assert all(closed_by_server(sock) for sock in held)  # request timeout
    finally:
        for sock in held:
            sock.close()
    assert wait_until(lambda: not refused(small_service, "127.0.0.1"), 10, 0.05)


def test_client_answers_do_not_say_whether_the_site_is_saturated(service: Service) -> None:
    status, headers, _body = exchange(service, [b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n"])
    assert status == 200 and "x-anycast-saturated" not in headers


# --- tokens: typ and canonical signatures, through the service -----------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _signature(token: str) -> tuple[int, int]:
    raw = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
    return int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")


def _with_signature(token: str, r: int, s: int) -> str:
    return token.rsplit(".", 1)[0] + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def _low(token: str) -> str:
    r, s = _signature(token)
    return _with_signature(token, r, min(s, P256_N - s))


def _typed(signing_key: bytes, typ: object) -> str:
    _, claims = issue_token(signing_key, issuer=ISSUER, audience=AUDIENCE, client_id="web",
                            sub="alice", scope="read", ttl_s=600)
    # PyJWT leaves typ out when it is None.
    return _low(jwt.encode(claims, signing_key, algorithm="ES256", headers={"typ": typ}))


def token_variants(signing_key: bytes) -> dict[str, tuple[str, bool]]:
    good, _ = issue_token(signing_key, issuer=ISSUER, audience=AUDIENCE, client_id="web",
                          sub="alice", scope="read", ttl_s=600)
    r, s = _signature(good)
    head, sig = good.rsplit(".", 1)
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    stray = last[last.index(sig[-1]) + 1]  # same bytes, a non-zero unused bit
    return {
        "issued": (good, True),
        "padded-once": (good + "=", False),
        "padded-twice": (good + "==", False),
        "high-s-twin": (_with_signature(good, r, P256_N - s), False),
        "stray-bits": (f"{head}.{sig[:-1]}{stray}", False),
        "junk-in-signature": (f"{head}.{sig[:40]}!{sig[40:]}", False),
        "whitespace-in-signature": (f"{head}.{sig[:40]} {sig[40:]}", False),
        "typ-missing": (_typed(signing_key, None), False),
        "typ-JWT": (_typed(signing_key, "JWT"), False),
        "typ-at+jwt": (_typed(signing_key, "at+jwt"), True),
        "typ-application/at+jwt": (_typed(signing_key, "application/at+jwt"), True),
        "typ-upper-case": (_typed(signing_key, "AT+JWT"), True),
        "typ-not-a-string": (_typed(signing_key, ["at+jwt"]), False),
        "typ-other-media-type": (_typed(signing_key, "application/jwt"), False),
    }


VARIANTS = list(token_variants(create_signing_key()))


@pytest.mark.parametrize("variant", VARIANTS)
def test_token_variants_through_the_service(service: Service, signing_key: bytes,
                                            variant: str) -> None:
    token, active = token_variants(signing_key)[variant]
    body = f"token={token}".encode()
    status, headers, answer = exchange(service, [
        POST + AUTH + b"Content-Length: %d\r\n\r\n" % len(body) + body])
    assert status == 200 and headers["cache-control"] == "no-store"
    assert json.loads(answer)["active"] is active
    if not active:
        assert answer == b'{"active":false}'


def _private_dirty_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    raise AssertionError("no Private_Dirty in smaps_rollup")


def test_a_held_tls_connection_costs_the_service_little_memory(
        patient_service: Service) -> None:
    """Each open TLS connection holds a read buffer of its own: asyncio's default is a
    zeroed 256 KiB; the guard makes it 32 KiB, so 40 idle connections cost the service
    a few MiB, not 10. Every one is still open when the memory is read."""
    service, count = patient_service, 40
    warm = [service.connect("127.0.0.3") for _ in range(4)]  # first-connection costs
    for sock in warm:
        sock.close()
    before = _private_dirty_kib(service.proc.pid)
    held = []
    try:
        for _ in range(count):
            sock = service.connect("127.0.0.3")
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: " + SERVICE.encode() + b"\r\n\r\n")
            answer = read_answer(sock)
            assert answer is not None and answer[0] == 200
            held.append(sock)
        per_connection = (_private_dirty_kib(service.proc.pid) - before) / count
        closed = select.select(held, [], [], 0)[0]  # an EOF (or close_notify) waits
        assert not closed, f"{len(closed)} of {count} connections closed by the service"
    finally:
        for sock in held:
            sock.close()
    assert per_connection < 128, f"{per_connection:.0f} KiB per held connection"
