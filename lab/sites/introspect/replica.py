"""A site's replica of the issuer's identity state: pulls the JWKS and the revocation feed
over the lab network on an interval, conditionally (`If-None-Match` with the entity tag it
holds: 304 when nothing changed), and keeps what it holds and when it last synced.

* A new revocation feed is written to the site's revocation file (the file the service
  reads, `lab.shared.revocation`), so the site's list is what it last received, never
  newer; a feed whose version went back is refused.
* The keys the service verifies with are the JWKS last received -- unless an override
  file exists (`override_path`, what the `wrong-key` fault writes: a JWKS the issuer does
  not hold), whose keys are then served instead. `state()` says which, and shows the
  issuer's kid set beside the served one, so a difference is visible.
* `state()` is what `/identity` and `/metrics` show: version, age of the last successful
  sync, kid sets, counts, the last error.

One thread, one request at a time; a failed pull keeps everything as it was (a site cut
off from the issuer goes stale, it does not go empty).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lab.shared import https, identity
from lab.shared.atomic import write_json_atomic
from lab.shared.revocation import read_revocations

log = logging.getLogger(__name__)

FIRST_SYNC_RETRY_S = 0.05  # between pulls until the first one succeeds ...
FIRST_SYNC_FAST_S = 10.0  # ... during this long after start (then: the interval)
# A TCP connect in the lab takes milliseconds. While routing converges, the SYN can leave
# before the issuer has a route back: the kernel then sends it again only after its 1 s
# initial RTO, so waiting cost a starting site ~1 s (measured); a new connect goes at once.
CONNECT_TIMEOUT_S = 0.2


def _connect(address: tuple[str, int], timeout: float,
             source_address: tuple[str, int] | None = None) -> socket.socket:
    """http.client's connection factory with a short connect: the TLS handshake and the
    requests then get the full `timeout`."""
    sock = socket.create_connection(address, min(timeout, CONNECT_TIMEOUT_S), source_address)
    sock.settimeout(timeout)
    return sock


class ReplicaConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str  # the issuer's unicast address
    port: int = Field(default=443, ge=1, le=65535)
    server_name: str = Field(min_length=1)  # the name on the issuer's certificate
    ca_file: Path
    interval_s: float = Field(default=0.5, ge=0.01, le=600)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    jwks_path: Path  # the JWKS last received (also the seed at start)
    override_path: Path | None = None


class Replica:
    def __init__(self, config: ReplicaConfig, revocation_path: Path) -> None:
        self.config = config
        self.revocation_path = revocation_path
        self.lock = threading.Lock()
        self.jwks_etag: str | None = None
        self.issuer_keys: dict[str, bytes] = {}
        self.version, _ = read_revocations(revocation_path)
        self.synced_at: float | None = None  # wall clock of the last successful sync
        self.synced_mono: float | None = None
        self.started_mono = time.monotonic()
        self.attempts = self.failures = self.updates = 0
        self.last_error: str | None = None
        self.override: dict[str, bytes] | None = None
        self._override_sig: tuple[int, int] | None = None
        self._stop = threading.Event()
        # Kept open between pulls (the issuer's keep-alive lasts 5 s; we pull every 0.5 s).
        self._conn: http.client.HTTPSConnection | None = None
        self._context = ssl.create_default_context(cafile=str(config.ca_file))
        self._context.check_hostname = True
        self._thread: threading.Thread | None = None
        try:
            self.issuer_keys = identity.parse_jwks(json.loads(config.jwks_path.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("no usable seed JWKS (%s): no keys until the first sync", exc)
        self._read_override()

    # --- what the service uses -------------------------------------------------------
    def keys(self) -> dict[str, bytes]:
        """The keys tokens are verified with: the override's, if any, else the issuer's."""
        self._read_override()
        return self.override if self.override is not None else self.issuer_keys

    def age_s(self) -> float:
        """Seconds since the last successful sync (since start when there was none)."""
        since = self.synced_mono if self.synced_mono is not None else self.started_mono
        return time.monotonic() - since

    def state(self) -> dict[str, Any]:
        served = self.keys()
        return {
            "issuer": f"{self.config.address}:{self.config.port}",
            "revocation": {"version": self.version, "synced_at": self.synced_at,
                           "age_s": round(self.age_s(), 3),
                           "ever_synced": self.synced_at is not None},
            "kids": sorted(served),
            "issuer_kids": sorted(self.issuer_keys),
            "keys_source": "override" if self.override is not None else "issuer",
            "sync": {"interval_s": self.config.interval_s, "attempts": self.attempts,
                     "failures": self.failures, "updates": self.updates,
                     "last_error": self.last_error},
        }

    # --- the pull loop ---------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="replica", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sync_once()
            self._stop.wait(max(0.0, self.pause_s() - (time.monotonic() - started)))

    def pause_s(self) -> float:
        """The time from one pull's start to the next: the interval -- except while the
        site has never synced, early on (the lab's routers are still converging, so the
        issuer is unreachable for a moment), when it tries again every FIRST_SYNC_RETRY_S
        and rises as soon as the route exists instead of up to an interval later."""
        if (self.synced_at is None
                and time.monotonic() - self.started_mono < FIRST_SYNC_FAST_S):
            return min(self.config.interval_s, FIRST_SYNC_RETRY_S)
        return self.config.interval_s

    def _get(self, path: str, etag: str | None) -> tuple[int, dict[str, str], Any]:
        """One GET over the kept connection (opened again after any failure): status,
        headers (lower-case names) and the JSON body (None when there is none)."""
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                self.config.address, self.config.port, timeout=self.config.timeout_s,
                context=self._context)
            self._conn._create_connection = _connect  # type: ignore[attr-defined]
        headers = {"Host": self.config.server_name, "Accept": "application/json"}
        if etag:
            headers["If-None-Match"] = etag
        try:
            self._conn.request("GET", path, headers=headers)
            response = self._conn.getresponse()
            data = response.read(https.MAX_ANSWER)
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            self._conn = None
            if isinstance(exc, OSError):
                raise
            raise ValueError(f"{path}: {type(exc).__name__}") from None
        try:
            body = json.loads(data) if data else None
        except ValueError:
            body = None
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body

    def sync_once(self) -> bool:
        """One pull of both documents; True when both answered (200 or 304)."""
        self.attempts += 1
        try:
            status, headers, body = self._get("/jwks", self.jwks_etag)
            if status == 200:
                parsed = identity.parse_jwks(body)
                write_json_atomic(self.config.jwks_path, body, 0o644, fsync=False)
                with self.lock:
                    self.issuer_keys, self.jwks_etag = parsed, headers.get("etag")
            elif status != 304:
                raise ValueError(f"/jwks answered {status}")
            status, _, body = self._get("/revocations", identity.revocation_etag(self.version))
            if status == 200:
                doc = identity.parse_feed(body, self.version)
                if doc.version != self.version:
                    write_json_atomic(self.revocation_path, {"version": doc.version,
                                                             "revoked": doc.revoked},
                                      0o644, indent=None)
                    self.version = doc.version
                    self.updates += 1
            elif status != 304:
                raise ValueError(f"/revocations answered {status}")
        except (OSError, ValueError) as exc:
            self.failures += 1
            reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror
                      else str(exc)) or type(exc).__name__
            if reason != self.last_error:
                log.warning("sync from the issuer failed: %s", reason)
            self.last_error = reason
            return False
        if self.last_error is not None:
            log.info("sync from the issuer works again (version %d)", self.version)
        self.last_error = None
        self.synced_at, self.synced_mono = time.time(), time.monotonic()
        return True

    def _read_override(self) -> None:
        path = self.config.override_path
        if path is None:
            return
        try:
            st = path.stat()
        except FileNotFoundError:
            self.override, self._override_sig = None, None
            return
        sig = (st.st_ino, st.st_mtime_ns)
        if sig == self._override_sig:
            return
        try:
            self.override = identity.parse_jwks(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("JWKS override %s unusable (%s): ignored", path, exc)
            self.override = None
        self._override_sig = sig
