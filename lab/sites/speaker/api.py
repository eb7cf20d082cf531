"""ExaBGP's API process for a site: the only way the site's routes get announced.

ExaBGP starts this program and reads announce/withdraw lines from its stdout; it
acknowledges each line on our stdin with `done` or `error` (and writes `shutdown` when
it stops). We read and check every acknowledgement: ExaBGP blocks on writing an ack
that nobody reads. A line answered `error`, or not answered within ACK_TIMEOUT_S, is
sent again, up to ATTEMPTS times in all; the answer reports every attempt.

Commands arrive on a unix socket (`--control`), one per line:

    announce            announce the anycast prefixes
    announce gshut      announce them with GRACEFUL_SHUTDOWN (65535:0), for a drain
    withdraw            withdraw them
    state               report the current state
    routes              the anycast routes the router sends us (other sites' routes,
                        with health.last_site 'keep-last'): {"routes": {prefix: {"gshut":
                        bool, "as_path": [...]}}, "session": up|down}
    control             (watchdog mode) make this connection the controller
    keepalive           (watchdog mode, controller only) "still alive"; no answer

Each command except `keepalive` gets one JSON line back:
{"ok": bool, "state": ..., "detail": ...}.

Fail-closed start: ExaBGP keeps routes when its API process dies and respawns it, so
the first thing a (re)started API process does is withdraw everything.

Backup routes (`--backup-route PREFIX NEXTHOP`, the topology's health.last_site
'backup-route'): covering less-specific prefixes announced once at start, in every mode,
and never withdrawn: they are what still leads clients to some site when every site has
withdrawn its anycast routes. No command changes them.

Two modes:

* static (`--announce-at-start`, or nothing): anyone may announce or withdraw; used
  when the site has no health checker.
* watchdog (`--watchdog-ms N`): routes are announced only on command from the one
  connection that sent `control`. The controller must send a line (normally
  `keepalive`) at least every N ms. When its connection closes (the health checker
  exited, crashed or was SIGKILLed: the kernel closes the socket) the routes are
  withdrawn at once; when no line arrives for N ms (the checker is frozen or hung) they
  are withdrawn and the connection is closed. A new controller starts from
  "withdrawn" and must announce explicitly. Anyone may ask `state`; `announce` from
  another connection is refused, and so is `withdraw` while a controller is connected
  (the controller would not know; drain the site or stop the daemon instead).

Withdrawal bound in watchdog mode: the routes leave ExaBGP no later than N ms after the
controller's last line (its last keepalive, sent at most N/4 ms before it froze), plus
the time to write the lines and ExaBGP's withdraw latency (3-4 ms measured); a closed
connection is acted on at once. The only wait in this loop that is not bounded by N is
an ExaBGP acknowledgement (ACK_TIMEOUT_S): a watchdog that expires meanwhile is acted
on right after it.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACK_TIMEOUT_S = 1.0  # ExaBGP answers in milliseconds; one second means it is stuck
ATTEMPTS = 3  # a line answered `error` or not answered is sent at most this often
GRACEFUL_SHUTDOWN = "65535:0"
CLIENT_SEND_TIMEOUT_S = 1.0  # bounds how long an answer to a client can block this loop


@dataclass(frozen=True)
class Route:
    prefix: str
    next_hop: str


def route_lines(action: str, routes: list[Route], gshut: bool = False) -> list[str]:
    """ExaBGP 5 text-API lines for an action on every route."""
    lines = []
    for r in routes:
        if action == "announce":
            line = f"announce route {r.prefix} next-hop {r.next_hop}"
            if gshut:
                line += f" community [{GRACEFUL_SHUTDOWN}]"
        else:
            line = f"withdraw route {r.prefix} next-hop {r.next_hop}"
        lines.append(line)
    return lines


class Received:
    """The routes ExaBGP says it received (text encoder, `receive { parsed; update; }`):
    per prefix, whether it carries GRACEFUL_SHUTDOWN and its AS path. A session that goes
    down takes every route with it."""

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, Any]] = {}
        self.session = "down"
        self.changed_at = time.time()

    def feed(self, line: str) -> bool:
        """One `neighbor ...` line; True when it was one of ours to read."""
        words = line.split()
        if len(words) < 3 or words[0] != "neighbor":
            return False
        event = words[2]
        if event in ("up", "connected"):
            self.session = "up" if event == "up" else self.session
        elif event == "down":
            self.session = "down"
            self.routes.clear()
            self.changed_at = time.time()
        elif event == "receive" and len(words) >= 6 and words[3] == "update":
            what, prefix = words[4], words[5]
            if what == "announced":
                self.routes[prefix] = {"gshut": GRACEFUL_SHUTDOWN in line,
                                       "as_path": _as_path(words)}
                self.changed_at = time.time()
            elif what == "withdrawn":
                self.routes.pop(prefix, None)
                self.changed_at = time.time()
        return True

    def report(self) -> dict[str, Any]:
        return {"ok": True, "routes": self.routes, "session": self.session,
                "since": self.changed_at}


def _as_path(words: list[str]) -> list[int]:
    """The AS numbers after `as-path` in a received-update line (ExaBGP writes a sequence
    in brackets, a set in parentheses), up to the next attribute's name."""
    if "as-path" not in words:
        return []
    out = []
    for word in words[words.index("as-path") + 1:]:
        if word.isdigit():
            out.append(int(word))
        elif word not in ("[", "]", "(", ")"):
            break
    return out


