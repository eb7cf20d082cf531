"""Process runner: owns serving the introspection app over TLS on many addresses.

``python -m lab.sites.introspect --config FILE.json`` loads a ``ServerConfig`` (the
``IntrospectConfig`` fields plus the ones below), binds one TCP socket per
``listen`` address itself -- ``SO_REUSEADDR`` and ``IP_FREEBIND`` so that an
anycast address can be bound before it is configured on an interface -- and one
per ``health_listen`` address (the health daemon's own listener, on
``health_port``), and runs a single uvicorn server with TLS on all of them, in one
event loop. Connections are accepted, limited and timed by ``lab.sites.introspect.guard``
(limits, timeouts and their bounds are stated there). Once every socket is
listening it prints ``ready`` on stdout (flushed). SIGTERM or SIGINT stop it
gracefully with exit status 0.

Config file (JSON; unknown keys are an error)::

    {
      "site": "site-a", "issuer": "https://issuer.lab", "audience": "api.lab",
      "public_key_file": "signing.pub.pem",      # or "public_key_pem": "-----BEGIN..."
      "clients_path": "clients.json", "revocation_path": "revoked.json",
      "max_body_bytes": 4096,                     # optional
      "listen": ["203.0.113.53", "2001:db8:53::53", "100.64.0.5"],
      "port": 443,                                # optional
      "health_listen": ["127.0.0.1"],             # optional, default none
      "health_port": 8443,                        # optional
      "tls_cert": "server.crt.pem", "tls_key": "server.key.pem",
      "log_file": "/var/log/introspect.log",      # optional, default stderr
      "limit_concurrency": 512,                   # optional: client connections at once
      "limit_per_client": 256,                    # optional: per IPv4 address / IPv6 /64
      "request_timeout_s": 5,                     # optional
      "tls_handshake_timeout_s": 3                # optional
    }

Relative paths are resolved against the config file's directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import uvicorn
from pydantic import Field, ValidationError, field_validator, model_validator
from starlette.types import ASGIApp

from lab.shared.jsonconfig import read_object, resolve_paths
from lab.sites.introspect import guard
from lab.sites.introspect.app import IntrospectConfig, create_app

__all__ = ["ServerConfig", "bind_sockets", "load_server_config", "main", "serve"]

log = logging.getLogger(__name__)

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_FREEBIND = 78  # Linux >= 4.15; IP_FREEBIND on an AF_INET6 socket works too
LISTEN_BACKLOG = 1024
TIMEOUT_KEEP_ALIVE_S = guard.KEEP_ALIVE_TIMEOUT_S
H11_MAX_INCOMPLETE_EVENT_SIZE = guard.HEAD_LIMIT  # request line + headers
HEALTH_PORT = 8443
TICK_S = 1.0  # the server's own timer: the Date header, the periodic collection
GC_EVERY_TICKS = 20  # full garbage collection every 2 s, in uvicorn's 0.1 s ticks (on_tick)


class ServerConfig(IntrospectConfig):
    """``IntrospectConfig`` plus how to serve it."""

    listen: list[str] = Field(min_length=1)
    port: int = Field(default=443, ge=0, le=65535)
    tls_cert: Path
    tls_key: Path
    log_file: Path | None = None
    limit_concurrency: int = Field(default=guard.LIMIT_CONCURRENCY, ge=1, le=60_000)
    limit_per_client: int = Field(default=guard.LIMIT_PER_CLIENT, ge=1, le=60_000)
    health_listen: list[str] = Field(default_factory=list)
    health_port: int = Field(default=HEALTH_PORT, ge=0, le=65535)
    request_timeout_s: float = Field(default=guard.REQUEST_TIMEOUT_S, gt=0, le=60)
    tls_handshake_timeout_s: float = Field(default=guard.TLS_HANDSHAKE_TIMEOUT_S, gt=0, le=60)

    @field_validator("listen", "health_listen")
    @classmethod
    def _ip_literals(cls, value: list[str]) -> list[str]:
        out = [str(ipaddress.ip_address(a)) for a in value]
        if len(set(out)) != len(out):
            raise ValueError("listen addresses must be unique")
        return out

    @model_validator(mode="after")
    def _health_apart(self) -> ServerConfig:
        if self.health_port == self.port and set(self.health_listen) & set(self.listen):
            raise ValueError("the health listener must not share an address and port with "
                             "the client listeners")
        return self


_PATH_FIELDS = ("clients_path", "revocation_path", "tls_cert", "tls_key", "log_file")


def load_server_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read a JSON config file; raises ``ValueError`` with a readable message if invalid."""
    path = Path(path)
    raw = read_object(path)
    base = path.parent
    resolve_paths(raw, _PATH_FIELDS, base)
    key_file = raw.pop("public_key_file", None)
    if key_file is not None:
        if "public_key_pem" in raw:
            raise ValueError(f"{path}: give public_key_file or public_key_pem, not both")
        raw["public_key_pem"] = (base / key_file).read_text(encoding="ascii")
    try:
        return ServerConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None


