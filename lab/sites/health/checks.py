"""The checks: each `run()` returns a `Result` within (about) its timeout, never raises.

All but `exec` run in-process, without forking:

* `DnsProbe`: one query on a *connected* UDP socket (connected once, kept), so a killed
  server is seen from the ICMP "port unreachable" in about a millisecond instead of at
  the timeout; NOERROR and (if configured) one of the expected addresses in the answer.
  Beside it, `ServerWatch`: a TCP connection to the server's port, kept open and never
  written to, that the daemon's loop watches: it closes with a killed server's process,
  and the daemon then runs the check at once instead of at its next interval.
* `IntrospectProbe`: over one persistent HTTPS connection (`KeptConnection`: keep-alive,
  lab CA, SNI and Host = the service name) with HTTP Basic client credentials: the
  active canary token must be `active: true`, the revoked one `active: false` (a site with a stale
  revocation list fails; asked every `revoked_every`th run while the check is steady, every
  run otherwise), and a call without credentials must get 401 (every
  `unauthenticated_every`th run). On the service's
  health listener its answers also say whether the site is saturated
  (`X-Anycast-Saturated`), which the result carries (`Result.saturated`).
* `TcpProbe`: a connect.
* `ExecProbe`: a command, exit 0 = success. Each run forks and execs: ~5-20 ms of CPU
  (about 18 ms for `dig`), so at 20 runs/s a quarter of a core; prefer the others.

Reasons are short and never contain a token or a secret.
"""

from __future__ import annotations

import base64
import errno
import http.client
import json
import math
import os
import secrets
import select
import socket
import ssl
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.sites.health import dnswire
from lab.sites.health.config import (
    Check,
    DnsCheck,
    ExecCheck,
    IdentityCheck,
    IntrospectCheck,
    TcpCheck,
)

REASON_MAX = 200
MAX_ANSWER = 1024 * 1024  # an introspection answer is a few hundred bytes
RECV_MAX = 4096  # a DNS answer over UDP without EDNS is at most 512 bytes


@dataclass(frozen=True)
class Result:
    ok: bool
    reason: str
    latency: float  # seconds the check took
    saturated: bool | None = None  # what the service said of its load; None: not said
    # Run again no later than this many seconds after this run started: a probe that knows
    # when its answer will change (the identity check: when the state it saw turns stale).
    recheck_s: float | None = None


class Probe:
    """A check's implementation: `attempt` asks once (it never raises), `run` times it;
    `close` releases what it holds (connections)."""

    saturated: bool | None = None  # what the service said of its load in this run
    recheck_s: float | None = None  # see Result.recheck_s; set by `attempt`, per run
    # Set by the daemon before each run: the check is up with no failure since, so a
    # probe may skip what it proves only every Nth run (IntrospectProbe's revoked canary).
    steady: bool = False

    def run(self) -> Result:
        started = time.monotonic()
        self.recheck_s = None
        ok, reason = self.attempt(started)
        return Result(ok, reason, time.monotonic() - started, self.saturated, self.recheck_s)

    def attempt(self, started: float) -> tuple[bool, str]:
        """(ok, reason) of one run begun at `started` (monotonic seconds)."""
        raise NotImplementedError

    def close(self) -> None:
        return None

    def kept_socket(self) -> socket.socket | None:
        """The connection this probe keeps open between runs, if any (the daemon's loop
        watches it for the server closing it)."""
        return None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 3] + "..."


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return _short(exc.strerror or str(exc) or type(exc).__name__)


