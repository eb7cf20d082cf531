"""Open-loop HTTPS prober: POSTs an introspection request to the anycast address at a fixed
rate, whatever happened to the earlier ones, and records per request its send time
(monotonic), RTT and which site answered (the `X-Anycast-Site` header of a 200 answer).

Two ways to connect, as real clients do:
- `new` (new connection per request): TCP and TLS handshakes every time, so a request sees
  the route of the moment and a dead service at once (refused, reset);
- `keepalive`: requests reuse idle TLS connections (a new one is opened only when every
  open one is busy), so a connection opened at the old site carries on there until it
  breaks (RST from the new site, a timeout) and is replaced.

Sockets are made inside the client's namespace (`netns`); TLS verifies the lab CA's
certificate for the service name. The token is any string: an unknown token is answered
`{"active": false}` with 200, which is all a probe needs (the site is in the header).
Bounded: stops after `duration_s` (at most an hour); each request after `timeout_s`.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from lab.shared.nsnet import socket_in
from probes.background import BackgroundThread
from probes.dns import Sample

SERVICE_NAME = "introspect.anycast.lab"
PORT = 443
MODES = ("new", "keepalive")
MAX_RATE_HZ = 500
MAX_IN_FLIGHT = 64  # the most requests (and so connections) one probe has open at once


@dataclass(frozen=True)
class HttpsTarget:
    """Where and as whom to ask: the anycast address, the lab CA, a client's credentials."""

    address: str
    ca_file: Path
    client_id: str
    secret: str
    token: str = "probe"


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.transport.abort()


def request_bytes(target: HttpsTarget, keepalive: bool) -> bytes:
    body = f"token={target.token}".encode()
    auth = base64.b64encode(f"{target.client_id}:{target.secret}".encode()).decode()
    return (f"POST /introspect HTTP/1.1\r\nHost: {SERVICE_NAME}\r\n"
            f"Authorization: Basic {auth}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keepalive else 'close'}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status and headers (lower-case names) of one HTTP/1.1 answer; its body is read and
    dropped (Content-Length; the service always sends one)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP status line: {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return int(parts[1]), headers


def error_word(exc: BaseException) -> str:
    """What went wrong with one request, in one word the analysis can count."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return "closed"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, OSError) and exc.errno in (101, 113):
        return "unreachable"
    return type(exc).__name__


class HttpsProbe(BackgroundThread):
    """The prober in a thread of its own with its own event loop: `start()`, read
    `samples` live, `stop()` (returns them)."""

    def __init__(self, target: HttpsTarget, rate_hz: float, max_duration_s: float,
                 timeout_s: float = 0.5, netns: str | None = None,
                 mode: str = "new") -> None:
        if not 0 < rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"rate must be in (0, {MAX_RATE_HZ}] requests/s")
        if not 0 < max_duration_s <= 3600:
            raise ValueError("duration must be in (0, 3600] s")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self.target, self.rate_hz, self.timeout_s = target, rate_hz, timeout_s
        super().__init__()
        self.duration_s, self.netns, self.mode = max_duration_s, netns, mode
        self.connections_opened = 0
        self._ctx = ssl.create_default_context(cafile=str(target.ca_file))
        self._idle: list[_Conn] = []

    def _run(self) -> None:
        asyncio.run(self._main())

    def _socket(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.target.address else socket.AF_INET
        sock = socket_in(self.netns, family, socket.SOCK_STREAM) if self.netns \
            else socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock

    async def _connect(self) -> _Conn:
        sock = self._socket()
        try:
            await asyncio.get_running_loop().sock_connect(sock, (self.target.address, PORT))
        except BaseException:
            sock.close()
            raise
        # From here the transport owns the socket: on a failed handshake it closes it
        # (later, in the loop); closing it here too would free its descriptor for reuse
        # while the transport still watches it.
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=self._ctx, server_hostname=SERVICE_NAME)
        self.connections_opened += 1
        return _Conn(reader, writer)

    async def _one(self, sample: Sample) -> None:
        keepalive = self.mode == "keepalive"
        conn = self._idle.pop() if keepalive and self._idle else None
        try:
            async with asyncio.timeout(self.timeout_s):
                if conn is None:
                    conn = await self._connect()
                conn.writer.write(request_bytes(self.target, keepalive))
                status, headers = await read_response(conn.reader)
            sample.rtt_ms = round((time.monotonic() - sample.t) * 1000, 3)
            if status == 200 and headers.get("x-anycast-site"):
                sample.site = headers["x-anycast-site"]
            else:
                sample.error = f"http {status}"
            if keepalive and headers.get("connection", "").lower() != "close":
                self._idle.append(conn)
                conn = None
        except (OSError, ssl.SSLError, ValueError, EOFError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            sample.error = error_word(exc)
        finally:
            if conn is not None:
                conn.close()

    async def _main(self) -> None:
        interval = 1.0 / self.rate_hz
        start = time.monotonic()
        end = start + self.duration_s
        next_send = start
        tasks: set[asyncio.Task[None]] = set()
        while not self._stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            if now < next_send:
                await asyncio.sleep(min(next_send - now, 0.05))
                continue
            sample = Sample(len(self.samples), time.monotonic())
            self.samples.append(sample)
            if len(tasks) >= MAX_IN_FLIGHT:
                sample.error = "busy"  # too many requests unanswered: not sent
            else:
                task = asyncio.create_task(self._one(sample))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            next_send += interval
            if next_send < now - interval:  # fell behind: do not burst to catch up
                next_send = now + interval
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout_s + 1)
        for conn in self._idle:
            conn.close()
        self._idle.clear()
