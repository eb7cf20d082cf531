"""Connection guard: owns what one connection may cost the introspection service.

An anycast site must survive one abusive client and recover by itself. Everything a
connection holds is bounded here, from accept to close:

* **Admission at accept** (`Admission`, `Acceptor`). Each listening socket is a *client*
  listener (the anycast and unicast addresses) or a *health* listener (an address only the
  site's health daemon uses, e.g. 127.0.0.1:8443 inside the site's namespace). Client
  listeners together hold at most ``limit_concurrency`` connections (TLS handshakes
  included), and one client -- an IPv4 address or an IPv6 /64 -- at most
  ``limit_per_client``. The health listener has ``HEALTH_CONNECTIONS`` of its own, so
  the health daemon's checks are never starved by client connections, yet go through
  the same event loop, TLS and application code. A connection over a limit is reset at
  once (no handshake, no state left behind).
* **Handshakes in turn.** One client has at most ``HANDSHAKES_PER_CLIENT`` TLS handshakes
  in progress at once; its further admitted connections wait (in accept order) for one of
  its own to end. A handshake flood otherwise puts hundreds of handshakes' work ahead of
  every other connection's next step in the one event loop, the health daemon's checks
  included; a burst from an honest client (a load tester's 50 connections) only waits.
* **Timeouts.** A TLS handshake must finish within ``TLS_HANDSHAKE_TIMEOUT_S`` of the
  accept (its wait for its turn included); a request
  (head and body) must be complete within ``REQUEST_TIMEOUT_S`` of the handshake or of
  the previous response, else the connection gets a 408 (or, if nothing of a request
  came, is simply closed); an idle keep-alive connection is closed after
  ``KEEP_ALIVE_TIMEOUT_S``; a TLS close waits at most ``TLS_SHUTDOWN_TIMEOUT_S`` for the
  peer's close_notify.
* **Orphans.** After a withdrawal the peer's FIN and RST follow the anycast route to
  another site, so nothing from the peer ever closes our socket. Accepted sockets get TCP
  keepalive (``TCP_KEEPIDLE_S`` + ``TCP_KEEPCNT`` x ``TCP_KEEPINTVL_S``) and
  ``TCP_USER_TIMEOUT_MS``: unacknowledged data (a response, a FIN) aborts the socket in
  the kernel after 20 s, even once we have closed it.
* **The request head** (request line + headers) is at most ``HEAD_LIMIT`` bytes however
  the bytes arrive (h11 itself checks only a head that is still incomplete): 431.
* **Errors at the HTTP protocol level** (malformed framing, head too large, timeout,
  unsupported transfer coding) are answered in JSON with ``Cache-Control: no-store``,
  like every answer of the application, then the connection is closed.

Bounds, default values: a connection that completes no request is closed within
3 + 5 = 8 s of its accept; a vanished peer's connection leaves the service within
8 + 3 = 11 s (TLS shutdown) and the kernel within 11 + 20 = 31 s (user timeout); one
client holds at most 256 of 512 client connections, at most 16 of them in a TLS
handshake; the health daemon always has 8.

**Saturated**: the client listeners are at ``limit_concurrency`` now, or refused a
connection for it within the last ``SATURATION_HOLD_S``. One client at its own limit does
not saturate the site (it is contained). Answers given on a health listener carry
``X-Anycast-Saturated: 0|1`` so that the health daemon can apply the site's policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import ssl
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NoReturn

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

__all__ = ["Acceptor", "Admission", "GuardedH11Protocol", "HeadLimitedConnection",
           "SaturationHeader", "client_key", "error_response"]

log = logging.getLogger(__name__)

CLIENT, HEALTH = "client", "health"
LIMIT_CONCURRENCY = 512
LIMIT_PER_CLIENT = 256
HANDSHAKES_PER_CLIENT = 16
HEALTH_CONNECTIONS = 8
TLS_HANDSHAKE_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 5.0
KEEP_ALIVE_TIMEOUT_S = 5
TLS_SHUTDOWN_TIMEOUT_S = 3.0
TCP_KEEPIDLE_S, TCP_KEEPINTVL_S, TCP_KEEPCNT = 10, 5, 3
TCP_USER_TIMEOUT_MS = 20_000
HEAD_LIMIT = 8 * 1024
SATURATION_HOLD_S = 2.0
SATURATED_HEADER = b"x-anycast-saturated"
REFUSAL_LOG_EVERY_S = 10.0
ACCEPT_RETRY_S = 0.1  # after EMFILE and the like: try again, do not spin
MIN_HANDSHAKE_S = 0.05  # a handshake turn that comes with less time left is given up (reset)
# asyncio's TLS transport gives each connection a read buffer of SSLProtocol.max_size,
# 256 KiB allocated zeroed (so all of it resident). A request here is at most HEAD_LIMIT
# and a small body, a TLS record at most 16 KiB: 32 KiB a connection is plenty, and a
# full house of LIMIT_CONCURRENCY connections holds 16 MiB of buffers instead of 128.
TLS_READ_BUFFER = 32 * 1024


def client_key(address: str) -> str:
    """Who counts as one client: an IPv4 address, or the /64 of an IPv6 address."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class Slot:
    """One admitted connection's place; released exactly once, whatever ends it."""

    def __init__(self, admission: Admission, kind: str, key: str) -> None:
        self.admission, self.kind, self.key = admission, kind, key
        self.released = False
        self.handshaking = False  # counted among its client's handshakes in progress

    def handshake_done(self) -> None:
        """The TLS handshake ended (done, failed or timed out): no longer in progress."""
        if self.handshaking:
            self.handshaking = False
            self.admission._handshake_done(self)

    def release(self) -> None:
        if not self.released:
            self.handshake_done()
            self.released = True
            self.admission._release(self)


