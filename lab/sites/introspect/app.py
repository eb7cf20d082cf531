"""HTTP layer: owns the Starlette application that answers RFC 7662 introspection.

``create_app(IntrospectConfig) -> Starlette``. Routes:

* ``POST /introspect`` (alias ``POST /oauth2/introspect``): the checks run in
  this order, the first failure answers:

  1. any other method -> 405 with ``Allow: POST``;
  2. Content-Type not ``application/x-www-form-urlencoded`` (parameters such as
     charset allowed) -> 415 ``invalid_request``;
  3. Content-Length above ``max_body_bytes`` -> 413 (before reading anything);
  4. missing, malformed or wrong HTTP Basic credentials -> 401
     ``invalid_client`` with ``WWW-Authenticate: Basic realm="anycast-lab"``;
  5. body read while counting: more than ``max_body_bytes`` -> 413 (this
     catches chunked bodies without a Content-Length);
  6. body not UTF-8 form data, or a parameter given twice (RFC 6749 §3.1) -> 400;
  7. missing or empty ``token`` -> 400 ``invalid_request``
     (``token_type_hint`` is optional and any value is accepted, §2.1);
  8. revocation list never loaded -> 503 ``temporarily_unavailable``
     (fail safe: the site cannot know what is revoked);
  9. 200 with the ``tokens.verify_token`` answer, or exactly ``{"active": false}``.

* ``GET /identity`` -> the identity state the site holds: with a replica (a site that
  replicates from the issuer, ``lab.sites.introspect.replica``) its revocation version,
  age and kid sets; always the SHA-256 of the certificate's public key and its notAfter.
* ``GET /metrics`` -> the same as Prometheus text.
* ``GET /healthz`` -> 200 ``{"status": "ok", "site", "revocation_version"}``
  when the revocation list is healthy, else 503 with ``"status": "unavailable"``.
* anything else -> 404 JSON.

Every response (errors and 500s included) is JSON and carries
``Cache-Control: no-store``, ``Pragma: no-cache`` and ``X-Anycast-Site``.
The public key and the client registry are loaded once here; the revocation
file is stat()ed on every introspection request and reloaded when it changed.
Neither tokens nor secrets are ever logged.
"""

from __future__ import annotations

import logging
import traceback
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lab.shared.clients import ClientRegistry, load_registry, parse_basic_auth
from lab.shared.revocation import RevocationList
from lab.shared.tokens import kid_of_token, load_public_key, verify_token
from lab.sites.introspect.replica import Replica, ReplicaConfig

__all__ = ["INTROSPECTION_PATHS", "IntrospectConfig", "create_app"]

log = logging.getLogger(__name__)

INTROSPECTION_PATHS = ("/introspect", "/oauth2/introspect")
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
REALM = "anycast-lab"
_MAX_FORM_FIELDS = 16
KDF_CONCURRENCY = 2  # parallel scrypt checks of uncached credentials
_STATUS_ERRORS = {404: "not_found", 405: "method_not_allowed"}


