"""Open-loop DNS prober: asks `id.server CH TXT` at a fixed rate from one connected UDP
socket and records, per query, its send time (monotonic), RTT and which site answered.

Bounded: stops after `count` queries or `duration_s`, whichever comes first (both are
required). Works from inside a client namespace (run it with `anycast-lab exec`), or
from anywhere given `netns=` (the socket is created inside that namespace).

    python -m probes.dns --server 203.0.113.53 --rate 200 --duration 5 [--lines]
"""

from __future__ import annotations

import argparse
import json
import random
import select
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass

import dns.exception
import dns.message
import dns.rcode

from lab.shared.dnsid import identity_query, site_from_response
from lab.shared.nsnet import socket_in
from probes.background import BackgroundThread

MAX_RATE_HZ = 2000
MAX_COUNT = 1_000_000


@dataclass
class Sample:
    seq: int
    t: float                 # monotonic send time, seconds
    rtt_ms: float | None = None
    site: str | None = None
    error: str | None = None  # "timeout", "refused", "unreachable", "rcode ..."


def _site_of(wire: bytes) -> tuple[int, str | None, str | None]:
    msg = dns.message.from_wire(wire)
    if msg.rcode() != 0:
        return msg.id, None, f"rcode {dns.rcode.to_text(msg.rcode())}"
    site = site_from_response(msg)
    return msg.id, site, None if site is not None else "empty answer"


def make_socket(server: str, netns: str | None = None) -> socket.socket:
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    if netns:
        sock = socket_in(netns, family, socket.SOCK_DGRAM)
    else:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    # Connected: an ICMP "port unreachable" surfaces as ECONNREFUSED at once.
    sock.connect((server, 53))
    sock.setblocking(False)
    return sock


def probe(server: str, rate_hz: float, duration_s: float, count: int | None = None,
          timeout_s: float = 0.1, netns: str | None = None,
          stop: threading.Event | None = None,
          samples: list[Sample] | None = None) -> list[Sample]:
    """Send queries every 1/rate s; return one Sample per query, in send order (appended
    to `samples` as they are sent, so another thread can watch them live)."""
    if not 0 < rate_hz <= MAX_RATE_HZ:
        raise ValueError(f"rate must be in (0, {MAX_RATE_HZ}] queries/s")
    if not 0 < duration_s <= 3600:
        raise ValueError("duration must be in (0, 3600] s")
    limit = min(count or MAX_COUNT, int(rate_hz * duration_s) + 1, MAX_COUNT)
    sock = make_socket(server, netns)
    interval = 1.0 / rate_hz
    samples = [] if samples is None else samples
    pending: dict[int, Sample] = {}
    ids = random.Random()
    start = time.monotonic()
    next_send = start
    end = start + duration_s
    try:
        while True:
            now = time.monotonic()
            done_sending = len(samples) >= limit or now >= end or (stop and stop.is_set())
            # Expire queries past their timeout.
            for qid, s in list(pending.items()):
                if now - s.t > timeout_s:
                    s.error = "timeout"
                    del pending[qid]
            if done_sending and not pending:
                break
            if not done_sending and now >= next_send:
                qid = ids.randrange(65536)
                while qid in pending:
                    qid = ids.randrange(65536)
                query = identity_query()
                query.id = qid
                sample = Sample(len(samples), time.monotonic())
                samples.append(sample)
                try:
                    sock.send(query.to_wire())
                    pending[qid] = sample
                except OSError as exc:
                    sample.error = _os_error(exc)
                next_send += interval
                if next_send < now - interval:  # fell behind: do not burst to catch up
                    next_send = now + interval
                continue
            wait = (next_send - now) if not done_sending else timeout_s / 4
            ready, _, _ = select.select([sock], [], [], max(0.0, min(wait, timeout_s / 4)))
            if ready:
                _receive(sock, pending)
    finally:
        sock.close()
    return samples


def _os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return "unreachable" if exc.errno in (101, 113) else (exc.strerror or "error")


def _receive(sock: socket.socket, pending: dict[int, Sample]) -> None:
    while True:
        try:
            wire = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as exc:
            # An ICMP error belongs to no query id: charge it to the oldest outstanding.
            if pending:
                qid = min(pending, key=lambda k: pending[k].t)
                pending.pop(qid).error = _os_error(exc)
            continue
        received = time.monotonic()
        try:
            qid, site, error = _site_of(wire)
        except dns.exception.DNSException:
            continue
        sample = pending.pop(qid, None)
        if sample is not None:
            sample.rtt_ms = round((received - sample.t) * 1000, 3)
            sample.site, sample.error = site, error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--rate", type=float, default=100.0, help="queries per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds (bound)")
    parser.add_argument("--count", type=int, default=None, help="queries (bound)")
    parser.add_argument("--timeout", type=float, default=0.1, help="per-query timeout, s")
    parser.add_argument("--netns", default=None, help="create the socket in this namespace")
    parser.add_argument("--lines", action="store_true", help="one JSON line per query")
    args = parser.parse_args()
    try:
        samples = probe(args.server, args.rate, args.duration, args.count, args.timeout,
                        args.netns)
    except (ValueError, OSError) as exc:
        sys.exit(f"error: {exc}")
    if args.lines:
        for s in samples:
            sys.stdout.write(json.dumps(asdict(s)) + "\n")
    answered = [s for s in samples if s.site]
    sites: dict[str, int] = {}
    for s in answered:
        sites[s.site] = sites.get(s.site, 0) + 1  # type: ignore[index]
    sys.stdout.write(json.dumps({"sent": len(samples), "answered": len(answered),
                                 "lost": len(samples) - len(answered), "sites": sites}) + "\n")


if __name__ == "__main__":
    main()


class BackgroundProbe(BackgroundThread):
    """`probe()` in a thread: start it, do something, stop it, read the samples."""

    def __init__(self, server: str, rate_hz: float, max_duration_s: float,
                 timeout_s: float = 0.1, netns: str | None = None) -> None:
        super().__init__()
        self._args = (server, rate_hz, max_duration_s, timeout_s, netns)

    def _run(self) -> None:
        server, rate_hz, duration_s, timeout_s, netns = self._args
        probe(server, rate_hz, duration_s, timeout_s=timeout_s, netns=netns, stop=self._stop,
              samples=self.samples)