@dataclass
class Admission:
    """Counts connections per listener kind and per client; decides at accept time."""

    limit: int = LIMIT_CONCURRENCY
    per_client: int = LIMIT_PER_CLIENT
    health_limit: int = HEALTH_CONNECTIONS
    handshakes_per_client: int = HANDSHAKES_PER_CLIENT
    clock: Callable[[], float] = time.monotonic
    held: Counter[str] = field(default_factory=Counter)  # per kind
    per_key: Counter[str] = field(default_factory=Counter)  # client listeners only
    handshaking: Counter[str] = field(default_factory=Counter)  # per client, in progress
    # Per client: admitted connections waiting for a handshake turn, with how to start it.
    waiting: dict[str, deque[tuple[Slot, Callable[[], None]]]] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)  # per reason, since start
    client_peak: int = 0  # the most connections one client has held at once, since start
    last_global_refusal: float = float("-inf")
    _logged: Counter[str] = field(default_factory=Counter)  # refusals already logged
    _next_log: float = 0.0

    def admit(self, kind: str, address: str) -> Slot | None:
        """A slot for a new connection from `address`, or None (refuse it)."""
        if kind == HEALTH:
            if self.held[HEALTH] >= self.health_limit:
                return self._refuse("health listener full")
            key = ""
        else:
            key = client_key(address)
            if self.per_key[key] >= self.per_client:
                return self._refuse("client at its limit")
            if self.held[CLIENT] >= self.limit:
                self.last_global_refusal = self.clock()
                return self._refuse("site at its limit")
            self.per_key[key] += 1
            self.client_peak = max(self.client_peak, self.per_key[key])
        self.held[kind] += 1
        return Slot(self, kind, key)

    def begin_handshake(self, slot: Slot, start: Callable[[], None]) -> None:
        """Start the slot's TLS handshake now (`start()`) or, if its client has
        `handshakes_per_client` in progress, once one of them has ended."""
        if slot.kind != CLIENT:
            start()
        elif self.handshaking[slot.key] < self.handshakes_per_client:
            self._count_handshake(slot)
            start()
        else:
            self.waiting.setdefault(slot.key, deque()).append((slot, start))

    def _count_handshake(self, slot: Slot) -> None:
        self.handshaking[slot.key] += 1
        slot.handshaking = True

    def _handshake_done(self, slot: Slot) -> None:
        self.handshaking[slot.key] -= 1
        if self.handshaking[slot.key] <= 0:
            del self.handshaking[slot.key]
        queue = self.waiting.get(slot.key)
        while queue:
            nxt, start = queue.popleft()
            if not nxt.released:  # a connection given up while it waited is skipped
                self._count_handshake(nxt)
                start()
                break
        if queue is not None and not queue:
            del self.waiting[slot.key]

    def _release(self, slot: Slot) -> None:
        self.held[slot.kind] -= 1
        if slot.kind == CLIENT:
            self.per_key[slot.key] -= 1
            if self.per_key[slot.key] <= 0:
                del self.per_key[slot.key]

    def _refuse(self, reason: str) -> None:
        self.refused[reason] += 1
        now = self.clock()
        if now >= self._next_log:  # at most one line per period, whatever the flood
            self._next_log = now + REFUSAL_LOG_EVERY_S
            new = self.refused - self._logged
            self._logged = Counter(self.refused)
            log.warning("refused connections: %s (holding %d client, %d health)",
                        ", ".join(f"{n} {r}" for r, n in sorted(new.items())),
                        self.held[CLIENT], self.held[HEALTH])
        return None

    @property
    def saturated(self) -> bool:
        return (self.held[CLIENT] >= self.limit
                or self.clock() - self.last_global_refusal < SATURATION_HOLD_S)

    def metrics(self, site: str) -> list[str]:
        """Prometheus text lines: connections held, the per-client peak, refusals."""
        label = f'site="{site}"'
        lines = ["# TYPE anycast_connections_held gauge"]
        lines += [f'anycast_connections_held{{{label},listener="{kind}"}} {self.held[kind]}'
                  for kind in (CLIENT, HEALTH)]
        lines += ["# TYPE anycast_connections_client_peak gauge",
                  f"anycast_connections_client_peak{{{label}}} {self.client_peak}",
                  "# TYPE anycast_connections_saturated gauge",
                  f"anycast_connections_saturated{{{label}}} {int(self.saturated)}",
                  "# TYPE anycast_connections_refused_total counter"]
        lines += [f'anycast_connections_refused_total{{{label},reason="{reason}"}} {n}'
                  for reason, n in sorted(self.refused.items())]
        return lines


