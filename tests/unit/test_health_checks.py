"""The checks against real servers on loopback: a dnspython UDP server run by the test,
the real introspection service over TLS, a TCP listener and commands."""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
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

from lab.sites.health.checks import DnsProbe, ExecProbe, IntrospectProbe, TcpProbe, make_probe
from lab.sites.health.config import DnsCheck, ExecCheck, TcpCheck

from .helpers import (
    ANYCAST,
    SERVICE,
    DnsServer,
    assert_no_secrets,
    free_port,
    introspect_check,
    start_introspect,
    stop_process,
    wait_until,
)


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
    assert 0.08 <= result.latency < 1.0  # stopped at its timeout, not hanging on


def test_dns_killed_server_is_refused_in_milliseconds() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed below: nothing listens there any more
    result = dns_probe(port, timeout_ms=3000).run()
    assert not result.ok and result.reason == "refused (ICMP port unreachable)"
    assert result.latency < 1.5  # far below the 3 s timeout: the connected socket


def test_dns_kept_socket_sees_a_kill_and_a_restart(dns_server: DnsServer,
                                                   monkeypatch) -> None:
    """One socket for every run: refused while the server is gone, answered again once a
    server is back on the port, and a late answer to an earlier run never counts."""
    from lab.sites.health import checks

    monkeypatch.setattr(checks.secrets, "randbits", lambda bits: 4242)  # a known id
    probe = dns_probe(dns_server.port)
    try:
        assert probe.run().ok
        sock = probe.sock
        port = dns_server.port
        dns_server.close()
        assert probe.run().reason == "refused (ICMP port unreachable)"
        back = DnsServer(port)
        try:
            assert probe.run().ok and probe.sock is sock
            back.mode = "silent"
            assert probe.run().reason == "timeout"
            # A good answer arriving after its run gave up (same id: the worst case) is
            # dropped by the next run, which gets its own answer.
            late = dns.message.make_query(QNAME, "A")
            late.id = 4242
            good = dns.message.make_response(late)
            good.answer.append(dns.rrset.from_text(QNAME, 0, "IN", "A", ANYCAST))
            back.sock.sendto(good.to_wire(), sock.getsockname())
            assert wait_until(lambda: _queued(sock), 2, 0.01)
            back.mode = "servfail"
            assert probe.run().reason == "rcode SERVFAIL"
        finally:
            back.close()
    finally:
        probe.close()


QNAME = "health.anycast.lab."  # the DnsCheck default


