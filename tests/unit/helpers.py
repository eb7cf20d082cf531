"""What several unit test modules share that is not a fixture: the command line run in
this process and its JSON error checked, a free port, pollers with a deadline, a DNS server
the test controls, a fake ExaBGP driving the real speaker shim, the introspection service
as a process, and the test PKI's names. The fixtures built on these (`pki`, `services`,
`shim`, `signing_key`) are in conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import pytest

from lab.shared.clients import generate_secret, write_registry
from lab.shared.pki import create_ca, create_signing_key, issue_server_cert, public_pem
from lab.shared.revocation import revoke
from lab.shared.tokens import issue_token
from lab.sites.health.config import IntrospectCheck

ROOT = Path(__file__).resolve().parents[2]
ANYCAST = "203.0.113.53"


# --- the command line in this process ----------------------------------------------------

def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """main() as the console script runs it, in this process: (exit code, stdout, stderr)."""
    from lab.cli import main as cli

    monkeypatch.setattr(sys, "argv", ["anycast-lab", *argv])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), out, err


def json_error(code: int, out: str, err: str) -> dict:
    """The error object of a `--json` run that failed, checked against the contract: exit
    1, 2 or 3, `{"ok": false, "error": {message, exit_code, details}}` on stdout with the
    same exit code, and no sentence printed on stderr as well."""
    assert code in (1, 2, 3), (code, out, err)
    data = json.loads(out)
    assert data["ok"] is False, data
    assert set(data["error"]) == {"message", "exit_code", "details"}, data
    assert data["error"]["exit_code"] == code, data
    assert isinstance(data["error"]["message"], str) and data["error"]["message"], data
    assert isinstance(data["error"]["details"], list), data
    assert "error:" not in err, err  # the sentence is not printed as well
    return data["error"]


# --- ports and waiting ---------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, step: float = 0.005) -> bool:
    """Poll `condition` every `step` s until it is truthy or `timeout` s have passed; asked
    once more at the deadline. True if it held."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def wait_for_line(proc: subprocess.Popen[str], deadline_s: float) -> str:
    """The next line `proc` writes on stdout, or "" if none came within `deadline_s` (or it
    exited first)."""
    assert proc.stdout is not None
    end = time.monotonic() + deadline_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (left := end - time.monotonic()) > 0:
            if sel.select(timeout=left):
                return proc.stdout.readline()
            if proc.poll() is not None:
                break
    return ""


def stop_process(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM,
                 timeout: float = 10) -> None:
    """Send `sig`, wait up to `timeout` s (then SIGKILL), close its pipes."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


# --- a DNS server the test controls --------------------------------------------------------

class DnsServer:
    """A UDP DNS server on 127.0.0.1 whose behaviour the test switches with `mode`:
    ok, servfail, wrong (another address), empty (NOERROR, no answer), silent."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.mode = "ok"
        self.queries = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            if not data:  # shut down by close()
                return
            self.queries += 1
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            if self.mode == "silent":
                continue
            if self.mode == "servfail":
                response.set_rcode(dns.rcode.SERVFAIL)
            elif self.mode in ("ok", "wrong"):
                address = ANYCAST if self.mode == "ok" else "198.51.100.7"
                response.answer.append(
                    dns.rrset.from_text(query.question[0].name, 0, "IN", "A", address))
            try:
                self.sock.sendto(response.to_wire(), peer)
            except OSError:  # closed by the test meanwhile
                return

    def close(self) -> None:
        """Like a killed server: the port is free at once and answers "unreachable".
        (A plain close() would leave it bound until the blocked recvfrom() returns.)"""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=2)


# --- the speaker shim, with the test playing ExaBGP ----------------------------------------

V4 = ("203.0.113.53/32", "100.64.0.1")
V6 = ("2001:db8:53::53/128", "fd00:64::1")
WITHDRAW_V4 = f"withdraw route {V4[0]} next-hop {V4[1]}"
ANNOUNCE_V4 = f"announce route {V4[0]} next-hop {V4[1]}"
ANNOUNCE_V6 = f"announce route {V6[0]} next-hop {V6[1]}"


class FakeExaBGP:
    """Starts a shim and plays ExaBGP: records every line it writes (with the time it
    arrived) and acknowledges each one with the next scripted answer, else `done`."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 -- closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lab.sites.speaker.api", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.lines: list[tuple[float, str]] = []
        self.answers: deque[str] = deque()
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            with self.cond:
                self.lines.append((time.monotonic(), line))
                answer = self.answers.popleft() if self.answers else "done"
                self.cond.notify_all()
            try:
                self.proc.stdin.write(answer.encode() + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                return

    def wait_for(self, what: Callable[[list[str]], bool], timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: what([line for _, line in self.lines]), timeout)

    def count(self, prefix: str) -> int:
        with self.cond:
            return sum(line.startswith(prefix) for _, line in self.lines)

    def first_after(self, since: float, prefix: str) -> float | None:
        with self.cond:
            return next((t for t, line in self.lines if t >= since and line.startswith(prefix)),
                        None)

    def wait_count(self, prefix: str, n: int, timeout: float = 5.0) -> bool:
        return self.wait_for(lambda lines: sum(x.startswith(prefix) for x in lines) >= n,
                             timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> int:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()  # ExaBGP went away: the shim exits
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc


def start_shim(tmp_path: Path, *extra: str) -> tuple[FakeExaBGP, Path]:
    """A shim for both anycast routes with its control socket in `tmp_path`, once it has
    withdrawn both at start and its socket exists."""
    sock = tmp_path / "speaker.sock"
    fake = FakeExaBGP(["--control", str(sock), "--route", *V4, "--route", *V6, *extra],
                      tmp_path / "shim.log")
    assert fake.wait_count("withdraw route", 2), "the shim did not withdraw at start"
    assert wait_until(lambda: _accepts(sock), 5), fake.log()
    return fake, sock


def _accepts(path: Path) -> bool:
    """Does a unix socket at `path` accept connections (bound is not yet listening)?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


