"""The issuer's HTTP application: the lab's one source of signing keys and revocations.

Routes (every answer JSON, ``Cache-Control: no-store``, ``X-Anycast-Site: <issuer>``):

* ``GET /jwks`` -- the JWKS (public keys by ``kid``); ``ETag`` from the kid set, 304 on a
  matching ``If-None-Match``;
* ``GET /revocations`` -- ``{"version": N, "revoked": {jti: revoked_at}}``; ``ETag`` from
  the version, 304 on a match (a one-off look; the sites follow ``/feed``);
* ``GET /feed?every_ms=N`` -- what every site follows: a stream of JSON lines (NDJSON),
  one at once with the JWKS and the revocation feed, then one at each revocation (with the
  new feed) and one every N ms when nothing changed (``{"version", "jwks_etag"}``: "as of
  now, still this"); a line is sent the moment the list changes, so a revocation reaches
  every site in about a round trip, and a site that hears nothing for longer than N ms
  knows it may be cut off. N from 50 to 60000. One client (an IPv4 address, an IPv6
  /64) follows at most ``FEEDS_PER_CLIENT`` feeds at once: a new one ends its oldest, so a
  site that reconnects always gets its feed and one abusive client cannot make the issuer
  write more than that many streams;
* ``GET /state`` -- ``{"version", "kids", "tokens"}``: what a replica should hold;
* ``GET /healthz`` -- 200 once the revocation list is loaded;
* ``POST /tokens`` (admin) -- JSON ``{"client_id", "scope", "ttl_s", "sub"}``: a signed
  token and its claims; only the claims' metadata is recorded, never the token;
* ``POST /revoke`` (admin) -- JSON ``{"jti"}``: ``{"version", "added"}`` (revoking again
  changes nothing, the version stays);
* ``GET /tokens`` (admin) -- the metadata of every token issued, and the revoked jtis.

Admin calls need HTTP Basic credentials of a client in ``admin_clients``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lab.shared import identity, revocation, tokens
from lab.shared.clients import load_registry, parse_basic_auth
from lab.sites.introspect.guard import client_key
from lab.sites.introspect.server import ServerConfig

log = logging.getLogger(__name__)

MAX_BODY = 4096
# Every 401 names the scheme it wants (RFC 7235 section 3.1).
CHALLENGE = {"WWW-Authenticate": 'Basic realm="anycast-lab issuer"'}
MAX_TTL_S = 365 * 24 * 3600
FEED_EVERY_MS = (50, 60_000)  # the bounds of a follower's heartbeat period
# A site follows one feed; a reconnect can overlap the old stream until TCP gives up on
# it (a cut link): room for that, and nothing an abusive client could grow.
FEEDS_PER_CLIENT = 4
SUPERSEDED_LOG_EVERY_S = 10.0


class Follower:
    """One open feed: woken at each change, or to end (superseded, or the server stops)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.wake = asyncio.Event()
        self.ended = False

    def end(self) -> None:
        self.ended = True
        self.wake.set()


class IssuerConfig(ServerConfig):
    """The introspection server's settings (listeners, TLS, guard limits) plus the issuer's
    own: its signing key, where it records issued tokens, who may administer it."""

    signing_key: Path
    tokens_path: Path
    admin_clients: list[str] = Field(default_factory=lambda: ["lab-admin"])


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers={
        "Cache-Control": "no-store", **(headers or {})})


