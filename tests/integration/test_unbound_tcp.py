"""A site's Unbound and long-lived TCP connections: after a moment with many connections
open, a few connections that then sit idle for a second are still served. (Unbound 1.17
shortens the idle timeout of a TCP slot handed out while more than half of its slots are
busy, and never restores it; the lab gives it enough slots that such a moment never
arms that.)"""

from __future__ import annotations

import socket
import struct
import time

import dns.message

from lab.shared.dnsid import identity_query, site_from_response
from lab.shared.nsnet import socket_in

BUSY = 24  # more than half of the 32 slots Unbound had per address before
AFTER = 8


def _open(netns: str, address: str) -> socket.socket:
    sock = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    sock.connect((address, 53))
    return sock


def _ask(sock: socket.socket) -> str | None:
    """One id.server query on the connection; the site that answered, or None when the
    server closed the connection."""
    wire = identity_query().to_wire()
    try:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        head = sock.recv(2, socket.MSG_WAITALL)
        if len(head) < 2:
            return None
        body = sock.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
    except (ConnectionResetError, BrokenPipeError):
        return None
    return site_from_response(dns.message.from_wire(body))


def test_idle_connections_are_kept_after_a_busy_moment(default_lab) -> None:
    plan = default_lab.plan
    client = plan.nodes["c-eu"]
    site = plan.nodes["ams"]
    address = str(site.interfaces[0].v4.ip)
    busy = [_open(client.netns, address) for _ in range(BUSY)]
    try:
        assert [_ask(s) for s in busy] == ["ams"] * BUSY  # every one accepted and served
        for sock in busy[:16]:
            sock.close()
        time.sleep(0.5)  # the server closes, or not, the rest as idle: that is the point
    finally:
        for sock in busy:
            sock.close()
    later = [_open(client.netns, address) for _ in range(AFTER)]
    try:
        assert [_ask(s) for s in later] == ["ams"] * AFTER
        time.sleep(1.0)  # idle for a second: well inside the lab's 10 s idle timeout
        assert [_ask(s) for s in later] == ["ams"] * AFTER, \
            "the site closed idle connections after a busy moment"
    finally:
        for sock in later:
            sock.close()