class ExaBGPChannel:
    """Our stdout to ExaBGP, our stdin for its acknowledgements (no thread: the caller's
    loop watches `fileno()` and calls `read_unsolicited` when it is readable). Lines about
    the neighbour (`neighbor ...`: received routes, session up and down) are not acks:
    they go to `received`."""

    def __init__(self, rfd: int | None = None, wfd: int | None = None) -> None:
        self.rfd = sys.stdin.fileno() if rfd is None else rfd
        self.wfd = sys.stdout.fileno() if wfd is None else wfd
        self.closed = False  # ExaBGP closed our stdin or said `shutdown`
        self._buffer = b""
        self._lines: list[str] = []
        self.received = Received()

    def fileno(self) -> int:
        return self.rfd

    def _fill(self) -> None:
        """One read() from stdin into complete lines (the fd is known to be readable)."""
        data = os.read(self.rfd, 4096)
        if not data:
            self.closed = True
            return
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\n")
        for raw in complete:
            line = raw.decode(errors="replace").strip()
            if line == "shutdown":
                self.closed = True
            elif line and not self.received.feed(line):
                self._lines.append(line)

    def read_unsolicited(self) -> None:
        """Stdin became readable outside `send`: late acks or EOF. Log and drop them."""
        self._fill()
        for line in self._lines:
            log(f"unexpected line from ExaBGP (late ack?): {line!r}")
        self._lines.clear()

    def _write(self, lines: list[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode()
        while data:
            data = data[os.write(self.wfd, data):]

    def send(self, lines: list[str], timeout: float = ACK_TIMEOUT_S) -> list[str]:
        """Write all lines at once (ExaBGP acks them in order); return one answer per
        line: `done`, `error`, `timeout` or `shutdown`."""
        if self._lines:
            log(f"dropping {len(self._lines)} stale ack(s) before sending")
            self._lines.clear()
        if self.closed:
            return ["shutdown"] * len(lines)
        try:
            self._write(lines)
        except OSError as exc:  # ExaBGP went away (EPIPE)
            log(f"cannot write to ExaBGP: {exc}")
            self.closed = True
            return ["shutdown"] * len(lines)
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.rfd, selectors.EVENT_READ)
            while len(self._lines) < len(lines) and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                self._fill()
        answers = self._lines[: len(lines)]
        del self._lines[: len(lines)]
        missing = "shutdown" if self.closed else "timeout"
        return answers + [missing] * (len(lines) - len(answers))


class Speaker:
    """What is announced, changed only through ExaBGP and only with every line acked."""

    def __init__(self, routes: list[Route], channel: ExaBGPChannel) -> None:
        self.routes = routes
        self.channel = channel
        self.state = "withdrawn"
        self.changed_at = time.time()

    def apply(self, action: str, gshut: bool = False, why: str = "") -> dict[str, Any]:
        """Announce or withdraw every route; a line that fails is resent (bounded)."""
        pending = route_lines(action, self.routes, gshut)
        attempts: list[list[str]] = []
        for _ in range(ATTEMPTS):
            answers = self.channel.send(pending)
            attempts.append(answers)
            pending = [line for line, a in zip(pending, answers, strict=True) if a != "done"]
            if not pending or self.channel.closed:
                break
        ok = not pending
        if ok:
            new = "withdrawn" if action == "withdraw" else (
                "announced-gshut" if gshut else "announced")
        else:
            new = "unknown"  # some lines may have taken effect: we cannot tell which
        if new != self.state:
            self.state, self.changed_at = new, time.time()
        name = f"{action}{' gshut' if gshut else ''}"
        tried = " | ".join(" ".join(a) for a in attempts)
        log(f"{name}{f' ({why})' if why else ''}: {tried}"
            + ("" if ok else f" FAILED after {len(attempts)} attempt(s)"))
        return {"ok": ok, "state": self.state, "detail": attempts[-1],
                "attempts": len(attempts)}

    def handle(self, command: str) -> dict[str, Any]:
        words = command.split()
        if words == ["announce"]:
            return self.apply("announce")
        if words == ["announce", "gshut"]:
            return self.apply("announce", gshut=True)
        if words == ["withdraw"]:
            return self.apply("withdraw")
        if words == ["state"]:
            return {"ok": True, "state": self.state, "since": self.changed_at}
        if words == ["routes"]:
            return self.channel.received.report()
        return {"ok": False, "state": self.state, "detail": f"unknown command {command!r}"}


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} speaker-api: {message}\n")
    sys.stderr.flush()


