"""The checks against real servers on loopback: a dnspython UDP server run by the test,
the real introspection service over TLS, a TCP listener and commands."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import pytest

from lab.shared.clients import generate_secret, write_registry
from lab.shared.pki import create_ca, create_signing_key, issue_server_cert, public_pem
from lab.shared.revocation import revoke
from lab.shared.tokens import issue_token
from lab.sites.health.checks import DnsProbe, ExecProbe, IntrospectProbe, TcpProbe, make_probe
from lab.sites.health.config import DnsCheck, ExecCheck, IntrospectCheck, TcpCheck

ROOT = Path(__file__).resolve().parents[2]
ANYCAST = "203.0.113.53"


class DnsServer:
    """A UDP DNS server on 127.0.0.1 whose behaviour the test switches with `mode`:
    ok, servfail, wrong (another address), empty (NOERROR, no answer), silent."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.mode = "ok"
        self.queries = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            if not data:  # shut down by close()
                return
            self.queries += 1
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            if self.mode == "silent":
                continue
            if self.mode == "servfail":
                response.set_rcode(dns.rcode.SERVFAIL)
            elif self.mode in ("ok", "wrong"):
                address = ANYCAST if self.mode == "ok" else "198.51.100.7"
                response.answer.append(
                    dns.rrset.from_text(query.question[0].name, 0, "IN", "A", address))
            try:
                self.sock.sendto(response.to_wire(), peer)
            except OSError:  # closed by the test meanwhile
                return

    def close(self) -> None:
        """Like a killed server: the port is free at once and answers "unreachable".
        (A plain close() would leave it bound until the blocked recvfrom() returns.)"""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=2)


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    yield server
    server.close()


def dns_probe(port: int, timeout_ms: int = 100, **kw: Any) -> DnsProbe:
    cfg = DnsCheck(type="dns", name="dns", server="127.0.0.1", port=port,
                   timeout_ms=timeout_ms, expect=[ANYCAST], **kw)
    probe = make_probe(cfg)
    assert isinstance(probe, DnsProbe)
    return probe


def test_dns_answer_is_success(dns_server: DnsServer) -> None:
    result = dns_probe(dns_server.port).run()
    assert result.ok and result.reason == "ok"
    assert result.latency < 0.05
    assert dns_server.queries == 1


@pytest.mark.parametrize(("mode", "reason"), [
    ("servfail", "rcode SERVFAIL"),
    ("wrong", f"answer 198.51.100.7, expected {ANYCAST}"),
    ("empty", "NOERROR without an answer"),
])
def test_dns_bad_answers_fail_with_their_reason(dns_server: DnsServer, mode: str,
                                                reason: str) -> None:
    dns_server.mode = mode
    result = dns_probe(dns_server.port).run()
    assert not result.ok and result.reason == reason


def test_dns_any_address_is_fine_without_expect(dns_server: DnsServer) -> None:
    dns_server.mode = "wrong"
    cfg = DnsCheck(type="dns", name="dns", server="127.0.0.1", port=dns_server.port)
    assert DnsProbe(cfg).run().ok


def test_dns_silent_server_times_out_at_the_timeout(dns_server: DnsServer) -> None:
    dns_server.mode = "silent"
    result = dns_probe(dns_server.port, timeout_ms=80).run()
    assert not result.ok and result.reason == "timeout"
    assert 0.08 <= result.latency < 0.2


def test_dns_killed_server_is_refused_in_milliseconds() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed below: nothing listens there any more
    result = dns_probe(port, timeout_ms=500).run()
    assert not result.ok and result.reason == "refused (ICMP port unreachable)"
    assert result.latency < 0.05  # far below the 500 ms timeout: the connected socket


def test_dns_ignores_a_datagram_that_is_not_the_answer(dns_server: DnsServer,
                                                      monkeypatch) -> None:
    """A stray datagram (wrong id) must neither pass nor fail the check by itself."""
    probe = dns_probe(dns_server.port)
    real_connect = socket.socket.connect

    def connect_and_spoof(sock: socket.socket, address: Any) -> None:
        real_connect(sock, address)
        stray = dns.message.make_response(dns.message.make_query("x.", "A"))
        dns_server.sock.sendto(stray.to_wire(), sock.getsockname())

    monkeypatch.setattr(socket.socket, "connect", connect_and_spoof)
    result = probe.run()
    monkeypatch.undo()
    assert result.ok