def _reset(conn: socket.socket) -> None:
    """Close with RST: the refused peer gets an answer and we keep no state (no FIN_WAIT)."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def set_reaping_options(conn: socket.socket) -> None:
    """TCP keepalive and user timeout: a peer that vanished is noticed by the kernel."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, TCP_KEEPIDLE_S)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, TCP_KEEPINTVL_S)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, TCP_KEEPCNT)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)


ProtocolFactory = Callable[[Slot], asyncio.Protocol]


class Acceptor:
    """Accepts on one listening socket: admission, socket options, TLS, the protocol.

    Stands in for the asyncio.Server uvicorn would make (close, wait_closed)."""

    def __init__(self, sock: socket.socket, kind: str, admission: Admission,
                 tls: ssl.SSLContext, protocol_factory: ProtocolFactory,
                 handshake_timeout_s: float = TLS_HANDSHAKE_TIMEOUT_S) -> None:
        self.sock, self.kind, self.admission = sock, kind, admission
        self.tls, self.protocol_factory = tls, protocol_factory
        self.handshake_timeout_s = handshake_timeout_s
        self.handshakes: set[asyncio.Task[None]] = set()
        self.waiting: dict[Slot, socket.socket] = {}  # admitted, waiting for a handshake turn
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER  # this process's servers
        self.task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self.sock)
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: back off a little
                log.warning("accept failed: %s", exc.strerror or exc)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            slot = self.admission.admit(self.kind, peer[0])
            if slot is None:
                _reset(conn)
                continue
            try:
                set_reaping_options(conn)
            except OSError:  # the peer is already gone
                slot.release()
                _reset(conn)
                continue
            self.waiting[slot] = conn
            deadline = loop.time() + self.handshake_timeout_s
            self.admission.begin_handshake(
                slot, lambda slot=slot, deadline=deadline: self._start(slot, deadline))

    def _start(self, slot: Slot, deadline: float) -> None:
        """The slot's handshake turn has come: run it, within what is left of its time."""
        conn = self.waiting.pop(slot)
        task = asyncio.get_running_loop().create_task(self._handshake(conn, slot, deadline))
        self.handshakes.add(task)
        task.add_done_callback(self.handshakes.discard)

    async def _handshake(self, conn: socket.socket, slot: Slot, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        left = deadline - loop.time()
        if left < MIN_HANDSHAKE_S:  # it waited its whole time for its turn
            slot.release()
            _reset(conn)
            return
        try:
            await loop.connect_accepted_socket(
                lambda: self.protocol_factory(slot), conn, ssl=self.tls,
                ssl_handshake_timeout=left, ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_S)
        except (OSError, ssl.SSLError, EOFError):
            slot.release()  # handshake failed or timed out; asyncio closed the socket
        except asyncio.CancelledError:
            slot.release()
            conn.close()
            raise
        else:
            slot.handshake_done()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for task in list(self.handshakes):
            task.cancel()
        for slot, conn in list(self.waiting.items()):
            del self.waiting[slot]
            slot.release()
            _reset(conn)

    async def wait_closed(self) -> None:
        tasks = [t for t in (self.task, *self.handshakes) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)


class HeadLimitedConnection(h11.Connection):
    """h11's server side, plus: the complete request head is limited too, the status an
    error deserves is kept (`error_status`), and the end of each request is reported."""

    def __init__(self, head_limit: int, on_request_end: Callable[[], None]) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=head_limit)
        self.head_limit = head_limit
        self.error_status = 400
        self._on_request_end = on_request_end
        self._fed = 0  # bytes given to receive_data
        self._head_start = 0  # bytes consumed when the current request's head began

    def receive_data(self, data: bytes) -> None:
        self._fed += len(data)
        super().receive_data(data)

    def _consumed(self) -> int:
        return self._fed - len(self.trailing_data[0])

    def _refuse(self, status: int, why: str) -> NoReturn:
        self.error_status = status
        raise h11.RemoteProtocolError(why, error_status_hint=status)

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error_status = exc.error_status_hint
            raise
        if isinstance(event, h11.Request):
            if self._consumed() - self._head_start > self.head_limit:
                self._refuse(431, "request head too large")
            if event.http_version not in (b"1.0", b"1.1"):
                self._refuse(505, "HTTP version not supported")
            names = {name for name, _ in event.headers}
            if b"transfer-encoding" in names and b"content-length" in names:
                # RFC 9112 6.1: may be refused; the framing of such a request is ambiguous.
                self._refuse(400, "both Transfer-Encoding and Content-Length")
        elif isinstance(event, h11.EndOfMessage):
            self._head_start = self._consumed()
            self._on_request_end()
        return event