class DnsProbe(Probe):
    """One query per run on a socket connected once and kept (a killed server answers
    its next query with ICMP "port unreachable", seen as ECONNREFUSED in about a
    millisecond): the query's bytes are built once, each run gives them a fresh random
    id, and the answer is parsed only for its id, question, rcode and addresses
    (`dnswire`). After a run that its own answer did not end (a timeout, an error),
    datagrams already waiting (late answers, an ICMP error) are dropped unread before
    the next query, and a later one is told by its id: a run is answered by its own
    query or not at all."""

    def __init__(self, cfg: DnsCheck) -> None:
        self.cfg = cfg
        self.query = dnswire.build_query(cfg.qname, cfg.qtype)
        self.expect = frozenset(cfg.expect)
        self.want = ", ".join(sorted(self.expect))
        self.sock: socket.socket | None = None
        self.poller = select.poll()
        self.qid = 0  # the id of the query in flight
        # The last run got its own answer and nothing else came: nothing can be queued
        # (no late answer, no ICMP error), so the next run need not drain (a syscall).
        self.answered = False
        self.watch = ServerWatch(cfg.server, cfg.port)  # used by the daemon's loop

    def _socket(self) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(self.query.family, socket.SOCK_DGRAM)
            try:
                sock.connect((self.cfg.server, self.cfg.port))
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            self.poller.register(sock, select.POLLIN)
            self.sock = sock
        return self.sock

    def _drain(self, sock: socket.socket) -> None:
        """Drop what is already queued (late answers; a stale ICMP error)."""
        while True:
            try:
                sock.recv(RECV_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue

    def send(self) -> tuple[bool, str] | None:
        """Send this run's query (dropping what is queued first); a failure already (no
        socket, refused) as (False, reason), else None: the answer is to be received."""
        self.qid = secrets.randbits(16)
        try:
            sock = self._socket()
            if not self.answered:
                self._drain(sock)
            self.answered = False
            sock.send(self.qid.to_bytes(2, "big") + self.query.wire[2:])
        except ConnectionRefusedError:
            return False, "refused (ICMP port unreachable)"
        except OSError as exc:
            self._close_udp()  # e.g. the address went away: connect again next run
            return False, _os_reason(exc)
        return None

    def receive(self) -> tuple[bool, str] | None:
        """Read what arrived (the socket is readable): this run's verdict, or None when
        it was not the answer (or nothing was there after all)."""
        assert self.sock is not None
        try:
            data = self.sock.recv(RECV_MAX)
        except (BlockingIOError, InterruptedError):
            return None
        except ConnectionRefusedError:
            return False, "refused (ICMP port unreachable)"
        except OSError as exc:
            self._close_udp()
            return False, _os_reason(exc)
        answer = dnswire.parse_answer(data, self.query, self.qid)
        if answer is None:
            return None
        self.answered = True
        return self.verdict(answer)

    def receive_soon(self, within_ms: int) -> tuple[bool, str] | None:
        """Right after `send`: this run's verdict if the answer (or an ICMP error) is
        there within `within_ms`, as it is from a server on the same host, else None (the
        caller's loop then waits for the socket as usual)."""
        if self.sock is None or not self.poller.poll(within_ms):
            return None
        return self.receive()

    def verdict(self, answer: dnswire.Answer) -> tuple[bool, str]:
        if answer.rcode != 0:
            return False, f"rcode {answer.rcode_text}"
        if not answer.addresses:
            return False, ("truncated answer without an address" if answer.truncated
                           else "NOERROR without an answer")
        if self.expect and not answer.addresses & self.expect:
            return False, f"answer {', '.join(sorted(answer.addresses))}, expected {self.want}"
        return True, "ok"

    def drain(self) -> None:
        """Readable while no run waits: drop it (a late answer, an ICMP error)."""
        if self.sock is not None:
            self.answered = False
            self._drain(self.sock)

    def attempt(self, started: float) -> tuple[bool, str]:
        """One run, blocking until its verdict or its timeout."""
        deadline = started + self.cfg.timeout_ms / 1000
        failed = self.send()
        if failed is not None:
            return failed
        while True:  # skip datagrams that are not the answer to this query
            left = deadline - time.monotonic()
            if left <= 0 or not self.poller.poll(max(1, math.ceil(left * 1000))):
                return False, "timeout"
            outcome = self.receive()
            if outcome is not None:
                return outcome

    def close(self) -> None:
        self._close_udp()
        self.watch.close()

    def _close_udp(self) -> None:
        """Drop the query socket (after an error: made again next run); the watch, whose
        registration the daemon's loop holds, is left to it."""
        if self.sock is not None:
            self.poller.unregister(self.sock)
            self.sock.close()
            self.sock = None


class ServerWatch:
    """A TCP connection to the DNS server's port, kept open and never written to: when
    the server process dies the kernel closes its end at once, and the connection turns
    readable (EOF) -- the moment of a kill, seen without waiting for the next query. It
    is a hint, never a verdict: the daemon connects again (a server that merely closed an
    idle connection takes the new one) and, refused, runs the check at once, whose own
    query decides. A server without TCP, or one that refuses the connection, leaves the
    check to its pace alone."""

    def __init__(self, server: str, port: int) -> None:
        self.address = (server, port)
        self.family = socket.AF_INET6 if ":" in server else socket.AF_INET
        self.sock: socket.socket | None = None
        self.connecting = False  # a connect is under way: the socket turns writable

    def connect(self) -> str | None:
        """Start connecting unless the connection is open or under way (never blocks):
        None, or why it could not even start."""
        if self.sock is not None:
            return None
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            return _os_reason(OSError(err, os.strerror(err)))
        self.sock, self.connecting = sock, err != 0
        return None

    def connected(self) -> str | None:
        """The connect under way ended (its socket turned writable): None when the
        connection is open, else why not (and the watch is closed)."""
        self.connecting = False
        if self.sock is None:
            return "closed"
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.close()
            return _os_reason(OSError(err, os.strerror(err)))
        return None

    def closed(self) -> bool:
        """The socket turned readable: True when the server closed (or reset) it, and the
        watch is closed; False when it was only data (which a DNS server does not send
        unasked; dropped)."""
        if self.sock is None:
            return True
        try:
            if self.sock.recv(RECV_MAX):
                return False
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            pass
        self.close()
        return True

    def close(self) -> None:
        self.connecting = False
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class _FileText:
    """A small file's stripped text, re-read only when the file changes."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self._sig: tuple[int, ...] | None = None
        self._text = ""

    def read(self) -> str:
        try:
            st = os.stat(self.path)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
            if sig != self._sig:
                self._text, self._sig = self.path.read_text(encoding="utf-8").strip(), sig
        except (OSError, UnicodeDecodeError) as exc:
            self._sig = None
            detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise CheckFailed(f"cannot read {self.what}: {detail}") from None
        if not self._text:
            raise CheckFailed(f"{self.what} is empty")
        return self._text


class CheckFailed(Exception):
    """A failure whose message is the reason."""


class _Reply:
    """An HTTP answer as the checks read it."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status_code, self.headers, self.body = status, headers, body

    def json(self) -> object:
        return json.loads(self.body)


class KeptConnection:
    """One HTTPS connection to a site's own service, kept open between runs (keep-alive,
    the lab CA, SNI and Host = the service name): the stdlib's http.client, a fraction of
    a general-purpose client's cost per request. A request on a kept connection that the
    server closed meanwhile is sent once more on a new one; any other failure closes it."""

    def __init__(self, address: str, port: int, server_name: str, ca_file: Path) -> None:
        self.address, self.port, self.server_name = address, port, server_name
        self.ca_file = ca_file
        self.context: ssl.SSLContext | None = None
        self.conn: http.client.HTTPSConnection | None = None
        self.connections = 0  # opened so far

    def _open(self, timeout_s: float) -> http.client.HTTPSConnection:
        if self.context is None:
            try:
                self.context = ssl.create_default_context(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise CheckFailed(f"cannot load ca_file: {_short(str(exc))}") from None
        conn = _SniConnection(self.address, self.port, self.server_name, timeout=timeout_s,
                              context=self.context)
        conn.connect()
        self.connections += 1
        return conn

    def socket(self) -> socket.socket | None:
        """The open connection's socket (None between a close and the next request)."""
        conn = self.conn
        return None if conn is None else conn.sock

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                timeout_s: float) -> _Reply:
        """One request within `timeout_s`; OSError, ssl.SSLError or HTTPException if none."""
        headers = {**headers, "Host": self.server_name}
        for attempt in (1, 2):
            reused = self.conn is not None
            try:
                if self.conn is None:
                    self.conn = self._open(timeout_s)
                else:
                    self.conn.sock.settimeout(timeout_s)
                self.conn.request(method, path, body=body, headers=headers)
                answer = self.conn.getresponse()
                reply = _Reply(answer.status, answer.headers, answer.read(MAX_ANSWER))
                if answer.will_close:
                    self.close()
                return reply
            # The server closed the kept connection meanwhile (an idle close, or its process
            # died: then TLS ends without close_notify, SSLEOFError): once more, on a new one.
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    ssl.SSLEOFError):
                self.close()
                if not reused or attempt == 2:
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _SniConnection(http.client.HTTPSConnection):
    """Connects to an address, verifies and names (SNI) the service's name."""

    def __init__(self, address: str, port: int, server_name: str, **kw: Any) -> None:
        super().__init__(address, port, **kw)
        self.server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)
        except BaseException:
            sock.close()
            raise