# --- tcp and exec -------------------------------------------------------------


def test_tcp_connect_and_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        cfg = TcpCheck(type="tcp", name="tcp", host="127.0.0.1", port=port)
        assert TcpProbe(cfg).run().ok
    result = TcpProbe(cfg).run()
    assert not result.ok and result.reason == "refused"


def test_exec_exit_status_and_timeout() -> None:
    def run(argv: list[str], timeout_ms: int = 2000):
        return ExecProbe(ExecCheck(type="exec", name="x", argv=argv,
                                   timeout_ms=timeout_ms)).run()

    assert run(["true"]).ok
    failed = run([sys.executable, "-c", "import sys; sys.exit('disk full\\nreally')"])
    assert not failed.ok and failed.reason == "exit 1: really"
    slow = run(["sleep", "5"], timeout_ms=100)
    assert not slow.ok and slow.reason == "timeout" and slow.latency < 1.0
    missing = run(["/nonexistent/check"])
    assert not missing.ok and missing.reason.startswith("cannot run:")


# --- introspection over TLS --------------------------------------------------

ISSUER = "https://issuer.anycast.lab"
AUDIENCE = "https://api.anycast.lab"
SERVICE = "introspect.anycast.lab"
CLIENT_ID = "healthd-site-a"
CLIENT_SECRET = generate_secret()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = create_ca("anycast-lab test CA")
    key, cert = issue_server_cert(ca_key, ca_cert, [SERVICE], ["127.0.0.1"])
    signing = create_signing_key()
    (d / "ca.pem").write_bytes(ca_cert)
    (d / "server.key").write_bytes(key)
    (d / "server.crt").write_bytes(cert)
    (d / "signing.pub").write_bytes(public_pem(signing))
    write_registry(d / "clients.json", {CLIENT_ID: CLIENT_SECRET}, n=2**10)
    (d / "secret").write_text(CLIENT_SECRET + "\n")
    active, _ = issue_token(signing, issuer=ISSUER, audience=AUDIENCE, client_id=CLIENT_ID,
                            sub="canary", scope="health", ttl_s=3600)
    revoked, claims = issue_token(signing, issuer=ISSUER, audience=AUDIENCE,
                                  client_id=CLIENT_ID, sub="canary-revoked", scope="health",
                                  ttl_s=3600)
    (d / "active.jwt").write_text(active)
    (d / "revoked.jwt").write_text(revoked)
    revoke(d / "revoked.json", claims["jti"])
    (d / "stale.json").write_text(json.dumps({"version": 1, "revoked": {}}))
    _other_key, other_cert = create_ca("some other CA")
    (d / "other-ca.pem").write_bytes(other_cert)
    return {"dir": d, "active": active, "revoked": revoked}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_introspect(pki: dict[str, Any], revocation: str, tmp: Path,
                      **extra: Any) -> tuple[subprocess.Popen[str], int]:
    d, port = pki["dir"], _free_port()
    config = {
        "site": "site-a", "issuer": ISSUER, "audience": AUDIENCE,
        "public_key_file": str(d / "signing.pub"), "clients_path": str(d / "clients.json"),
        "revocation_path": str(d / revocation), "listen": ["127.0.0.1"], "port": port,
        "tls_cert": str(d / "server.crt"), "tls_key": str(d / "server.key"),
        "log_file": str(tmp / f"introspect-{revocation}.log"), **extra,
    }
    path = tmp / f"introspect-{revocation}.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "lab.sites.introspect", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=20) or proc.stdout.readline() != "ready\n":
            proc.kill()
            pytest.fail(f"introspection service did not start: {proc.communicate()[1]}")
    return proc, port


