"""Traceroute with scapy from inside a namespace: the routers on the way to an address.

Sends one ICMP echo per TTL (bounded: at most `max_hops`, each waiting `timeout_s`) on a
raw socket created inside the client's namespace and returns the responding address of
each hop (None where nothing answered); the last hop is the address traced, when it
answered.

Quiet: scapy builds and parses the packets only (no sending, no routing table of its own),
and its logger is held to errors, so nothing but our own output reaches stdout or stderr.
The ICMPv6 checksum is left to the kernel (it fills it in on a raw ICMPv6 socket,
RFC 3542), so scapy is never asked for one it cannot compute without an IPv6 header.
"""

from __future__ import annotations

import logging
import socket
import time

from lab.shared.nsnet import socket_in
from lab.shared.wait import wait_until

logging.getLogger("scapy").setLevel(logging.ERROR)  # before scapy's import, which logs

from scapy.layers.inet import ICMP, IP  # noqa: E402
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6  # noqa: E402

IPPROTO_ICMPV6 = 58


def trace(netns: str, address: str, max_hops: int = 8, timeout_s: float = 0.3) -> list[str | None]:
    v6 = ":" in address
    hops: list[str | None] = []
    if v6:
        sock = socket_in(netns, socket.AF_INET6, socket.SOCK_RAW, IPPROTO_ICMPV6)
    else:
        sock = socket_in(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        sock.settimeout(timeout_s)
        ident = int(time.monotonic_ns() & 0xFFFF)
        for ttl in range(1, max_hops + 1):
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            sock.sendto(echo_request(v6, ident, ttl), (address, 0))
            hop, done = _await_reply(sock, v6, ident, ttl, timeout_s)
            hops.append(hop)
            if done:
                break
    finally:
        sock.close()
    return hops


def echo_request(v6: bool, ident: int, seq: int) -> bytes:
    """The ICMP (or ICMPv6) echo request of one probe. The ICMPv6 checksum stays 0: the
    kernel computes it on a raw ICMPv6 socket."""
    if v6:
        return bytes(ICMPv6EchoRequest(id=ident, seq=seq, cksum=0))
    return bytes(ICMP(type=8, id=ident, seq=seq))


def _await_reply(sock: socket.socket, v6: bool, ident: int, ttl: int,
                 timeout_s: float) -> tuple[str | None, bool]:
    """Who answered probe `ttl` and whether it was the destination; (None, False) when
    nobody did within `timeout_s`. ICMP for other probes or programs is skipped."""
    def next_answer() -> tuple[str | None, bool] | None:
        try:
            data, peer = sock.recvfrom(2048)
        except TimeoutError:
            return None, False
        return _match(data, peer[0], v6, ident, ttl)

    return wait_until(next_answer, timeout_s, interval_s=0) or (None, False)


def _match(data: bytes, sender: str, v6: bool, ident: int,
           ttl: int) -> tuple[str | None, bool] | None:
    """(hop, reached the destination) if `data` answers our probe `ttl`, else None."""
    if v6:
        # Raw ICMPv6 sockets deliver the ICMPv6 message without the IPv6 header.
        kind = data[0]
        if kind == 129:  # echo reply
            reply = ICMPv6EchoReply(data)
            if reply.id == ident and reply.seq == ttl:
                return sender, True
        elif kind in (1, 3):  # unreachable / time exceeded: quoted packet inside
            quoted = IPv6(data[8:])
            inner = quoted.payload
            if isinstance(inner, ICMPv6EchoRequest) and inner.id == ident:
                return sender, kind == 1
        return None
    packet = IP(data)
    icmp = packet.payload
    if not isinstance(icmp, ICMP):
        return None
    if icmp.type == 0 and icmp.id == ident and icmp.seq == ttl:
        return packet.src, True
    if icmp.type in (3, 11):
        quoted = icmp.payload
        if isinstance(quoted, IP) and isinstance(quoted.payload, ICMP) \
                and quoted.payload.id == ident:
            return packet.src, icmp.type == 3
    return None


def main() -> None:
    """`python -m probes.trace --address A [--netns N]`: one JSON line per hop."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--netns", required=True, help="the client's namespace")
    parser.add_argument("--max-hops", type=int, default=8, choices=range(1, 31),
                        metavar="1..30")
    parser.add_argument("--timeout", type=float, default=0.3, help="per hop, seconds")
    args = parser.parse_args()
    for ttl, hop in enumerate(trace(args.netns, args.address, args.max_hops, args.timeout), 1):
        sys.stdout.write(json.dumps({"ttl": ttl, "address": hop}) + "\n")


if __name__ == "__main__":
    main()