def bind_sockets(addresses: Sequence[str], port: int) -> list[socket.socket]:
    """Bind and listen on one TCP socket per address (v4 or v6); close all on failure."""
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            ip = ipaddress.ip_address(address)
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            # proto must be IPPROTO_TCP (not 0): asyncio only sets TCP_NODELAY on
            # accepted sockets whose proto says TCP; without it Nagle + delayed ACK
            # add ~40 ms to every keep-alive response.
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited on accept
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                with contextlib.suppress(OSError):  # older kernel: IP_FREEBIND covers it
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            sock.bind((str(ip), port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _tls_context(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    ctx = default()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class _Server(uvicorn.Server):
    """uvicorn.Server whose listeners accept through the guard, and that reports once
    every socket listens."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None, *,
                 service: ServerConfig, admission: guard.Admission,
                 health_addresses: set[tuple[str, int]],
                 on_exit: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        # Run in the loop when a stop is asked for: the application ends its open streams
        # (uvicorn's graceful shutdown waits for every response to finish).
        self._on_exit = on_exit
        self.service = service
        self.admission = admission
        self.health_sockets: list[socket.socket] = []  # set by serve(), before run()
        self.health_addresses = health_addresses  # filled at startup, read per answer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._gc_epoch = -1  # the GC_EVERY_TICKS period of the last full collection

    def _protocol(self, slot: guard.Slot) -> guard.GuardedH11Protocol:
        return guard.GuardedH11Protocol(
            self.config, self.server_state, self.lifespan.state, slot=slot,
            site=self.service.site, request_timeout_s=self.service.request_timeout_s)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup, with a guard.Acceptor per socket instead of loop.create_server."""
        await self.lifespan.startup()  # lifespan "off": nothing to run
        if sockets is None or self.config.ssl is None:
            raise ValueError("the introspection server needs bound sockets and TLS")
        self.servers = []
        for sock in sockets:
            kind = guard.HEALTH if sock in self.health_sockets else guard.CLIENT
            if kind == guard.HEALTH:
                self.health_addresses.add(tuple(sock.getsockname()[:2]))
            acceptor = guard.Acceptor(sock, kind, self.admission, self.config.ssl,
                                      self._protocol, self.service.tls_handshake_timeout_s)
            acceptor.start()
            self.servers.append(acceptor)  # type: ignore[arg-type]
        self.started = True
        # Everything alive now (modules, app, keys) lives as long as the process:
        # keep it out of every later collection so the periodic pass stays cheap.
        gc.collect()
        gc.freeze()
        if self.started and self._on_ready is not None:
            self._on_ready()

    async def main_loop(self) -> None:
        """uvicorn's loop ticks every 0.1 s to notice `should_exit`; this one ticks every
        TICK_S and is woken at once by a stop (`request_exit`, the signal handler): an
        idle service wakes once a second, not ten times."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        seconds = 0
        should_exit = await self.on_tick(0)
        while not should_exit:
            seconds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            # uvicorn's counter is in 0.1 s ticks (its Date header: every 10th).
            should_exit = await self.on_tick(seconds * 10 % 864000)

    def request_exit(self) -> None:
        """Stop serving (callable from a signal handler): wakes the main loop."""
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._wake.set)
                if self._on_exit is not None:
                    self._loop.call_soon_threadsafe(self._on_exit)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.request_exit()

    async def on_tick(self, counter: int) -> bool:
        # Each closed TLS connection leaves a reference cycle holding asyncio's 256 KiB
        # read buffer; the generational GC rarely reaches it, so without a periodic full
        # pass RSS grows ~280 KiB per keep-alive connection. A full pass over the
        # unfrozen objects costs ~1 ms.
        epoch = counter // GC_EVERY_TICKS
        if epoch != self._gc_epoch:
            self._gc_epoch = epoch
            gc.collect()
        return await super().on_tick(counter)


def build_server(config: ServerConfig, on_ready: Callable[[], None] | None = None,
                 app: ASGIApp | None = None) -> _Server:
    """The uvicorn server for ``config`` (not yet running, no sockets bound); ``app``
    replaces the introspection application (the issuer serves its own through the same
    listeners, guard and TLS)."""
    if app is None:
        app = create_app(config)  # a ServerConfig is an IntrospectConfig
    admission = guard.Admission(limit=config.limit_concurrency,
                                per_client=config.limit_per_client)
    state = getattr(app, "state", None)
    if state is not None:
        state.connection_metrics = admission.metrics
    health_addresses: set[tuple[str, int]] = set()
    uv_config = uvicorn.Config(
        guard.SaturationHeader(app, admission, health_addresses),
        http="h11",  # h11_max_incomplete_event_size applies to h11
        ws="none",
        lifespan="off",
        log_config=None,  # keep the process's logging setup
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=TIMEOUT_KEEP_ALIVE_S,
        timeout_graceful_shutdown=10,
        limit_concurrency=None,  # guard.Admission limits connections at accept
        h11_max_incomplete_event_size=H11_MAX_INCOMPLETE_EVENT_SIZE,
        backlog=LISTEN_BACKLOG,
        ssl_certfile=str(config.tls_cert),
        ssl_keyfile=str(config.tls_key),
        ssl_context_factory=_tls_context,
    )
    return _Server(uv_config, on_ready, service=config, admission=admission,
                   health_addresses=health_addresses,
                   on_exit=getattr(getattr(app, "state", None), "on_exit", None))


def _print_ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def serve(config: ServerConfig, on_ready: Callable[[], None] | None = _print_ready,
          app: ASGIApp | None = None) -> None:
    """Bind every listen address and serve until SIGTERM/SIGINT (main thread only)."""
    if app is None:
        app = create_app(config)
    server = build_server(config, on_ready, app)
    # A site replicating from the issuer pulls in a thread of its own (lab.sites.introspect
    # .replica), started only here: a dry run (--check-config) never talks to anybody.
    replica = getattr(getattr(app, "state", None), "replica", None)
    if replica is not None:
        replica.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        # Covers a signal that arrives before uvicorn installs its own handlers;
        # uvicorn re-raises captured signals after shutdown, which land here too.
        server.request_exit()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        sockets = bind_sockets(config.listen, config.port)
        try:
            server.health_sockets = bind_sockets(config.health_listen, config.health_port)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        sockets += server.health_sockets
        for sock in sockets:
            host, port = sock.getsockname()[:2]
            what = "health daemon only" if sock in server.health_sockets else "clients"
            log.info("listening on https://%s:%d (%s)", f"[{host}]" if ":" in host else host,
                     port, what)
        server.run(sockets=sockets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_config(config: ServerConfig) -> None:
    """A dry run: everything `serve` would load, loaded, nothing bound."""
    create_app(config)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)


def _setup_logging(log_file: Path | None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.sites.introspect", description="RFC 7662 token introspection over TLS"
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--config", help="server config JSON file")
    mode.add_argument("--check-config", nargs="+", metavar="FILE",
                      help="dry run: load each config, its keys, registry and certificate")
    args = parser.parse_args(argv)
    try:
        if args.check_config:
            for path in args.check_config:
                check_config(load_server_config(path))
                print(f"{path}: ok")
            return 0
        config = load_server_config(args.config)
    except (OSError, ValueError, ssl.SSLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_file)
    try:
        serve(config)
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0