def error_response(status: int, site: str, request_timeout_s: float = REQUEST_TIMEOUT_S,
                   ) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of a protocol-level error: JSON, never cached, the site named."""
    descriptions = {
        400: "malformed HTTP request",
        408: f"request not complete within {request_timeout_s:g} s",
        431: f"request head larger than {HEAD_LIMIT} bytes",
        501: "unsupported transfer coding",
        505: "only HTTP/1.0 and HTTP/1.1 are served",
    }
    description = descriptions.get(status) or HTTPStatus(status).phrase
    # Each of these is about the request the client sent, whatever the status class.
    body = json.dumps({"error": "invalid_request", "error_description": description},
                      separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
               (b"cache-control", b"no-store"), (b"pragma", b"no-cache"),
               (b"x-anycast-site", site.encode("ascii")), (b"connection", b"close")]
    return headers, body


class CoalescingTransport:
    """A connection's transport whose writes made in one turn of the event loop go out
    as one: uvicorn writes a response's head and its body separately, which over TLS is
    two records in two segments, and two wake-ups of the client that reads them. The
    writes are joined and sent when the turn ends (`loop.call_soon`); `writelines` is
    writes in a row; `close` and `write_eof` send what is pending first, `abort` drops
    it. Everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in chunks:
            self.write(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with this module's limits: the request timer, the complete
    head limit, JSON protocol errors, and the connection's admission slot."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 *, slot: Slot, site: str, request_timeout_s: float = REQUEST_TIMEOUT_S,
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = HeadLimitedConnection(HEAD_LIMIT, self._request_received)
        self.slot, self.site = slot, site
        self.request_timeout_s = request_timeout_s
        self.request_timer: asyncio.TimerHandle | None = None
        self.request_started = False  # a byte of the awaited request has come

    # --- the request timer ---------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self.request_started = False
        self.request_timer = self.loop.call_later(self.request_timeout_s, self._request_late)

    def _disarm(self) -> None:
        if self.request_timer is not None:
            self.request_timer.cancel()
            self.request_timer = None

    def _request_received(self) -> None:
        # The client finished sending a request. If our answer is already out (an early
        # 413, say), the connection now waits for the next request: keep timing it.
        if self.conn.our_state is h11.DONE:
            self._arm()
        else:
            self._disarm()

    def _request_late(self) -> None:
        self.request_timer = None
        if self.transport.is_closing():
            return
        if self.request_started or self.conn.their_state is not h11.IDLE:
            self.refuse(408)
        else:
            self.transport.close()

    # --- uvicorn's hooks -----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Requests' cycles take the transport from here: each response in one write.
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.slot.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.request_started = True
        super().data_received(data)

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm()  # before a pipelined request is parsed (which disarms it)
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this for every h11 RemoteProtocolError: answer its real status."""
        self.refuse(self.conn.error_status)

    def refuse(self, status: int) -> None:
        """Answer a protocol-level error in JSON (when an answer can still start), close."""
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()
                return
            cycle.disconnected = True  # the application's answer, if any, is dropped
            cycle.message_event.set()
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            headers, body = error_response(status, self.site, self.request_timeout_s)
            try:
                out = self.conn.send(h11.Response(status_code=status, headers=headers,
                                                  reason=HTTPStatus(status).phrase.encode()))
                out = (out or b"") + (self.conn.send(h11.Data(data=body)) or b"")
                out += self.conn.send(h11.EndOfMessage()) or b""
                self.transport.write(out)
            except h11.LocalProtocolError:
                pass
        self.transport.close()


class SaturationHeader:
    """ASGI wrapper: answers given on a health listener say whether the site is saturated."""

    def __init__(self, app: Any, admission: Admission,
                 health_addresses: set[tuple[str, int]]) -> None:
        self.app, self.admission, self.health_addresses = app, admission, health_addresses

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        server = scope.get("server")
        if scope["type"] != "http" or server is None or tuple(server) not in \
                self.health_addresses:
            await self.app(scope, receive, send)
            return

        async def with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                flag = b"1" if self.admission.saturated else b"0"
                message = {**message,
                           "headers": [*message.get("headers", []), (SATURATED_HEADER, flag)]}
            await send(message)

        await self.app(scope, receive, with_header)