class IntrospectConfig(BaseModel):
    """Everything the application needs; paths are read at ``create_app`` time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    public_key_pem: str = Field(min_length=1)
    clients_path: Path
    revocation_path: Path
    max_body_bytes: int = Field(default=4096, ge=64, le=1024 * 1024)
    leeway_s: float = Field(default=0, ge=0, le=300)
    # 0 = stat the revocation file on every request (cheap, deterministic).
    revocation_check_interval_s: float = Field(default=0.0, ge=0, le=60)
    # Replicate keys and revocations from the issuer (else: the configured public key
    # and a revocation file written in place).
    replica: ReplicaConfig | None = None


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def _oauth_error(status: int, error: str, description: str | None = None) -> Response:
    body = {"error": error}
    if description is not None:
        body["error_description"] = description
    return _json(status, body)


_INACTIVE: dict[str, Any] = {"active": False}
_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": f'Basic realm="{REALM}"'}


class _ResponseHeaders:
    """Pure ASGI middleware: stamps every response, turns crashes into JSON 500s."""

    _NAMES = (b"cache-control", b"pragma", b"x-anycast-site")

    def __init__(self, app: ASGIApp, site: str) -> None:
        self.app = app
        self.extra = [
            (b"cache-control", b"no-store"),
            (b"pragma", b"no-cache"),
            (b"x-anycast-site", site.encode("ascii")),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def stamped_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in self._NAMES
                ]
                message = {**message, "headers": headers + self.extra}
            await send(message)

        try:
            await self.app(scope, receive, stamped_send)
        except ClientDisconnect:
            return  # gone, or cut off by the connection guard (which answered itself)
        except Exception as exc:
            if started:
                raise
            # Type and code location only: an exception message might quote request data.
            log.error(
                "unhandled %s\n%s",
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            await _json(500, {"error": "server_error"})(scope, receive, stamped_send)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = _STATUS_ERRORS.get(exc.status_code, "invalid_request")
    return _json(exc.status_code, {"error": error}, headers=exc.headers)


class _Introspection:
    def __init__(
        self,
        config: IntrospectConfig,
        registry: ClientRegistry,
        revocations: RevocationList,
        replica: Replica | None = None,
    ) -> None:
        self.config = config
        self.replica = replica
        # The certificate presented (a ServerConfig's tls_cert), for /identity.
        self.cert = _cert_facts(getattr(config, "tls_cert", None))
        self.public_key = config.public_key_pem.encode("ascii")
        self.registry = registry
        self.revocations = revocations
        self.kdf_limiter = anyio.CapacityLimiter(KDF_CONCURRENCY)

    async def _authenticated(self, request: Request) -> bool:
        values = request.headers.getlist("authorization")
        creds = parse_basic_auth(values[0]) if len(values) == 1 else None
        if creds is None:
            log.info("introspection caller sent no usable Basic credentials")
            return False
        client_id, secret = creds
        if self.registry.check_cached(client_id, secret):
            return True
        # scrypt runs in a worker thread, at most KDF_CONCURRENCY at a time: each one
        # takes ~30 ms of CPU and 16 MiB, so a burst of new or bad credentials must
        # not fan out over the whole thread pool. verify() re-checks the cache once
        # it has a slot, so a burst from one new client costs a single scrypt.
        if await anyio.to_thread.run_sync(
            self.registry.verify, client_id, secret, limiter=self.kdf_limiter
        ):
            return True
        who = client_id if client_id in self.registry else "<unknown client>"
        log.info("introspection caller authentication failed: %s", who)
        return False

    async def introspect(self, request: Request) -> Response:
        limit = self.config.max_body_bytes
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != FORM_MEDIA_TYPE:
            return _oauth_error(415, "invalid_request", f"Content-Type must be {FORM_MEDIA_TYPE}")
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return _oauth_error(400, "invalid_request", "bad Content-Length")
            if int(declared) > limit:
                return _oauth_error(413, "invalid_request", f"body larger than {limit} bytes")
        if not await self._authenticated(request):
            return _json(401, {"error": "invalid_client"}, headers=_UNAUTHORIZED_HEADERS)

        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return _oauth_error(413, "invalid_request", f"body larger than {limit} bytes")
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                errors="strict",
                max_num_fields=_MAX_FORM_FIELDS,
            )
        except ValueError:  # includes UnicodeDecodeError and too many fields
            return _oauth_error(400, "invalid_request", "malformed form body")
        names = [name for name, _ in pairs]
        if len(names) != len(set(names)):
            return _oauth_error(400, "invalid_request", "a parameter is repeated")
        params = dict(pairs)
        token = params.get("token", "")
        if not token:
            return _oauth_error(400, "invalid_request", "missing token parameter")
        # token_type_hint: optional, any value accepted, unknown values ignored (RFC 7662 §2.1).

        self.revocations.refresh()
        if not self.revocations.healthy:
            return _oauth_error(503, "temporarily_unavailable", "revocation list not loaded")
        key = self.public_key
        if self.replica is not None:
            # The key the token's kid names, among those the site holds; none: inactive.
            found = self.replica.keys().get(kid_of_token(token) or "")
            if found is None:
                return _json(200, _INACTIVE)
            key = found
        result = verify_token(
            token,
            key,
            issuer=self.config.issuer,
            audience=self.config.audience,
            revoked=self.revocations,
            leeway_s=self.config.leeway_s,
        )
        return _json(200, result if result is not None else _INACTIVE)

    def identity_state(self) -> dict[str, Any]:
        self.revocations.refresh()
        state: dict[str, Any] = {"site": self.config.site, "replicated": False,
                                 "revocation": {"version": self.revocations.version},
                                 "cert": self.cert}
        if self.replica is not None:
            state.update(self.replica.state(), replicated=True)
            state["revocation"]["version"] = self.revocations.version
        return state

    async def identity(self, request: Request) -> Response:
        return _json(200, self.identity_state())

    async def metrics(self, request: Request) -> Response:
        state = self.identity_state()
        site = self.config.site
        rev = state["revocation"]
        lines = [
            "# TYPE anycast_identity_revocation_version gauge",
            f'anycast_identity_revocation_version{{site="{site}"}} {rev["version"]}',
        ]
        if state["replicated"]:
            sync = state["sync"]
            lines += [
                "# TYPE anycast_identity_revocation_age_seconds gauge",
                f'anycast_identity_revocation_age_seconds{{site="{site}"}} {rev["age_s"]}',
                "# TYPE anycast_identity_kids gauge",
                f'anycast_identity_kids{{site="{site}"}} {len(state["kids"])}',
                "# TYPE anycast_identity_keys_match gauge",
                f'anycast_identity_keys_match{{site="{site}"}} '
                f'{int(state["kids"] == state["issuer_kids"])}',
                "# TYPE anycast_identity_sync_attempts_total counter",
                f'anycast_identity_sync_attempts_total{{site="{site}"}} {sync["attempts"]}',
                "# TYPE anycast_identity_sync_failures_total counter",
                f'anycast_identity_sync_failures_total{{site="{site}"}} {sync["failures"]}',
                "# TYPE anycast_identity_sync_updates_total counter",
                f'anycast_identity_sync_updates_total{{site="{site}"}} {sync["updates"]}',
            ]
        connections = getattr(request.app.state, "connection_metrics", None)
        if connections is not None:  # set by the server that owns the listeners
            lines += connections(site)
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def healthz(self, request: Request) -> Response:
        self.revocations.refresh()
        healthy = self.revocations.healthy
        return _json(
            200 if healthy else 503,
            {
                "status": "ok" if healthy else "unavailable",
                "site": self.config.site,
                "revocation_version": self.revocations.version,
            },
        )


def create_app(config: IntrospectConfig) -> Starlette:
    """Build the application; raises (ValueError, OSError) on a bad key or registry."""
    load_public_key(config.public_key_pem)  # fail at start, not on the first request
    registry = load_registry(config.clients_path)
    revocations = RevocationList(
        config.revocation_path, min_interval_s=config.revocation_check_interval_s
    )
    if not revocations.healthy:
        log.warning("site %s starts NOT ready: revocation list unreadable", config.site)
    replica = Replica(config.replica, config.revocation_path) if config.replica else None
    service = _Introspection(config, registry, revocations, replica)
    routes = [Route(path, service.introspect, methods=["POST"]) for path in INTROSPECTION_PATHS]
    routes.append(Route("/healthz", service.healthz, methods=["GET"]))
    routes.append(Route("/identity", service.identity, methods=["GET"]))
    routes.append(Route("/metrics", service.metrics, methods=["GET"]))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_ResponseHeaders, site=config.site)],
        exception_handlers={HTTPException: _http_exception},
    )
    app.router.redirect_slashes = False
    app.state.config = config
    app.state.revocations = revocations
    app.state.registry = registry
    app.state.replica = replica
    return app


def _cert_facts(path: Path | None) -> dict[str, Any] | None:
    """SHA-256 of the certificate's public key (SPKI) and its notAfter, or None."""
    if path is None:
        return None
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"spki_sha256": hashlib.sha256(spki).hexdigest(),
            "not_after": cert.not_valid_after_utc.isoformat()}
