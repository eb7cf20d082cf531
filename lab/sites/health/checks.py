"""The checks: each `run()` returns a `Result` within (about) its timeout, never raises.

All but `exec` run in-process, without forking:

* `DnsProbe`: one query on a fresh *connected* UDP socket, so a killed server is seen
  from the ICMP "port unreachable" in about a millisecond instead of at the timeout;
  NOERROR and (if configured) one of the expected addresses in the answer.
* `IntrospectProbe`: over one persistent HTTPS connection (keep-alive, lab CA, SNI and
  Host = the service name) with HTTP Basic client credentials: the active canary token
  must be `active: true`, the revoked one `active: false` (a site with a stale
  revocation list fails), and a call without credentials must get 401. On the service's
  health listener its answers also say whether the site is saturated
  (`X-Anycast-Saturated`), which the result carries (`Result.saturated`).
* `TcpProbe`: a connect.
* `ExecProbe`: a command, exit 0 = success. Each run forks and execs: ~5-20 ms of CPU
  (about 18 ms for `dig`), so at 20 runs/s a quarter of a core; prefer the others.

Reasons are short and never contain a token or a secret.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import ssl
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import httpx

from lab.sites.health.config import (
    Check,
    DnsCheck,
    ExecCheck,
    IdentityCheck,
    IntrospectCheck,
    TcpCheck,
)

REASON_MAX = 200


@dataclass(frozen=True)
class Result:
    ok: bool
    reason: str
    latency: float  # seconds the check took
    saturated: bool | None = None  # what the service said of its load; None: not said


class Probe:
    """A check's implementation: `attempt` asks once (it never raises), `run` times it;
    `close` releases what it holds (connections)."""

    saturated: bool | None = None  # what the service said of its load in this run

    def run(self) -> Result:
        started = time.monotonic()
        ok, reason = self.attempt(started)
        return Result(ok, reason, time.monotonic() - started, self.saturated)

    def attempt(self, started: float) -> tuple[bool, str]:
        """(ok, reason) of one run begun at `started` (monotonic seconds)."""
        raise NotImplementedError

    def close(self) -> None:
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
    def __init__(self, cfg: DnsCheck) -> None:
        self.cfg = cfg
        self.family = socket.AF_INET6 if ":" in cfg.server else socket.AF_INET
        self.rdtype = dns.rdatatype.from_text(cfg.qtype)
        self.expect = set(cfg.expect)
        # Built once; each run only gets a new random id (cheaper than a new message).
        self.query = dns.message.make_query(cfg.qname, self.rdtype)
        self.wire = self.query.to_wire()

    def attempt(self, started: float) -> tuple[bool, str]:
        deadline = started + self.cfg.timeout_ms / 1000
        query = self.query
        query.id = secrets.randbits(16)
        try:
            with socket.socket(self.family, socket.SOCK_DGRAM) as sock:
                sock.connect((self.cfg.server, self.cfg.port))
                sock.send(query.id.to_bytes(2, "big") + self.wire[2:])
                while True:  # skip datagrams that are not the answer to this query
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False, "timeout"
                    sock.settimeout(left)
                    data = sock.recv(65535)
                    try:
                        response = dns.message.from_wire(data)
                    except dns.exception.DNSException:
                        continue
                    if query.is_response(response):
                        break
        except ConnectionRefusedError:
            return False, "refused (ICMP port unreachable)"
        except OSError as exc:
            return False, _os_reason(exc)
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            return False, f"rcode {dns.rcode.to_text(rcode)}"
        found = {rd.address for rrset in response.answer if rrset.rdtype == self.rdtype
                 for rd in rrset}
        if not found:
            return False, "NOERROR without an answer"
        if self.expect and not found & self.expect:
            got, want = ", ".join(sorted(found)), ", ".join(sorted(self.expect))
            return False, f"answer {got}, expected {want}"
        return True, "ok"


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
            raise _CheckFailed(f"cannot read {self.what}: {detail}") from None
        if not self._text:
            raise _CheckFailed(f"{self.what} is empty")
        return self._text


class _CheckFailed(Exception):
    """A failure whose message is the reason."""


class IntrospectProbe(Probe):
    FORM = {"Content-Type": "application/x-www-form-urlencoded"}

    def __init__(self, cfg: IntrospectCheck) -> None:
        self.cfg = cfg
        host = f"[{cfg.address}]" if ":" in cfg.address else cfg.address
        self.url = f"https://{host}:{cfg.port}{cfg.path}"
        self.secret = _FileText(cfg.client_secret_file, "client_secret_file")
        self.active = _FileText(cfg.active_token_file, "active_token_file")
        self.revoked = _FileText(cfg.revoked_token_file, "revoked_token_file")
        self.client: httpx.Client | None = None
        self.runs = 0

    def _client(self) -> httpx.Client:
        if self.client is None:
            try:
                ctx = ssl.create_default_context(cafile=str(self.cfg.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise _CheckFailed(f"cannot load ca_file: {_short(str(exc))}") from None
            self.client = httpx.Client(
                verify=ctx, http2=False, trust_env=False, follow_redirects=False,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1,
                                    keepalive_expiry=30),
            )
        return self.client

    def attempt(self, started: float) -> tuple[bool, str]:
        self.runs += 1
        self.saturated = None
        try:
            self._check(started + self.cfg.timeout_ms / 1000)
        except _CheckFailed as exc:
            return False, str(exc)
        return True, "ok"

    def _basic(self) -> str:
        pair = (urllib.parse.quote_plus(self.cfg.client_id) + ":"
                + urllib.parse.quote_plus(self.secret.read()))
        return "Basic " + base64.b64encode(pair.encode()).decode("ascii")

    def _post(self, what: str, token: str, auth: str | None,
              deadline: float) -> httpx.Response:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _CheckFailed(f"timeout (before the {what} call)")
        headers = {**self.FORM, "Host": self.cfg.server_name}
        if auth is not None:
            headers["Authorization"] = auth
        try:
            return self._client().post(
                self.url, content=urllib.parse.urlencode({"token": token}), headers=headers,
                timeout=httpx.Timeout(left),
                extensions={"sni_hostname": self.cfg.server_name},
            )
        except httpx.TimeoutException:
            raise _CheckFailed(f"timeout ({what} call)") from None
        except httpx.HTTPError as exc:
            raise _CheckFailed(f"{what} call: {_short(str(exc)) or type(exc).__name__}") from None

    @staticmethod
    def _active(what: str, response: httpx.Response) -> bool:
        if response.status_code != 200:
            raise _CheckFailed(f"{what}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise _CheckFailed(f"{what}: answer is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
            raise _CheckFailed(f"{what}: answer has no boolean 'active'")
        return body["active"]

    def _check(self, deadline: float) -> None:
        auth = self._basic()
        active, revoked = self.active.read(), self.revoked.read()
        answer = self._post("active canary", active, auth, deadline)
        flag = answer.headers.get("x-anycast-saturated")
        self.saturated = None if flag is None else flag == "1"
        if not self._active("active canary", answer):
            raise _CheckFailed("active canary answered inactive")
        if self._active("revoked canary", self._post("revoked canary", revoked, auth,
                                                     deadline)):
            raise _CheckFailed("revoked canary answered active (stale revocation list)")
        if (self.runs - 1) % self.cfg.unauthenticated_every == 0:
            status = self._post("no-credentials", active, None, deadline).status_code
            if status != 401:
                raise _CheckFailed(f"no-credentials call: HTTP {status}, expected 401")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


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