# --- the test PKI and the introspection service as a process -------------------------------

ISSUER = "https://issuer.anycast.lab"
AUDIENCE = "https://api.anycast.lab"
SERVICE = "introspect.anycast.lab"
CLIENT_ID = "healthd-site-a"
CLIENT_SECRET = generate_secret()


def make_pki(d: Path) -> dict[str, Any]:
    """A CA, the service's certificate for SERVICE and 127.0.0.1, a signing key, a client
    registry with CLIENT_ID, an active and a revoked canary token, the revocation list
    (revoked.json) and a stale one (stale.json), and another CA's certificate."""
    ca_key, ca_cert = create_ca("anycast-lab test CA")
    key, cert = issue_server_cert(ca_key, ca_cert, [SERVICE], ["127.0.0.1"])
    signing = create_signing_key()
    (d / "ca.pem").write_bytes(ca_cert)
    (d / "server.key").write_bytes(key)
    (d / "server.crt").write_bytes(cert)
    (d / "signing.pub").write_bytes(public_pem(signing))
    write_registry(d / "clients.json", {CLIENT_ID: CLIENT_SECRET}, n=2**10)
    (d / "secret").write_text(CLIENT_SECRET + "\n")
    active, _ = issue_token(signing, issuer=ISSUER, audience=AUDIENCE, client_id=CLIENT_ID,
                            sub="canary", scope="health", ttl_s=3600)
    revoked, claims = issue_token(signing, issuer=ISSUER, audience=AUDIENCE,
                                  client_id=CLIENT_ID, sub="canary-revoked", scope="health",
                                  ttl_s=3600)
    (d / "active.jwt").write_text(active)
    (d / "revoked.jwt").write_text(revoked)
    revoke(d / "revoked.json", claims["jti"])
    (d / "stale.json").write_text(json.dumps({"version": 1, "revoked": {}}))
    _other_key, other_cert = create_ca("some other CA")
    (d / "other-ca.pem").write_bytes(other_cert)
    return {"dir": d, "active": active, "revoked": revoked}


def start_service(config_path: Path, deadline_s: float = 60) -> subprocess.Popen[str]:
    """`python -m lab.sites.introspect --config PATH`, once it has printed `ready` (the
    test fails with its stderr if it did not within `deadline_s`: generous, because a
    machine running other labs can take many seconds to start a Python process)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.sites.introspect", "--config", str(config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = wait_for_line(proc, deadline_s)
    if line != "ready\n":
        exited = proc.poll()
        proc.kill()
        _, err = proc.communicate(timeout=10)
        why = (f"it exited with {exited}" if exited is not None
               else f"no line within {deadline_s:g} s" if not line else f"it said {line!r}")
        pytest.fail(f"introspection service did not get ready ({why}): {err}")
    return proc


def start_introspect(pki: dict[str, Any], revocation: str, tmp: Path,
                     **extra: Any) -> tuple[subprocess.Popen[str], int]:
    """The service with `make_pki`'s material and the revocation list `revocation` (a file
    name in the PKI directory), on a free port of 127.0.0.1."""
    d, port = pki["dir"], free_port()
    config = {
        "site": "site-a", "issuer": ISSUER, "audience": AUDIENCE,
        "public_key_file": str(d / "signing.pub"), "clients_path": str(d / "clients.json"),
        "revocation_path": str(d / revocation), "listen": ["127.0.0.1"], "port": port,
        "tls_cert": str(d / "server.crt"), "tls_key": str(d / "server.key"),
        "log_file": str(tmp / f"introspect-{revocation}.log"), **extra,
    }
    path = tmp / f"introspect-{revocation}.json"
    path.write_text(json.dumps(config))
    return start_service(path), port


def introspect_check(pki: dict[str, Any], port: int, **kw: Any) -> IntrospectCheck:
    """The health daemon's introspection check against the service on `port`."""
    d = pki["dir"]
    fields: dict[str, Any] = {
        "type": "introspect", "name": "introspect", "address": "127.0.0.1", "port": port,
        "server_name": SERVICE, "ca_file": d / "ca.pem", "client_id": CLIENT_ID,
        "client_secret_file": d / "secret", "active_token_file": d / "active.jwt",
        "revoked_token_file": d / "revoked.jwt", "timeout_ms": 2000,
    }
    fields.update(kw)
    return IntrospectCheck(**fields)


def assert_no_secrets(text: str, pki: dict[str, Any]) -> None:
    """Neither the client secret nor either canary token appears in `text`."""
    for secret in (CLIENT_SECRET, pki["active"], pki["revoked"]):
        assert secret not in text
