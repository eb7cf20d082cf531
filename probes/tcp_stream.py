"""Long-lived TCP connections to the anycast address, each a stream of small messages, and
what happens to them across a failover: how many break (reset by the new site, timed out,
closed) and how long each takes to be answered again from a new connection.

The service is the site's own DNS server over TCP (Unbound, port 53, RFC 7766: many
queries on one connection): each of N connections sends an `id.server CH TXT` query (two
length bytes and ~30 bytes of message) every N/rate seconds and waits for its answer, which
names the site. When the anycast route moves, the connection's packets reach another site,
whose kernel knows no such connection and answers RST; a silent blackhole or a frozen
server shows as a timeout instead. A broken connection is closed and opened again at once
(wherever the route now leads).

Every message is a `Sample` (as the DNS prober's), in send order over all connections;
every break is a `Break`. Sockets are made inside the client's namespace (`netns`).
Bounded: at most MAX_CONNECTIONS connections, `duration_s` (at most an hour).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from dataclasses import dataclass

import dns.exception
import dns.message

from lab.shared.dnsid import identity_query, site_from_response
from lab.shared.nsnet import socket_in
from probes.background import BackgroundThread
from probes.dns import Sample
from probes.https import error_word

PORT = 53
MAX_CONNECTIONS = 16
MAX_RATE_HZ = 2000


@dataclass
class Break:
    """One connection that broke: when, how, where it was, and when a new connection was
    first answered (and by which site)."""

    conn: int
    t: float
    error: str
    site_before: str | None
    t_answered: float | None = None
    site_after: str | None = None

    @property
    def reconnect_ms(self) -> float | None:
        return None if self.t_answered is None else round((self.t_answered - self.t) * 1000, 3)


class TcpStreamProbe(BackgroundThread):
    """N streaming connections in a thread of its own: `start()`, read `samples` and
    `breaks` live, `stop()` (returns the samples)."""

    def __init__(self, server: str, rate_hz: float, max_duration_s: float,
                 timeout_s: float = 0.2, netns: str | None = None,
                 connections: int = 4, port: int = PORT) -> None:
        if not 1 <= connections <= MAX_CONNECTIONS:
            raise ValueError(f"connections must be 1..{MAX_CONNECTIONS}")
        if not 0 < rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"rate must be in (0, {MAX_RATE_HZ}] messages/s")
        if not 0 < max_duration_s <= 3600:
            raise ValueError("duration must be in (0, 3600] s")
        self.server, self.rate_hz, self.timeout_s = server, rate_hz, timeout_s
        self.duration_s, self.netns, self.connections = max_duration_s, netns, connections
        super().__init__()
        self.port = port
        self.breaks: list[Break] = []
        self.connections_opened = 0

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        family = socket.AF_INET6 if ":" in self.server else socket.AF_INET
        sock = socket_in(self.netns, family, socket.SOCK_STREAM) if self.netns \
            else socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (self.server, self.port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)  # it owns the socket now
        self.connections_opened += 1
        return reader, writer

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        ids: random.Random) -> str | None:
        query = identity_query()
        query.id = ids.randrange(65536)
        wire = query.to_wire()
        writer.write(struct.pack("!H", len(wire)) + wire)
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            answer = dns.message.from_wire(await reader.readexactly(length))
            if answer.id == query.id:
                return site_from_response(answer)

    async def _stream(self, conn: int, end: float) -> None:
        interval = self.connections / self.rate_hz
        ids = random.Random()
        # Connections start spread over one interval, so messages go out evenly.
        next_send = time.monotonic() + interval * conn / self.connections
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        site: str | None = None
        broken: Break | None = None
        while not self._stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            if now < next_send:
                await asyncio.sleep(min(next_send - now, 0.05))
                continue
            next_send = max(next_send + interval, now)
            sample = Sample(len(self.samples), now)
            self.samples.append(sample)
            try:
                async with asyncio.timeout(self.timeout_s):
                    if writer is None:
                        reader, writer = await self._connect()
                    assert reader is not None
                    answered = await self._exchange(reader, writer, ids)
                sample.rtt_ms = round((time.monotonic() - sample.t) * 1000, 3)
                sample.site = answered
                if answered is None:
                    sample.error = "empty answer"
                elif broken is not None:
                    broken.t_answered, broken.site_after = time.monotonic(), answered
                    broken = None
                site = answered or site
            except (OSError, EOFError, asyncio.IncompleteReadError, dns.exception.DNSException,
                    struct.error) as exc:
                sample.error = error_word(exc)
                if writer is not None:  # a connection that was up: it broke
                    writer.transport.abort()
                    writer = reader = None
                    if broken is None:
                        broken = Break(conn, sample.t, sample.error, site)
                        self.breaks.append(broken)
                    next_send = time.monotonic()  # a client reconnects at once
                # Not connected again yet: the next attempt is the next message's.
        if writer is not None:
            writer.transport.abort()

    async def _main(self) -> None:
        end = time.monotonic() + self.duration_s
        await asyncio.gather(*(self._stream(n, end) for n in range(self.connections)))