class Issuer:
    def __init__(self, config: IssuerConfig) -> None:
        self.config = config
        self.signing_pem = config.signing_key.read_bytes()
        self.kid = identity.kid_of(self.signing_pem)
        self.jwks_doc = identity.jwks_of([self.signing_pem])
        self.jwks_etag = identity.jwks_etag([self.kid])
        self.registry = load_registry(config.clients_path)
        self.revocations = revocation.RevocationList(config.revocation_path)
        self.write_lock = threading.Lock()
        self.followers: dict[str, deque[Follower]] = {}  # open feeds per client, oldest first
        self.superseded = 0  # feeds ended by a newer one of the same client, since start
        self._superseded_logged = 0
        self._next_log = 0.0
        self.stopping = False  # the server is stopping: every feed ends

    def stop(self) -> None:
        """End every feed (the server's shutdown waits for open responses to finish)."""
        self.stopping = True
        for queue in self.followers.values():
            for follower in queue:
                follower.end()

    def _notify(self) -> None:
        for queue in self.followers.values():
            for follower in queue:
                follower.wake.set()

    def _follow(self, key: str) -> Follower:
        """A new feed of client `key`; its oldest ends if it already has its share."""
        queue = self.followers.setdefault(key, deque())
        while len(queue) >= FEEDS_PER_CLIENT:
            queue.popleft().end()
            self.superseded += 1
        follower = Follower(key)
        queue.append(follower)
        now = time.monotonic()
        if self.superseded > self._superseded_logged and now >= self._next_log:
            self._next_log = now + SUPERSEDED_LOG_EVERY_S  # one line a period, whatever comes
            log.warning("%d feeds ended by a newer one from the same client (%d at most "
                        "each)", self.superseded - self._superseded_logged, FEEDS_PER_CLIENT)
            self._superseded_logged = self.superseded
        return follower

    def _unfollow(self, follower: Follower) -> None:
        queue = self.followers.get(follower.key)
        if queue is not None and follower in queue:
            queue.remove(follower)
            if not queue:
                del self.followers[follower.key]

    def _conditional(self, request: Request, etag: str, body: Any) -> Response:
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag,
                                                      "Cache-Control": "no-store"})
        return _json(200, body, {"ETag": etag})

    async def jwks(self, request: Request) -> Response:
        return self._conditional(request, self.jwks_etag, self.jwks_doc)

    async def revoked(self, request: Request) -> Response:
        self.revocations.refresh()
        version, listed = self.revocations.version, dict(self.revocations.revoked)
        return self._conditional(request, identity.revocation_etag(version),
                                 {"version": version, "revoked": listed})

    async def feed(self, request: Request) -> Response:
        try:
            every_ms = int(request.query_params.get("every_ms", "500"))
        except ValueError:
            every_ms = -1
        low, high = FEED_EVERY_MS
        if not low <= every_ms <= high:
            return _json(400, {"error": "invalid_request",
                               "error_description": f"every_ms: an integer, {low} to {high}"})
        host = request.client.host if request.client is not None else ""
        return StreamingResponse(self._lines(client_key(host) if host else "", every_ms / 1000),
                                 media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-store"})

    async def _lines(self, key: str, every_s: float) -> AsyncIterator[bytes]:
        """The feed's lines: everything first, then the revocation feed when its version
        moved, else a heartbeat, at each change or after `every_s` of quiet; until the
        follower ends (superseded, the server stops) or goes away."""
        sent: int | None = None  # the version this follower last got in full
        follower = self._follow(key)  # here: a stream that never starts holds nothing
        try:
            while not (self.stopping or follower.ended):
                follower.wake.clear()  # first: a change from here on wakes this feed
                self.revocations.refresh()
                version = self.revocations.version
                line: dict[str, Any] = {"version": version, "jwks_etag": self.jwks_etag}
                if sent is None:
                    line["jwks"] = self.jwks_doc
                if version != sent:
                    line["revoked"] = dict(self.revocations.revoked)
                    sent = version
                yield (json.dumps(line, separators=(",", ":")) + "\n").encode()
                try:
                    async with asyncio.timeout(every_s):
                        await follower.wake.wait()
                except TimeoutError:
                    pass
        finally:
            self._unfollow(follower)

    async def state(self, request: Request) -> Response:
        self.revocations.refresh()
        return _json(200, {"issuer": self.config.site, "version": self.revocations.version,
                           "kids": [self.kid], "revoked": len(self.revocations)})

    async def healthz(self, request: Request) -> Response:
        self.revocations.refresh()
        ok = self.revocations.healthy
        return _json(200 if ok else 503, {"status": "ok" if ok else "unavailable",
                                          "site": self.config.site,
                                          "revocation_version": self.revocations.version})

    async def _admin(self, request: Request) -> bool:
        values = request.headers.getlist("authorization")
        creds = parse_basic_auth(values[0]) if len(values) == 1 else None
        if creds is None or creds[0] not in self.config.admin_clients:
            return False
        if self.registry.check_cached(*creds):
            return True
        return await anyio.to_thread.run_sync(self.registry.verify, *creds)

    async def _body(self, request: Request) -> dict[str, Any] | None:
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                return None
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    async def issue(self, request: Request) -> Response:
        if not await self._admin(request):
            return _json(401, {"error": "invalid_client"}, CHALLENGE)
        doc = await self._body(request)
        if doc is None:
            return _json(400, {"error": "invalid_request"})
        client_id, scope, ttl = doc.get("client_id"), doc.get("scope", "read"), doc.get("ttl_s")
        sub = doc.get("sub") or client_id
        if not all(isinstance(v, str) and v for v in (client_id, scope, sub)) \
                or not isinstance(ttl, int) or isinstance(ttl, bool) \
                or not 1 <= ttl <= MAX_TTL_S:
            return _json(400, {"error": "invalid_request",
                               "error_description": "client_id, scope, sub: strings; ttl_s: "
                                                    f"1 to {MAX_TTL_S}"})
        token, claims = tokens.issue_token(
            self.signing_pem, issuer=self.config.issuer, audience=self.config.audience,
            client_id=client_id, sub=sub, scope=scope, ttl_s=ttl, kid=self.kid)
        meta = {k: claims[k] for k in ("jti", "sub", "client_id", "scope", "iat", "exp")}
        with self.write_lock, self.config.tokens_path.open("a") as f:
            f.write(json.dumps(meta) + "\n")
        return _json(200, {"token": token, "claims": claims})

    async def revoke(self, request: Request) -> Response:
        if not await self._admin(request):
            return _json(401, {"error": "invalid_client"}, CHALLENGE)
        doc = await self._body(request)
        jti = doc.get("jti") if doc else None
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            return _json(400, {"error": "invalid_request"})

        def write() -> tuple[int, bool]:
            with self.write_lock:
                return revocation.revoke_if_new(self.config.revocation_path, jti)

        version, added = await anyio.to_thread.run_sync(write)
        self.revocations.refresh(force=True)
        self._notify()  # every feed sends the new list now
        log.info("revoked a token: version %d (%s)", version, "new" if added else "again")
        return _json(200, {"jti": jti, "version": version, "added": added})

    async def listing(self, request: Request) -> Response:
        if not await self._admin(request):
            return _json(401, {"error": "invalid_client"}, CHALLENGE)
        out = []
        try:
            lines = self.config.tokens_path.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                meta = json.loads(line)
            except ValueError:  # a line torn by a crash while it was appended
                continue
            if isinstance(meta, dict):
                out.append(meta)
        self.revocations.refresh()
        return _json(200, {"tokens": out, "version": self.revocations.version,
                           "revoked": sorted(self.revocations.revoked)})


def create_issuer_app(config: IssuerConfig) -> Starlette:
    service = Issuer(config)
    routes = [
        Route("/jwks", service.jwks, methods=["GET"]),
        Route("/.well-known/jwks.json", service.jwks, methods=["GET"]),
        Route("/revocations", service.revoked, methods=["GET"]),
        Route("/feed", service.feed, methods=["GET"]),
        Route("/state", service.state, methods=["GET"]),
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/tokens", service.issue, methods=["POST"]),
        Route("/tokens", service.listing, methods=["GET"]),
        Route("/revoke", service.revoke, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.router.redirect_slashes = False
    app.state.issuer = service
    app.state.on_exit = service.stop
    return app