def _queued(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


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
    assert not slow.ok and slow.reason == "timeout" and slow.latency < 3.0
    missing = run(["/nonexistent/check"])
    assert not missing.ok and missing.reason.startswith("cannot run:")


# --- introspection over TLS --------------------------------------------------

def test_introspect_healthy_site_passes_over_one_connection(pki, services) -> None:
    probe = IntrospectProbe(introspect_check(pki, services["good"]))
    try:
        first = probe.run()
        assert first.ok and first.reason == "ok", first.reason
        second = probe.run()
        assert second.ok
        # Keep-alive: the second run reuses the TLS connection.
        assert probe.client.connections == 1 and probe.client.conn is not None
    finally:
        probe.close()


def test_introspect_probe_learns_saturation_on_the_health_listener(pki, tmp_path) -> None:
    """The service's own listener for health checks answers in full while every client
    slot is taken, and says so: the result carries `saturated`."""
    health_port = free_port()
    proc, port = start_introspect(pki, "revoked.json", tmp_path, health_listen=["127.0.0.1"],
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
        assert wait_until(lambda: probe.run().saturated is True, 10, 0.05)
        result = probe.run()
        assert result.ok and result.reason == "ok"  # saturated, not broken
        for sock in held:
            sock.close()

        def told_clients() -> bool:
            answer = on_client_side.run()
            return answer.ok and answer.saturated is not None

        assert wait_until(lambda: on_client_side.run().ok, 10, 0.05)
        assert not told_clients()  # clients are never told
    finally:
        for sock in held:
            sock.close()
        probe.close()
        on_client_side.close()
        stop_process(proc, timeout=15)


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
    assert 0.15 <= result.latency < 1.5


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


def test_revoked_canary_every_nth_run_only_while_steady(pki, services, monkeypatch) -> None:
    probe = IntrospectProbe(introspect_check(pki, services["good"], revoked_every=3,
                                             unauthenticated_every=1000))
    asked: list[str] = []
    real_post = probe._post

    def counting(what: str, token: str, auth: str | None, deadline: float):
        asked.append(what)
        return real_post(what, token, auth, deadline)

    monkeypatch.setattr(probe, "_post", counting)

    def revoked_asked(steady: bool) -> bool:
        probe.steady = steady
        before = len(asked)
        assert probe.run().ok
        return "revoked canary" in asked[before:]

    try:
        # Not steady (start, rising, after a failure): every run asks.
        assert [revoked_asked(False) for _ in range(3)] == [True, True, True]
        # Steady: every 3rd run; back to every run as soon as it is not.
        assert [revoked_asked(True) for _ in range(6)] == [False, False, True,
                                                           False, False, True]
        assert revoked_asked(True) is False
        assert revoked_asked(False) is True
        assert [revoked_asked(True) for _ in range(3)] == [False, False, True]
    finally:
        probe.close()
    assert asked.count("active canary") == 14  # the active canary: every run


def test_stale_list_is_found_on_a_steady_run_that_asks(pki, services) -> None:
    probe = IntrospectProbe(introspect_check(pki, services["stale"], revoked_every=2))
    probe.steady = True
    try:
        first, second = probe.run(), probe.run()
    finally:
        probe.close()
    assert first.ok  # skipped the revoked canary
    assert not second.ok
    assert second.reason == "revoked canary answered active (stale revocation list)"


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
    assert result.latency < 1.0  # the 100 ms timeout held despite the junk


def test_dns_receive_soon_gives_the_verdict_when_the_answer_is_there(
        dns_server: DnsServer) -> None:
    probe = dns_probe(dns_server.port)
    try:
        assert probe.send() is None
        assert probe.receive_soon(5000) == (True, "ok")  # returns as soon as it is read
        dns_server.mode = "silent"
        assert probe.send() is None
        assert probe.receive_soon(20) is None  # nothing came: left to the caller's loop
    finally:
        probe.close()


def test_inline_dns_posts_its_result_in_the_tick_that_sent_the_query(
        dns_server: DnsServer, monkeypatch) -> None:
    import queue
    import selectors

    from lab.sites.health import daemon

    monkeypatch.setattr(daemon, "QUICK_ANSWER_MS", 5000)  # however slow the test machine
    cfg = DnsCheck(type="dns", name="dns", server="127.0.0.1", port=dns_server.port,
                   expect=[ANYCAST])
    results: queue.SimpleQueue[Any] = queue.SimpleQueue()
    with selectors.DefaultSelector() as selector:
        inline = daemon.InlineDns(cfg, DnsProbe(cfg), results, selector)
        try:
            inline.start(0.0)
            inline.tick(time.monotonic())
            done = results.get_nowait()  # no second wake-up was needed for the answer
            assert done.result.ok and done.result.reason == "ok"
            assert inline.started is None and results.empty()
        finally:
            inline.join(1)
            inline.probe.close()


def test_server_watch_tells_a_closed_connection_from_data_and_reports_a_refusal() -> None:
    from lab.sites.health.checks import ServerWatch

    with socket.create_server(("127.0.0.1", 0)) as listener:
        watch = ServerWatch("127.0.0.1", listener.getsockname()[1])
        try:
            assert watch.connect() is None and watch.sock is not None  # never blocks
            first = watch.sock
            assert watch.connect() is None and watch.sock is first  # under way: kept
            if watch.connecting:
                assert wait_until(lambda: _writable(first), 2, 0.01)
                assert watch.connected() is None and not watch.connecting
            assert watch.connect() is None and watch.sock is first  # open: kept
            server_end, _ = listener.accept()
            server_end.sendall(b"unasked")
            assert wait_until(lambda: _readable(first), 2, 0.01)
            assert watch.closed() is False and watch.sock is first  # data: dropped, open
            server_end.close()  # what a killed server's kernel does
            assert wait_until(lambda: _readable(first), 2, 0.01)
            assert watch.closed() is True and watch.sock is None
        finally:
            watch.close()
    refused = ServerWatch("127.0.0.1", free_port())
    assert refused.connect() is None and refused.connecting and refused.sock is not None
    assert wait_until(lambda: _writable(refused.sock), 2, 0.01)
    assert refused.connected() == "refused" and refused.sock is None


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _writable(sock: socket.socket | None) -> bool:
    return sock is not None and bool(select.select([], [sock], [], 0)[1])


def _inline_dns(port: int, results: Any, selector: Any, **kw: Any) -> Any:
    from lab.sites.health import daemon

    cfg = DnsCheck(type="dns", name="dns", server="127.0.0.1", port=port,
                   expect=[ANYCAST], **kw)
    return daemon.InlineDns(cfg, DnsProbe(cfg), results, selector)


def _serve_readable(selector: Any, timeout: float) -> int:
    """What the daemon's loop does with the selector's events; how many there were."""
    events = selector.select(timeout)
    for key, _ in events:
        key.data.readable()
    return len(events)


@pytest.mark.parametrize("watch_tcp", [True, False])
def test_a_closed_watch_connection_sends_the_next_query_at_once(
        dns_server: DnsServer, monkeypatch, watch_tcp: bool) -> None:
    """After a good run the DNS check keeps a TCP connection to the server's port. When
    the server closes it, the loop connects again: taken (an idle close), nothing else
    happens; refused (the server is gone), the next query goes out at once instead of at
    its time, and one that is not answered is sent again every few ms until its verdict.
    Off, none of it."""
    import queue
    import selectors

    from lab.sites.health import daemon

    monkeypatch.setattr(daemon, "QUICK_ANSWER_MS", 5000)  # however slow the test machine
    results: queue.SimpleQueue[Any] = queue.SimpleQueue()
    port = dns_server.port
    listener = socket.create_server(("127.0.0.1", port))
    with selectors.DefaultSelector() as selector:
        inline = _inline_dns(port, results, selector, watch_tcp=watch_tcp,
                             timeout_ms=60_000)
        try:
            watch = inline.probe.watch
            inline.start(0.0)
            inline.tick(time.monotonic())
            assert results.get_nowait().result.ok
            assert (watch.sock is not None) is watch_tcp
            if not watch_tcp:
                return
            # The connect does not hold the loop: its outcome is one of the loop's events.
            assert wait_until(lambda: (_serve_readable(selector, 0.01),
                                       not watch.connecting)[-1], 2, 0)
            assert watch.sock is not None and inline.watch_link.problem is None
            later = time.monotonic() + 3600
            inline.start(later)  # the next run an hour away
            first = watch.sock
            server_end, _ = listener.accept()
            server_end.close()  # an idle close: the listener is still there
            assert wait_until(lambda: _serve_readable(selector, 0.05) > 0, 2, 0)
            assert watch.sock not in (None, first) and inline.at == later
            assert wait_until(lambda: (_serve_readable(selector, 0.01),
                                       not watch.connecting)[-1], 2, 0)
            assert watch.sock is not None and inline.at == later  # taken: nothing more
            # The server goes: the watch's new connection, still in its listener's queue
            # (a dying server's last moment), is reset, and connecting again is refused.
            listener.close()
            assert wait_until(lambda: (_serve_readable(selector, 0.05),
                                       watch.sock is None)[-1], 2, 0)
            assert inline.at < later
            monkeypatch.setattr(daemon, "QUICK_ANSWER_MS", 1)
            dns_server.mode = "silent"  # the hurried query is not answered...
            asked = dns_server.queries
            inline.tick(time.monotonic())
            assert wait_until(lambda: dns_server.queries == asked + 1, 2, 0.01)
            assert inline.started is not None and inline.resend_at is not None
            assert inline.next_time(1.0) == inline.resend_at < inline.deadline
            inline.tick(inline.resend_at)  # the loop's timer for the resend
            assert wait_until(lambda: dns_server.queries == asked + 2, 2, 0.01)  # ...so again
            listener = socket.create_server(("127.0.0.1", port))  # back
            dns_server.mode = "ok"
            inline.tick(inline.resend_at)
            assert wait_until(lambda: (_serve_readable(selector, 0.01),
                                       not results.empty())[-1], 2, 0)
            done = results.get_nowait()
            assert done.result.ok and inline.resend_at is None
            assert inline.probe.watch.sock is not None  # connected again after a good run
        finally:
            inline.join(1)
            inline.probe.close()
            listener.close()


def test_a_close_seen_between_a_verdict_and_the_next_start_still_hurries_that_run(
        dns_server: DnsServer, monkeypatch) -> None:
    """A good answer and the watch's close can come in one batch of the loop's events:
    the verdict is queued, the close hurries, and only then is the next run started (at
    its interval). That run must still go out at once."""
    import queue
    import selectors

    from lab.sites.health import daemon

    monkeypatch.setattr(daemon, "QUICK_ANSWER_MS", 5000)
    results: queue.SimpleQueue[Any] = queue.SimpleQueue()
    with selectors.DefaultSelector() as selector:
        inline = _inline_dns(dns_server.port, results, selector, watch_tcp=False)
        try:
            inline.start(0.0)
            inline.tick(time.monotonic())
            assert results.get_nowait().result.ok and inline.started is None
            now = time.monotonic()
            inline.hurry(now)  # the close, before the verdict is taken
            inline.start(now + 3600)  # what on_result asks: the next run an hour away
            assert inline.at == now and inline.next_time(1.0) == now
            asked = dns_server.queries
            inline.tick(time.monotonic())
            assert wait_until(lambda: dns_server.queries == asked + 1, 2, 0.01)
            assert results.get(timeout=5).result.ok
            inline.start(time.monotonic() + 3600)  # hurried once only
            assert inline.at > time.monotonic() + 3000
        finally:
            inline.join(1)
            inline.probe.close()


def test_a_worker_hurried_while_its_run_is_under_way_starts_the_next_at_once() -> None:
    import queue

    from lab.sites.health import daemon
    from lab.sites.health.checks import Probe

    class Counting(Probe):
        runs = 0

        def attempt(self, started: float) -> tuple[bool, str]:
            self.runs += 1
            return True, "ok"

    results: queue.SimpleQueue[Any] = queue.SimpleQueue()
    cfg = TcpCheck(type="tcp", name="kept", host="127.0.0.1", port=1, interval_ms=1000)
    probe = Counting()
    worker = daemon.Worker(cfg, probe, results)
    try:
        worker.start(0.0)
        results.get(timeout=5)  # its result is in the queue, not yet taken...
        worker.hurry(time.monotonic())  # ...when the kept connection closes
        worker.start(time.monotonic() + 3600)
        results.get(timeout=5)  # ran now, not in an hour
        assert probe.runs == 2 and not worker.hurried
        worker.start(time.monotonic() + 3600)  # hurried once only
        with pytest.raises(queue.Empty):
            results.get(timeout=0.3)
        assert probe.runs == 2
    finally:
        worker.stop()
        worker.join(1)


@pytest.mark.parametrize("interval_ms", [1000, 5000])
def test_a_worker_check_runs_at_once_when_its_kept_connection_closes(interval_ms) -> None:
    """The loop watches a worker's kept connection for the server closing it (not for
    data: the worker reads its answers itself) and then runs that check at once; only
    for a check faster than the service's keep-alive timeout (a slower one's connection
    is closed as idle, which says nothing)."""
    import queue
    import selectors

    from lab.sites.health import daemon
    from lab.sites.health.checks import Probe, Result

    class Kept(Probe):
        def __init__(self, sock: socket.socket) -> None:
            self.sock, self.runs = sock, 0

        def attempt(self, started: float) -> tuple[bool, str]:
            self.runs += 1
            return True, "ok"

        def kept_socket(self) -> socket.socket | None:
            return self.sock

    watched = interval_ms < daemon.KEPT_WATCH_MAX_INTERVAL_MS
    results: queue.SimpleQueue[Any] = queue.SimpleQueue()
    cfg = TcpCheck(type="tcp", name="kept", host="127.0.0.1", port=1, interval_ms=interval_ms)
    with selectors.DefaultSelector() as selector, \
            socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname()) as client:
        server_end, _ = listener.accept()
        probe = Kept(client)
        worker = daemon.Worker(cfg, probe, results)
        hangups = daemon.HangUpWatch(selector, {"kept": worker})
        try:
            later = time.monotonic() + 3600
            worker.start(later)  # the next run an hour away
            hangups.follow()
            assert list(hangups.watched) == (["kept"] if watched else [])
            if not watched:
                return
            server_end.sendall(b"an answer for the worker")
            assert _serve_readable(selector, 0.2) == 0  # data does not wake the loop
            server_end.close()
            assert wait_until(lambda: _serve_readable(selector, 0.05) > 0, 2, 0)
            done = results.get(timeout=5)  # ran now, not in an hour
            assert done.result == Result(True, "ok", done.result.latency) and probe.runs == 1
            hangups.follow()  # the same socket, seen closed: not watched again
            assert hangups.watched == {}
        finally:
            worker.stop()
            worker.join(1)
            hangups.close()
            server_end.close()


def test_a_watched_number_given_to_another_checks_new_connection_stays_watched() -> None:
    """One check's thread closes its kept connection; another check's next connection gets
    the same fd number and is watched under it. Forgetting the first must not take the
    second out of the epoll set: its close still runs its check at once."""
    import queue
    import selectors

    from lab.sites.health import daemon
    from lab.sites.health.checks import Probe

    class Kept(Probe):
        def __init__(self, sock: socket.socket | None) -> None:
            self.sock, self.runs = sock, 0

        def attempt(self, started: float) -> tuple[bool, str]:
            self.runs += 1
            return True, "ok"

        def kept_socket(self) -> socket.socket | None:
            return self.sock

    results: queue.SimpleQueue[Any] = queue.SimpleQueue()
    cfg = TcpCheck(type="tcp", name="x", host="127.0.0.1", port=1, interval_ms=1000)
    x_sock, x_peer = socket.socketpair()
    number = x_sock.fileno()
    y_probe, x_probe = Kept(None), Kept(x_sock)
    y = daemon.Worker(cfg.model_copy(update={"name": "y"}), y_probe, results)
    x = daemon.Worker(cfg, x_probe, results)
    with selectors.DefaultSelector() as selector:
        hangups = daemon.HangUpWatch(selector, {"y": y, "x": x})
        try:
            hangups.follow()
            assert hangups.watched == {"x": (number, x_sock)}
            x_sock.close()  # x's thread drops its connection...
            first, second = socket.socketpair()  # ...and y's next one gets its number
            y_sock, y_peer = (first, second) if first.fileno() == number else (second, first)
            assert y_sock.fileno() == number, "the kernel gives the lowest free number"
            y_probe.sock, x_probe.sock = y_sock, None
            y.start(time.monotonic() + 3600)
            hangups.follow()  # y is looked at first, then x is forgotten
            assert hangups.watched == {"y": (number, y_sock)}
            y_peer.close()
            assert wait_until(lambda: _serve_readable(selector, 0.05) > 0, 2, 0)
            assert results.get(timeout=5).check == "y" and y_probe.runs == 1
        finally:
            for w in (x, y):
                w.stop()
                w.join(1)
            hangups.close()
            for sock in (x_peer, first, second):
                sock.close()


def test_a_killed_introspection_service_runs_the_check_at_once(pki, tmp_path: Path) -> None:
    """The real service, the real probe: the connection the probe keeps is the one the
    loop watches, and when the service is killed the check is run at once (refused),
    not at its next time."""
    import queue
    import selectors
    import signal

    from lab.sites.health import daemon

    proc, port = start_introspect(pki, "revoked.json", tmp_path)
    results: queue.SimpleQueue[Any] = queue.SimpleQueue()
    cfg = introspect_check(pki, port, interval_ms=500)
    probe = IntrospectProbe(cfg)
    worker = daemon.Worker(cfg, probe, results)
    try:
        with selectors.DefaultSelector() as selector:
            hangups = daemon.HangUpWatch(selector, {"introspect": worker})
            try:
                worker.start(0.0)
                assert results.get(timeout=10).result.ok
                worker.start(time.monotonic() + 3600)  # the next run an hour away
                hangups.follow()
                assert hangups.watched["introspect"][1] is probe.kept_socket() is not None
                stop_process(proc, signal.SIGKILL)
                assert wait_until(lambda: _serve_readable(selector, 0.05) > 0, 5, 0)
                done = results.get(timeout=10)  # ran now, not in an hour
                assert not done.result.ok and "refused" in done.result.reason
            finally:
                hangups.close()
    finally:
        worker.stop()
        worker.join(1)
        probe.close()
        stop_process(proc, signal.SIGKILL)