def _call_failed(what: str, exc: BaseException) -> CheckFailed:
    if isinstance(exc, TimeoutError):
        return CheckFailed(f"timeout ({what} call)")
    if isinstance(exc, ssl.SSLError):
        return CheckFailed(f"{what} call: {_short(str(exc)) or type(exc).__name__}")
    if isinstance(exc, OSError):
        return CheckFailed(f"{what} call: {_os_reason(exc)}")
    return CheckFailed(f"{what} call: {_short(str(exc)) or type(exc).__name__}")


class IntrospectProbe(Probe):
    FORM = {"Content-Type": "application/x-www-form-urlencoded"}

    def __init__(self, cfg: IntrospectCheck) -> None:
        self.cfg = cfg
        self.secret = _FileText(cfg.client_secret_file, "client_secret_file")
        self.active = _FileText(cfg.active_token_file, "active_token_file")
        self.revoked = _FileText(cfg.revoked_token_file, "revoked_token_file")
        self.client = KeptConnection(cfg.address, cfg.port, cfg.server_name, cfg.ca_file)
        self.runs = 0
        self.revoked_skipped = 0  # steady runs in a row that did not ask about it

    def attempt(self, started: float) -> tuple[bool, str]:
        self.runs += 1
        self.saturated = None
        try:
            self._check(started + self.cfg.timeout_ms / 1000)
        except CheckFailed as exc:
            return False, str(exc)
        return True, "ok"

    def _basic(self) -> str:
        pair = (urllib.parse.quote_plus(self.cfg.client_id) + ":"
                + urllib.parse.quote_plus(self.secret.read()))
        return "Basic " + base64.b64encode(pair.encode()).decode("ascii")

    def _post(self, what: str, token: str, auth: str | None, deadline: float) -> _Reply:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CheckFailed(f"timeout (before the {what} call)")
        headers = dict(self.FORM)
        if auth is not None:
            headers["Authorization"] = auth
        body = urllib.parse.urlencode({"token": token}).encode()
        try:
            return self.client.request("POST", self.cfg.path, body, headers, left)
        except (OSError, http.client.HTTPException) as exc:
            raise _call_failed(what, exc) from None

    @staticmethod
    def _active(what: str, response: _Reply) -> bool:
        if response.status_code != 200:
            raise CheckFailed(f"{what}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise CheckFailed(f"{what}: answer is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
            raise CheckFailed(f"{what}: answer has no boolean 'active'")
        return body["active"]

    def _check(self, deadline: float) -> None:
        auth = self._basic()
        active, revoked = self.active.read(), self.revoked.read()
        answer = self._post("active canary", active, auth, deadline)
        flag = answer.headers.get("x-anycast-saturated")
        self.saturated = None if flag is None else flag == "1"
        if not self._active("active canary", answer):
            raise CheckFailed("active canary answered inactive")
        if self.steady and self.revoked_skipped + 1 < self.cfg.revoked_every:
            self.revoked_skipped += 1
        else:
            self.revoked_skipped = 0
            if self._active("revoked canary", self._post("revoked canary", revoked, auth,
                                                         deadline)):
                raise CheckFailed("revoked canary answered active (stale revocation list)")
        if (self.runs - 1) % self.cfg.unauthenticated_every == 0:
            status = self._post("no-credentials", active, None, deadline).status_code
            if status != 401:
                raise CheckFailed(f"no-credentials call: HTTP {status}, expected 401")

    def close(self) -> None:
        self.client.close()

    def kept_socket(self) -> socket.socket | None:
        return self.client.socket()


class TcpProbe(Probe):
    def __init__(self, cfg: TcpCheck) -> None:
        self.cfg = cfg

    def attempt(self, started: float) -> tuple[bool, str]:
        try:
            socket.create_connection((self.cfg.host, self.cfg.port),
                                     timeout=self.cfg.timeout_ms / 1000).close()
        except OSError as exc:
            return False, _os_reason(exc)
        return True, "ok"


class ExecProbe(Probe):
    def __init__(self, cfg: ExecCheck) -> None:
        self.cfg = cfg

    def attempt(self, started: float) -> tuple[bool, str]:
        try:
            done = subprocess.run(self.cfg.argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=self.cfg.timeout_ms / 1000, check=False)
        except subprocess.TimeoutExpired:
            return False, "timeout"
        except OSError as exc:
            return False, f"cannot run: {_os_reason(exc)}"
        if done.returncode == 0:
            return True, "ok"
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return False, _short(f"exit {done.returncode}" + (f": {last[0]}" if last else ""))


def make_probe(cfg: Check) -> Probe:
    if isinstance(cfg, IdentityCheck):
        from lab.sites.health.identity import IdentityProbe

        return IdentityProbe(cfg)
    if isinstance(cfg, DnsCheck):
        return DnsProbe(cfg)
    if isinstance(cfg, IntrospectCheck):
        return IntrospectProbe(cfg)
    if isinstance(cfg, TcpCheck):
        return TcpProbe(cfg)
    return ExecProbe(cfg)
