"""The DNS prober against real UDP sockets on loopback: site parsing, timing, timeouts,
and 'connection refused' from a closed port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from probes.dns import probe


class TinyServer:
    """A UDP DNS server on 127.0.0.1 answering id.server CH TXT with `site`; it can be
    told to stay silent for some queries or to answer SERVFAIL."""

    def __init__(self, site: str = "ams") -> None:
        self.site = site
        self.silent = False
        self.servfail = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            if self.silent:
                continue
            query = dns.message.from_wire(wire)
            response = dns.message.make_response(query)
            if self.servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
            else:
                response.answer.append(dns.rrset.from_text(
                    "id.server.", 0, dns.rdataclass.CH, dns.rdatatype.TXT, f'"{self.site}"'))
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture
def server() -> Iterator[TinyServer]:
    s = TinyServer()
    yield s
    s.close()


def probe_port(port: int, **kw):
    import probes.dns as mod

    original = mod.make_socket

    def make(server: str, netns=None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((server, port))
        sock.setblocking(False)
        return sock

    mod.make_socket = make
    try:
        return probe("127.0.0.1", **kw)
    finally:
        mod.make_socket = original


def test_answers_name_the_site_and_rate_is_kept(server):
    samples = probe_port(server.port, rate_hz=200, duration_s=0.5)
    # Never faster than the rate (it does not burst to catch up when the machine is busy),
    # and on a loaded 2-core CI machine still at least half of it.
    assert 50 <= len(samples) <= 101
    assert all(s.site == "ams" and s.rtt_ms is not None for s in samples)
    # Open loop on a 5 ms grid: a query is never sent before its slot.
    t0 = samples[0].t
    assert all(s.t - t0 >= i * 0.005 - 0.001 for i, s in enumerate(samples))


def test_silent_server_counts_timeouts(server):
    server.silent = True
    samples = probe_port(server.port, rate_hz=100, duration_s=0.3, timeout_s=0.05)
    assert samples and all(s.error == "timeout" and s.site is None for s in samples)


def test_servfail_is_reported(server):
    server.servfail = True
    samples = probe_port(server.port, rate_hz=50, duration_s=0.2)
    assert samples and all(s.error == "rcode SERVFAIL" for s in samples)


def test_closed_port_is_refused_not_timed_out():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: ICMP port unreachable
    samples = probe_port(port, rate_hz=50, duration_s=0.2, timeout_s=1.0)
    refused = [s for s in samples if s.error == "refused"]
    assert len(refused) >= len(samples) - 1


def test_bounds_are_enforced():
    with pytest.raises(ValueError):
        probe("127.0.0.1", rate_hz=5000, duration_s=1)
    with pytest.raises(ValueError):
        probe("127.0.0.1", rate_hz=10, duration_s=0)
