"""A site's replica of the issuer's identity state: it follows the issuer's feed over the
lab network (one HTTPS request whose answer is a stream of JSON lines: everything at
first, the new revocation feed the moment it changes, else a heartbeat every
`interval_s`), and keeps what it holds and when it last heard from the issuer.

* A new revocation feed is written to the site's revocation file (the file the service
  reads, `lab.shared.revocation`), so the site's list is what it last received, never
  newer; a feed whose version went back is refused.
* The keys the service verifies with are the JWKS last received -- unless an override
  file exists (`override_path`, what the `wrong-key` fault writes: a JWKS the issuer does
  not hold), whose keys are then served instead. `state()` says which, and shows the
  issuer's kid set beside the served one, so a difference is visible.
* `state()` is what `/identity` and `/metrics` show: version, age of the last line
  received (each says "as of now, this is the state"), kid sets, counts, the last error.

One thread, one stream at a time: a revocation reaches the site in about a round trip,
and an idle site costs the issuer a few bytes per interval instead of a request. A line
that does not come within `interval_s + timeout_s`, or a broken stream, is a failed sync:
the stream is opened again (after `pause_s()`), and everything held is kept as it was (a
site cut off from the issuer goes stale, it does not go empty).
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
        self._conn: http.client.HTTPSConnection | None = None
        self._feed: http.client.HTTPResponse | None = None  # the open stream
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
            if not self.sync_once():
                self._stop.wait(max(0.0, self.pause_s() - (time.monotonic() - started)))
        self._close()

    def pause_s(self) -> float:
        """After a failed sync, the time from its start to the next try: the interval --
        except while the site has never synced, early on (the lab's routers are still
        converging, so the issuer is unreachable for a moment), when it tries again every
        FIRST_SYNC_RETRY_S and rises as soon as the route exists instead of up to an
        interval later."""
        if (self.synced_at is None
                and time.monotonic() - self.started_mono < FIRST_SYNC_FAST_S):
            return min(self.config.interval_s, FIRST_SYNC_RETRY_S)
        return self.config.interval_s

    def _stream(self) -> http.client.HTTPResponse:
        """The issuer's feed, opened when there is none: a 200 streaming JSON lines."""
        if self._feed is not None:
            return self._feed
        conn = http.client.HTTPSConnection(
            self.config.address, self.config.port, timeout=self.config.timeout_s,
            context=self._context)
        conn._create_connection = _connect  # type: ignore[attr-defined]
        self._conn = conn
        every_ms = round(self.config.interval_s * 1000)
        try:
            conn.request("GET", f"/feed?every_ms={every_ms}", headers={
                "Host": self.config.server_name, "Accept": "application/x-ndjson"})
            response = conn.getresponse()
        except http.client.HTTPException as exc:
            raise ValueError(f"/feed: {type(exc).__name__}") from None
        if response.status != 200:
            raise ValueError(f"/feed answered {response.status}")
        assert conn.sock is not None
        # Between two lines: the heartbeat period, plus what a request may take.
        conn.sock.settimeout(self.config.interval_s + self.config.timeout_s)
        self._feed = response
        return response

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._feed = None

    def _next_line(self) -> dict[str, Any]:
        """The feed's next line (opening the feed if needed), checked to be an object."""
        try:
            raw = self._stream().readline(https.MAX_ANSWER)
        except http.client.HTTPException as exc:
            raise ValueError(f"/feed: {type(exc).__name__}") from None
        if not raw.endswith(b"\n"):
            raise ValueError("the issuer ended the feed" if not raw
                             else "a feed line too long or cut off")
        try:
            line = json.loads(raw)
        except ValueError:
            raise ValueError("an unreadable feed line") from None
        if not isinstance(line, dict):
            raise ValueError("a feed line that is not a JSON object")
        return line

    def sync_once(self) -> bool:
        """Take the feed's next line (a heartbeat, or new state); True when one came."""
        self.attempts += 1
        try:
            line = self._next_line()
            if "jwks" in line and line.get("jwks_etag") != self.jwks_etag:
                parsed = identity.parse_jwks(line["jwks"])
                write_json_atomic(self.config.jwks_path, line["jwks"], 0o644, fsync=False)
                with self.lock:
                    self.issuer_keys, self.jwks_etag = parsed, line.get("jwks_etag")
            if "revoked" in line:
                doc = identity.parse_feed(line, self.version)
                if doc.version != self.version:
                    write_json_atomic(self.revocation_path, {"version": doc.version,
                                                             "revoked": doc.revoked},
                                      0o644, indent=None)
                    self.version = doc.version
                    self.updates += 1
            elif line.get("version") != self.version:
                raise ValueError("a heartbeat for a version this site was never sent")
        except (OSError, ValueError) as exc:
            self._close()
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