@dataclass(eq=False)
class Conn:
    sock: socket.socket
    buffer: bytes = b""
    last_line: float = field(default_factory=time.monotonic)


class Server:
    """The control socket's select loop; in watchdog mode also the controller's timer."""

    def __init__(self, control: Path, speaker: Speaker, watchdog_ms: int | None) -> None:
        self.speaker = speaker
        self.watchdog_s = watchdog_ms / 1000 if watchdog_ms else None
        self.controller: Conn | None = None
        self.conns: dict[socket.socket, Conn] = {}
        control.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(control))
        self.listener.listen(8)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.sel.register(speaker.channel, selectors.EVENT_READ)

    def run(self) -> None:
        while not self.speaker.channel.closed:
            timeout = None
            if self.controller is not None and self.watchdog_s is not None:
                timeout = max(0.0, self.controller.last_line + self.watchdog_s
                              - time.monotonic())
            for key, _ in self.sel.select(timeout):
                if key.fileobj is self.listener:
                    sock, _ = self.listener.accept()
                    sock.settimeout(CLIENT_SEND_TIMEOUT_S)  # a client that never reads
                    self.conns[sock] = Conn(sock)
                    self.sel.register(sock, selectors.EVENT_READ)
                elif key.fileobj is self.speaker.channel:
                    self.speaker.channel.read_unsolicited()
                else:
                    assert isinstance(key.fileobj, socket.socket)
                    self.readable(self.conns[key.fileobj])
            c = self.controller
            if (c is not None and self.watchdog_s is not None
                    and time.monotonic() - c.last_line >= self.watchdog_s):
                self.lose_controller(f"watchdog: no line from the controller for "
                                     f"{self.watchdog_s * 1000:.0f} ms")
        log("ExaBGP closed our stdin: exiting")

    def readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.close(conn, "controller connection closed")
            return
        conn.buffer += data
        conn.last_line = time.monotonic() if b"\n" in data else conn.last_line
        while b"\n" in conn.buffer and conn.sock in self.conns:
            raw, conn.buffer = conn.buffer.split(b"\n", 1)
            reply = self.handle(conn, raw.decode(errors="replace").strip())
            if reply is not None:
                try:
                    conn.sock.sendall((json.dumps(reply) + "\n").encode())
                except OSError:
                    self.close(conn, "controller connection broke")

    def handle(self, conn: Conn, line: str) -> dict[str, Any] | None:
        words = line.split()
        if words == ["routes"]:
            return self.speaker.handle(line)
        if words == ["state"]:
            return {**self.speaker.handle(line), "controller": self.controller is not None,
                    "watchdog_ms": round(self.watchdog_s * 1000) if self.watchdog_s else None}
        if self.watchdog_s is None:
            if words in (["control"], ["keepalive"]):
                return {"ok": False, "state": self.speaker.state,
                        "detail": "not in watchdog mode (start with --watchdog-ms)"}
            return self.speaker.handle(line)
        if words == ["keepalive"]:
            if conn is not self.controller:
                log("keepalive from a connection that is not the controller: closing it")
                self.close(conn, "")
            return None
        if words == ["control"]:
            if self.controller not in (None, conn):
                return {"ok": False, "state": self.speaker.state,
                        "detail": "another controller is connected"}
            self.controller = conn
            log(f"controller connected; watchdog {self.watchdog_s * 1000:.0f} ms")
            return {"ok": True, "state": self.speaker.state,
                    "watchdog_ms": round(self.watchdog_s * 1000)}
        if words[:1] == ["announce"] and conn is not self.controller:
            return {"ok": False, "state": self.speaker.state,
                    "detail": "watchdog mode: only the controller may announce"}
        if words == ["withdraw"] and self.controller not in (None, conn):
            # Else the controller would believe the route is still up.
            return {"ok": False, "state": self.speaker.state,
                    "detail": "refused: this site's health daemon owns its routes and "
                              "would not know of a withdraw by hand; drain the site "
                              "(`anycast-lab drain SITE`) or fail a check "
                              "(`anycast-lab fail SITE dns`) instead"}
        return self.speaker.handle(line)

    def close(self, conn: Conn, why: str) -> None:
        if conn is self.controller:
            self.lose_controller(why)
            return
        self.sel.unregister(conn.sock)
        del self.conns[conn.sock]
        conn.sock.close()

    def lose_controller(self, why: str) -> None:
        """Fail closed: withdraw first, then forget the controller."""
        conn, self.controller = self.controller, None
        assert conn is not None
        self.speaker.apply("withdraw", why=why)
        self.close(conn, why)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, type=Path, help="unix socket path")
    # Two words, not "P,NH": ExaBGP's `run` tokenizer splits on commas.
    parser.add_argument("--route", action="append", default=[], nargs=2,
                        metavar=("PREFIX", "NEXTHOP"))
    parser.add_argument("--backup-route", action="append", default=[], nargs=2,
                        metavar=("PREFIX", "NEXTHOP"),
                        help="announced at start whatever happens, never withdrawn")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--announce-at-start", action="store_true",
                      help="announce once the start-up withdrawal is done (static mode)")
    mode.add_argument("--watchdog-ms", type=int, metavar="N",
                      help="announce only for a controller that sends a line every N ms")
    args = parser.parse_args()
    if args.watchdog_ms is not None and not 20 <= args.watchdog_ms <= 60_000:
        parser.error("--watchdog-ms must be between 20 and 60000")
    routes = [Route(prefix, nexthop) for prefix, nexthop in args.route]
    speaker = Speaker(routes, ExaBGPChannel())
    mode_name = f"watchdog {args.watchdog_ms} ms" if args.watchdog_ms else "static"
    log(f"started (pid {os.getpid()}, {mode_name}), withdrawing first")
    speaker.apply("withdraw", why="start")
    if args.backup_route:
        backup = Speaker([Route(p, nh) for p, nh in args.backup_route], speaker.channel)
        backup.apply("announce", why="backup routes, announced always")
    if args.announce_at_start:
        speaker.apply("announce")
    Server(args.control, speaker, args.watchdog_ms).run()


if __name__ == "__main__":
    main()
