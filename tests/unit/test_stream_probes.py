"""The TCP stream and HTTPS probes' pure parts and the TCP prober against a real TCP DNS
server on loopback that 'moves' (resets every connection and answers as another site), and
the analysis of broken connections."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from pathlib import Path

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from lab.measure.failover import check_probe
from lab.measure.trials import ClientTrial, connection_breaks, summarise
from lab.model.errors import BadInput
from probes.https import HttpsTarget, error_word, read_response, request_bytes
from probes.tcp_stream import Break, TcpStreamProbe

from .helpers import wait_until


class MovingServer:
    """DNS over TCP on 127.0.0.1 answering id.server with `site`; `move()` resets every
    open connection (SO_LINGER 0: RST) and answers as another site from then on."""

    def __init__(self) -> None:
        self.site = "ams"
        self.conns: list[socket.socket] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while self.running:
                head = conn.recv(2)
                if len(head) < 2:
                    return
                (length,) = struct.unpack("!H", head)
                query = dns.message.from_wire(conn.recv(length))
                answer = dns.message.make_response(query)
                answer.answer.append(dns.rrset.from_text(
                    "id.server.", 0, dns.rdataclass.CH, dns.rdatatype.TXT, f'"{self.site}"'))
                wire = answer.to_wire()
                conn.sendall(struct.pack("!H", len(wire)) + wire)
        except OSError:
            return

    def move(self, site: str) -> None:
        self.site = site
        for conn in self.conns:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        self.conns.clear()

    def close(self) -> None:
        self.running = False
        self.listener.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def server():
    s = MovingServer()
    yield s
    s.close()


def test_tcp_stream_counts_each_reset_connection_and_its_reconnection(server) -> None:
    probe = TcpStreamProbe("127.0.0.1", 200, 10, timeout_s=0.5, connections=3,
                           port=server.port).start()
    try:
        assert wait_until(lambda: sum(1 for s in probe.samples if s.site == "ams") >= 30, 5)
        assert probe.breaks == []
        server.move("nyc")
        assert wait_until(lambda: len(probe.breaks) == 3
                          and all(b.t_answered for b in probe.breaks), 5)
    finally:
        samples = probe.stop()
    assert {b.conn for b in probe.breaks} == {0, 1, 2}
    assert all(b.site_before == "ams" and b.site_after == "nyc" for b in probe.breaks)
    assert all(b.error in ("reset", "closed") for b in probe.breaks)
    assert probe.connections_opened == 6
    assert samples[-1].site == "nyc" or samples[-1].error is not None


def test_refused_before_any_connection_is_not_a_break() -> None:
    port_sock = socket.socket()
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()  # nothing listens there now
    probe = TcpStreamProbe("127.0.0.1", 100, 5, connections=1, port=port).start()
    wait_until(lambda: len(probe.samples) >= 5, 3)
    samples = probe.stop()
    assert probe.breaks == [] and probe.connections_opened == 0
    assert {s.error for s in samples[:5]} == {"refused"}


def test_bounds_are_refused() -> None:
    for kwargs in ({"connections": 0}, {"connections": 17}, {"rate_hz": 0},
                   {"max_duration_s": 4000}):
        args = {"server": "127.0.0.1", "rate_hz": 10, "max_duration_s": 1, **kwargs}
        with pytest.raises(ValueError):
            TcpStreamProbe(**args)


def test_connection_breaks_between_fault_and_heal() -> None:
    breaks = [Break(0, 0.5, "reset", "ams", 0.6, "ams"),    # before the fault: not counted
              Break(0, 1.1, "reset", "ams", 1.15, "nyc"),
              Break(1, 1.2, "timeout", "ams", 1.5, "nyc"),
              Break(1, 3.2, "reset", "nyc", 3.3, "ams")]   # after the heal
    assert connection_breaks(breaks, 1.0, 3.0) == (2, 300.0)
    breaks[2].t_answered = None
    assert connection_breaks(breaks, 1.0, 3.0) == (2, None)
    assert connection_breaks([], 1.0, 3.0) == (0, None)


def test_summary_has_broken_connections_only_for_stream_probes() -> None:
    plain = ClientTrial("c-eu", "ams", "nyc", 10.0, 1, 5.0, 100)
    assert "broken" not in summarise([[plain]])
    stream = ClientTrial("c-eu", "ams", "nyc", 1.0, 4, 5.0, 100, broken=4, reconnect_ms=12.5)
    other = ClientTrial("c-us", "nyc", "nyc", 0.0, 0, 1.0, 100, broken=0)
    summary = summarise([[stream, other]])
    assert summary["broken_total"] == 4
    assert summary["broken"]["max"] == 4 and summary["reconnect_ms"]["max"] == 12.5


def test_https_request_is_one_complete_post() -> None:
    target = HttpsTarget("203.0.113.53", Path("ca.pem"), "lab-admin", "s3cret", "tok")
    wire = request_bytes(target, keepalive=False)
    head, _, body = wire.partition(b"\r\n\r\n")
    assert body == b"token=tok"
    assert b"Content-Length: 9\r\n" in head and b"Connection: close" in head
    assert b"Authorization: Basic bGFiLWFkbWluOnMzY3JldA==" in head
    assert b"Connection: keep-alive" in request_bytes(target, keepalive=True)


def test_https_response_status_headers_and_body() -> None:
    async def parse(raw: bytes):
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_response(reader), await reader.read()

    raw = (b"HTTP/1.1 200 OK\r\nX-Anycast-Site: nyc\r\nContent-Length: 17\r\n\r\n"
           b'{"active":false}\nHTTP/1.1 ...')
    (status, headers), rest = asyncio.run(parse(raw))
    assert status == 200 and headers["x-anycast-site"] == "nyc"
    assert rest == b"HTTP/1.1 ..."  # the next answer on the connection is left alone
    with pytest.raises(ValueError):
        asyncio.run(parse(b"SSH-2.0-nope\r\n\r\n"))


@pytest.mark.parametrize(("exc", "word"), [
    (TimeoutError(), "timeout"), (ConnectionRefusedError(), "refused"),
    (ConnectionResetError(), "reset"), (asyncio.IncompleteReadError(b"", 2), "closed"),
    (OSError(113, "No route to host"), "unreachable")])
def test_error_words(exc: BaseException, word: str) -> None:
    assert error_word(exc) == word


def test_probe_kind_and_rate_are_checked() -> None:
    check_probe("tcp", 1000)
    for args in (("udp", 10), ("https", 201)):
        with pytest.raises(BadInput):
            check_probe(*args)


def test_sample_timeline_is_ordered_by_send_time(server) -> None:
    probe = TcpStreamProbe("127.0.0.1", 300, 5, connections=4, port=server.port).start()
    wait_until(lambda: len(probe.samples) >= 60, 5)
    samples = probe.stop()
    times = [s.t for s in samples]
    assert times == sorted(times)
    assert all(s.site == "ams" for s in samples[:-5])