@pytest.fixture(scope="module")
def services(pki: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[dict[str, int]]:
    """Two services: one with the real revocation list, one whose list is stale."""
    tmp = tmp_path_factory.mktemp("introspect")
    procs = {name: _start_introspect(pki, f"{name}.json" if name == "stale" else
                                     "revoked.json", tmp)
             for name in ("good", "stale")}
    yield {name: port for name, (_, port) in procs.items()}
    for proc, _ in procs.values():
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def introspect_check(pki: dict[str, Any], port: int, **kw: Any) -> IntrospectCheck:
    d = pki["dir"]
    fields: dict[str, Any] = {
        "type": "introspect", "name": "introspect", "address": "127.0.0.1", "port": port,
        "server_name": SERVICE, "ca_file": d / "ca.pem", "client_id": CLIENT_ID,
        "client_secret_file": d / "secret", "active_token_file": d / "active.jwt",
        "revoked_token_file": d / "revoked.jwt", "timeout_ms": 2000,
    }
    fields.update(kw)
    return IntrospectCheck(**fields)


def assert_no_secrets(reason: str, pki: dict[str, Any]) -> None:
    for secret in (CLIENT_SECRET, pki["active"], pki["revoked"]):
        assert secret not in reason


def test_introspect_healthy_site_passes_over_one_connection(pki, services) -> None:
    probe = IntrospectProbe(introspect_check(pki, services["good"]))
    try:
        first = probe.run()
        assert first.ok and first.reason == "ok", first.reason
        second = probe.run()
        assert second.ok
        # Keep-alive: the second run reuses the TLS connection, so it is quick.
        assert second.latency < 0.25
        assert probe.client is not None
        pool = probe.client._transport._pool  # httpcore's pool: one connection, reused
        assert len(pool.connections) == 1
    finally:
        probe.close()


def _eventually(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_introspect_probe_learns_saturation_on_the_health_listener(pki, tmp_path) -> None:
    """The service's own listener for health checks answers in full while every client
    slot is taken, and says so: the result carries `saturated`."""
    health_port = _free_port()
    proc, port = _start_introspect(pki, "revoked.json", tmp_path, health_listen=["127.0.0.1"],
                                   health_port=health_port, limit_concurrency=2)
    ctx = ssl.create_default_context(cafile=str(pki["dir"] / "ca.pem"))
    held: list[ssl.SSLSocket] = []
    probe = IntrospectProbe(introspect_check(pki, health_port))
    on_client_side = IntrospectProbe(introspect_check(pki, port))
    try:
        first = probe.run()
        assert first.ok and first.saturated is False, first.reason
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(ctx.wrap_socket(sock, server_hostname=SERVICE))
        assert _eventually(lambda: probe.run().saturated is True)
        result = probe.run()
        assert result.ok and result.reason == "ok"  # saturated, not broken
        for sock in held:
            sock.close()

        def told_clients() -> bool:
            answer = on_client_side.run()
            return answer.ok and answer.saturated is not None

        assert _eventually(lambda: on_client_side.run().ok)
        assert not told_clients()  # clients are never told
    finally:
        for sock in held:
            sock.close()
        probe.close()
        on_client_side.close()
        proc.terminate()
        proc.wait(timeout=15)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_stale_revocation_list_fails_the_site(pki, services) -> None:
    probe = IntrospectProbe(introspect_check(pki, services["stale"]))
    try:
        result = probe.run()
    finally:
        probe.close()
    assert not result.ok
    assert result.reason == "revoked canary answered active (stale revocation list)"


@pytest.mark.parametrize(("change", "reason"), [
    ({"client_secret_file": "revoked.jwt"}, "active canary: HTTP 401"),
    ({"client_id": "nobody"}, "active canary: HTTP 401"),
    ({"active_token_file": "revoked.jwt"}, "active canary answered inactive"),
    ({"active_token_file": "missing.jwt"},
     "cannot read active_token_file: No such file or directory"),
    ({"path": "/nowhere"}, "active canary: HTTP 404"),
])
def test_introspect_deviations_fail_with_their_reason(pki, services, change: dict[str, str],
                                                      reason: str) -> None:
    kw = {k: (pki["dir"] / v if k.endswith("_file") else v) for k, v in change.items()}
    probe = IntrospectProbe(introspect_check(pki, services["good"], **kw))
    try:
        result = probe.run()
    finally:
        probe.close()
    assert not result.ok and result.reason == reason
    assert_no_secrets(result.reason, pki)


@pytest.mark.parametrize(("change", "needle"), [
    ({"ca_file": "other-ca.pem"}, "CERTIFICATE_VERIFY_FAILED"),
    ({"server_name": "wrong.anycast.lab"}, "CERTIFICATE_VERIFY_FAILED"),
])
def test_introspect_tls_must_verify_with_the_lab_ca_and_name(pki, services, change, needle,
                                                             ) -> None:
    kw = {k: (pki["dir"] / v if k.endswith("_file") else v) for k, v in change.items()}
    probe = IntrospectProbe(introspect_check(pki, services["good"], **kw))
    try:
        result = probe.run()
    finally:
        probe.close()
    assert not result.ok and result.reason.startswith("active canary call:")
    assert needle in result.reason


def test_introspect_hung_service_times_out(pki) -> None:
    """A listener that never answers (like a SIGSTOPped service): TCP connects, TLS hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        probe = IntrospectProbe(introspect_check(pki, listener.getsockname()[1],
                                                 timeout_ms=150))
        try:
            result = probe.run()
        finally:
            probe.close()
    assert not result.ok and result.reason.startswith("timeout")
    assert 0.15 <= result.latency < 0.5


class _NoAuthHandler(BaseHTTPRequestHandler):
    """A broken service that answers without asking for credentials."""

    revoked = ""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        active = self.revoked not in body
        data = json.dumps({"active": active}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_service_that_skips_client_authentication_fails(pki) -> None:
    import urllib.parse

    _NoAuthHandler.revoked = urllib.parse.urlencode({"token": pki["revoked"]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoAuthHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["dir"] / "server.crt", pki["dir"] / "server.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    probe = IntrospectProbe(introspect_check(pki, server.server_address[1]))
    try:
        result = probe.run()
    finally:
        probe.close()
        server.shutdown()
        server.server_close()
    assert not result.ok
    assert result.reason == "no-credentials call: HTTP 200, expected 401"


def test_unauthenticated_call_only_every_nth_run(pki, services, monkeypatch) -> None:
    probe = IntrospectProbe(introspect_check(pki, services["good"], unauthenticated_every=3))
    calls: list[bool] = []
    real_post = probe._post

    def counting(what: str, token: str, auth: str | None, deadline: float):
        calls.append(auth is None)
        return real_post(what, token, auth, deadline)

    monkeypatch.setattr(probe, "_post", counting)
    try:
        for _ in range(4):
            assert probe.run().ok
    finally:
        probe.close()
    assert calls.count(True) == 2  # runs 1 and 4
    assert len(calls) == 4 * 2 + 2


def test_token_file_is_reread_when_it_changes(pki, services, tmp_path: Path) -> None:
    token = tmp_path / "active.jwt"
    token.write_text(pki["revoked"])
    probe = IntrospectProbe(introspect_check(pki, services["good"], active_token_file=token))
    try:
        assert probe.run().reason == "active canary answered inactive"
        replacement = tmp_path / "new.jwt"
        replacement.write_text(pki["active"])
        os.replace(replacement, token)  # how the lab rotates a canary
        assert probe.run().ok
    finally:
        probe.close()


def test_dns_probe_timeout_is_total_not_per_datagram(dns_server: DnsServer,
                                                     monkeypatch) -> None:
    """A server that keeps sending junk must not stretch the check past its timeout."""
    dns_server.mode = "silent"
    probe = dns_probe(dns_server.port, timeout_ms=100)
    stop = threading.Event()

    def spam(target: tuple[str, int]) -> None:
        while not stop.is_set():
            dns_server.sock.sendto(b"junk", target)
            time.sleep(0.005)

    real_connect = socket.socket.connect
    started_spam: list[threading.Thread] = []

    def connect_and_spam(sock: socket.socket, address: Any) -> None:
        real_connect(sock, address)
        t = threading.Thread(target=spam, args=(sock.getsockname(),), daemon=True)
        t.start()
        started_spam.append(t)

    monkeypatch.setattr(socket.socket, "connect", connect_and_spam)
    try:
        result = probe.run()
    finally:
        monkeypatch.undo()
        stop.set()
    assert started_spam and not result.ok and result.reason == "timeout"
    assert result.latency < 0.2
