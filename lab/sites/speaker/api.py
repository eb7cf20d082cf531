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
    control beat        (watchdog mode) the same, with a beat cell: sent with the line
                        (SCM_RIGHTS), a sealed memfd of 8 bytes in which the controller
                        keeps its latest CLOCK_MONOTONIC time (ns); a fresh beat counts
                        as a line, so its loop feeds the watchdog without a syscall and
                        this process wakes only when the watchdog could expire
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
  connection that sent `control`. The controller must show a sign of life at least
  every N ms: a line (normally `keepalive`), or, after `control beat`, a fresh time in
  its beat cell. When its connection closes (the health checker exited, crashed or was
  SIGKILLed: the kernel closes the socket) the routes are withdrawn at once; when no
  sign of life comes for N ms (the checker is frozen or hung) they are withdrawn and
  the connection is closed. A new controller starts from "withdrawn" and must announce
  explicitly. Anyone may ask `state`; `announce` from another connection is refused,
  and so is `withdraw` while a controller is connected (the controller would not know;
  drain the site or stop the daemon instead).

Withdrawal bound in watchdog mode: the routes leave ExaBGP no later than N ms after the
controller's last sign of life (its last line or beat, at most N/3 ms before it froze),
plus the time to write the lines and ExaBGP's withdraw latency (3-4 ms measured); a
closed connection is acted on at once. The only wait in this loop that is not bounded
by N is an ExaBGP acknowledgement (ACK_TIMEOUT_S): a watchdog that expires meanwhile is
acted on right after it. With a beat cell this loop sleeps until the watchdog could
expire (N ms after the latest beat it read), reads the cell, and sleeps again: a
wake-up every 2N/3 to N ms instead of one per keepalive.

Small on purpose: every site runs one, as an interpreter of its own that ExaBGP starts
(`python -I -S FILE`: no site-packages, no lab package). It imports only a few C
modules of the standard library (`_socket`, `select`, `_json`, `mmap`, `fcntl`; no
argparse, json, dataclasses or selectors: those would triple its private memory), so
it parses its own arguments and writes its own JSON.
"""


from __future__ import annotations

import _socket
import fcntl
import mmap
import os
import select
import sys
import time
from _json import encode_basestring_ascii

ACK_TIMEOUT_S = 1.0  # ExaBGP answers in milliseconds; one second means it is stuck
ATTEMPTS = 3  # a line answered `error` or not answered is sent at most this often
GRACEFUL_SHUTDOWN = "65535:0"
CLIENT_SEND_TIMEOUT_S = 1.0  # bounds how long an answer to a client can block this loop
READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
BEAT_BYTES = 8  # one unsigned 64-bit CLOCK_MONOTONIC time in ns, native byte order
FD_SPACE = _socket.CMSG_SPACE(4)  # room for the one descriptor `control beat` carries


class Route:
    __slots__ = ("next_hop", "prefix")

    def __init__(self, prefix: str, next_hop: str) -> None:
        self.prefix, self.next_hop = prefix, next_hop


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


def to_json(value: object) -> str:
    """The JSON text of an answer (dicts, lists, strings, numbers, booleans, None)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{encode_basestring_ascii(str(k))}: {to_json(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class Received:
    """The routes ExaBGP says it received (text encoder, `receive { parsed; update; }`):
    per prefix, whether it carries GRACEFUL_SHUTDOWN and its AS path. A session that goes
    down takes every route with it."""

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, object]] = {}
        # Unknown until ExaBGP says: a respawned API process is told neither of a session
        # that is already up nor of the routes received before it started, so an empty
        # list then says nothing (the health daemon keeps no last site on it).
        self.session = "unknown"
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
                # A whole word: "65535:0" inside a large community (65535:0:1) is not it.
                self.routes[prefix] = {"gshut": GRACEFUL_SHUTDOWN in words,
                                       "as_path": _as_path(words)}
                self.changed_at = time.time()
            elif what == "withdrawn":
                self.routes.pop(prefix, None)
                self.changed_at = time.time()
        return True

    def report(self) -> dict[str, object]:
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
        self._poll = select.poll()
        self._poll.register(self.rfd, READABLE)

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
            if line.split()[:1] == ["shutdown"]:  # ExaBGP writes "shutdown PID PPID"
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
        while len(self._lines) < len(lines) and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0 or not self._poll.poll(max(1, int(left * 1000 + 0.999))):
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

    def apply(self, action: str, gshut: bool = False, why: str = "") -> dict[str, object]:
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

    def handle(self, command: str) -> dict[str, object]:
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


class Beat:
    """The controller's beat cell, mapped read-only: `seconds()` is the latest time it
    wrote (monotonic seconds; never later than now)."""

    __slots__ = ("cell", "map")

    def __init__(self, fd: int) -> None:
        """Map the descriptor `control beat` carried; ValueError says why it will not do:
        it must be a memfd sealed against shrinking (a cell that shrank under the mapping
        would kill this process with SIGBUS on the next read) of at least BEAT_BYTES."""
        st = os.fstat(fd)
        if st.st_mode & 0o170000 != 0o100000 or st.st_size < BEAT_BYTES:
            raise ValueError(f"the beat cell must be a file of at least {BEAT_BYTES} bytes")
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            seals = 0
        if not seals & fcntl.F_SEAL_SHRINK:
            raise ValueError("the beat cell must be a memfd sealed against shrinking")
        self.map = mmap.mmap(fd, BEAT_BYTES, mmap.MAP_SHARED, mmap.PROT_READ)
        self.cell = memoryview(self.map).cast("Q")

    def seconds(self) -> float:
        first = self.cell[0]
        while (again := self.cell[0]) != first:  # written meanwhile: read until it holds
            first = again
        return min(first / 1e9, time.monotonic())

    def close(self) -> None:
        self.cell.release()
        self.map.close()


class Conn:
    """One client of the control socket."""

    __slots__ = ("beat", "buffer", "last_line", "passed_fd", "sock")

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.last_line = time.monotonic()
        self.passed_fd = -1  # a descriptor that came with its data, for `control beat`
        self.beat: Beat | None = None

    def alive_at(self) -> float:
        """The last sign of life: its last line or its latest beat."""
        return self.last_line if self.beat is None else max(self.last_line,
                                                            self.beat.seconds())

    def take_fds(self, ancdata: list[tuple[int, int, bytes]]) -> None:
        """Keep the first descriptor passed (SCM_RIGHTS), close any other."""
        for level, kind, data in ancdata:
            if level != _socket.SOL_SOCKET or kind != _socket.SCM_RIGHTS:
                continue
            for i in range(0, len(data) - len(data) % 4, 4):
                fd = int.from_bytes(data[i:i + 4], sys.byteorder, signed=True)
                if self.passed_fd < 0:
                    self.passed_fd = fd
                else:
                    os.close(fd)

    def release(self) -> None:
        if self.passed_fd >= 0:
            os.close(self.passed_fd)
            self.passed_fd = -1
        if self.beat is not None:
            self.beat.close()
            self.beat = None


class Server:
    """The control socket's poll loop; in watchdog mode also the controller's timer."""

    def __init__(self, control: str, speaker: Speaker, watchdog_ms: int | None) -> None:
        self.speaker = speaker
        self.watchdog_s = watchdog_ms / 1000 if watchdog_ms else None
        self.controller: Conn | None = None
        self.conns: dict[int, Conn] = {}  # by fd
        try:  # noqa: SIM105 -- contextlib is an import this process does without
            os.unlink(control)
        except FileNotFoundError:
            pass
        self.listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        # Only root may connect (connect needs write permission on the socket), whatever
        # umask this process was started with; set before bind, so never looser.
        umask = os.umask(0o177)
        try:
            self.listener.bind(control)
        finally:
            os.umask(umask)
        self.listener.listen(8)
        self.poll = select.poll()
        self.poll.register(self.listener.fileno(), READABLE)
        self.poll.register(speaker.channel.fileno(), READABLE)

    def run(self) -> None:
        listener, channel = self.listener.fileno(), self.speaker.channel.fileno()
        while not self.speaker.channel.closed:
            timeout = None
            if self.controller is not None and self.watchdog_s is not None:
                left = self.controller.alive_at() + self.watchdog_s - time.monotonic()
                timeout = max(0, int(left * 1000 + 0.999))  # ms, rounded up
            for fd, _ in self.poll.poll(timeout):
                if fd == listener:
                    self.accept()
                elif fd == channel:
                    self.speaker.channel.read_unsolicited()
                elif fd in self.conns:
                    self.readable(self.conns[fd])
            c = self.controller
            if (c is not None and self.watchdog_s is not None
                    and time.monotonic() - c.alive_at() >= self.watchdog_s):
                self.lose_controller(f"watchdog: no line from the controller for "
                                     f"{self.watchdog_s * 1000:.0f} ms"
                                     + (" (nor a beat)" if c.beat is not None else ""))
        log("ExaBGP closed our stdin: exiting")

    def accept(self) -> None:
        try:
            fd, _ = self.listener._accept()
        except OSError:
            return
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
        sock.settimeout(CLIENT_SEND_TIMEOUT_S)  # a client that never reads
        self.conns[fd] = Conn(sock)
        self.poll.register(fd, READABLE)

    def readable(self, conn: Conn) -> None:
        try:
            data, ancdata, _, _ = conn.sock.recvmsg(4096, FD_SPACE)
        except OSError:
            data, ancdata = b"", []
        conn.take_fds(ancdata)  # before anything else: a descriptor is never leaked
        if not data:
            self.close(conn, "controller connection closed")
            return
        conn.buffer += data
        conn.last_line = time.monotonic() if b"\n" in data else conn.last_line
        fd = conn.sock.fileno()
        while b"\n" in conn.buffer and self.conns.get(fd) is conn:
            raw, conn.buffer = conn.buffer.split(b"\n", 1)
            reply = self.handle(conn, raw.decode(errors="replace").strip())
            if reply is not None:
                try:
                    conn.sock.sendall((to_json(reply) + "\n").encode())
                except OSError:
                    self.close(conn, "controller connection broke")

    def handle(self, conn: Conn, line: str) -> dict[str, object] | None:
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
        if words in (["control"], ["control", "beat"]):
            if self.controller not in (None, conn):
                return {"ok": False, "state": self.speaker.state,
                        "detail": "another controller is connected"}
            beat = words == ["control", "beat"]
            if beat:
                problem = self.take_beat(conn)
                if problem:
                    return {"ok": False, "state": self.speaker.state,
                            "detail": f"control beat: {problem}"}
            self.controller = conn
            log(f"controller connected; watchdog {self.watchdog_s * 1000:.0f} ms"
                + (", fed by its beat cell" if beat else ""))
            return {"ok": True, "state": self.speaker.state,
                    "watchdog_ms": round(self.watchdog_s * 1000),
                    **({"beat": True} if beat else {})}
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

    @staticmethod
    def take_beat(conn: Conn) -> str:
        """Map the descriptor that came with `control beat`; what is wrong, else ""."""
        fd, conn.passed_fd = conn.passed_fd, -1
        if fd < 0:
            return "no descriptor came with the line (send it with SCM_RIGHTS)"
        try:
            beat = Beat(fd)
        except (OSError, ValueError) as exc:
            return str(exc)
        finally:
            os.close(fd)
        if conn.beat is not None:
            conn.beat.close()
        conn.beat = beat
        return ""

    def close(self, conn: Conn, why: str) -> None:
        if conn is self.controller:
            self.lose_controller(why)
            return
        fd = conn.sock.fileno()
        if self.conns.get(fd) is conn:
            self.poll.unregister(fd)
            del self.conns[fd]
        conn.release()
        conn.sock.close()

    def lose_controller(self, why: str) -> None:
        """Fail closed: withdraw first, then forget the controller."""
        conn, self.controller = self.controller, None
        assert conn is not None
        self.speaker.apply("withdraw", why=why)
        self.close(conn, why)


class Args:
    """The command line (see USAGE)."""

    def __init__(self) -> None:
        self.control = ""
        self.routes: list[Route] = []
        self.backup: list[Route] = []
        self.announce_at_start = False
        self.watchdog_ms: int | None = None


USAGE = ("usage: api.py --control PATH [--route PREFIX NEXTHOP]... "
         "[--backup-route PREFIX NEXTHOP]... [--announce-at-start | --watchdog-ms N]")


def usage_error(message: str) -> None:
    sys.stderr.write(f"{USAGE}\nspeaker-api: error: {message}\n")
    raise SystemExit(2)


def parse_args(argv: list[str]) -> Args:
    """`--route` and `--backup-route` take two words, not "P,NH": ExaBGP's `run` tokenizer
    splits on commas. `--backup-route`s are announced at start whatever happens and never
    withdrawn."""
    args, i = Args(), 0
    while i < len(argv):
        opt = argv[i]
        if opt in ("-h", "--help"):
            sys.stdout.write(USAGE + "\n")
            raise SystemExit(0)
        if opt in ("--route", "--backup-route"):
            if len(argv) < i + 3:
                usage_error(f"{opt} takes PREFIX NEXTHOP")
            (args.routes if opt == "--route" else args.backup).append(
                Route(argv[i + 1], argv[i + 2]))
            i += 3
        elif opt == "--control":
            if i + 1 >= len(argv):
                usage_error("--control takes a path")
            args.control, i = argv[i + 1], i + 2
        elif opt == "--announce-at-start":
            args.announce_at_start, i = True, i + 1
        elif opt == "--watchdog-ms":
            if i + 1 >= len(argv) or not argv[i + 1].lstrip("-").isdigit():
                usage_error("--watchdog-ms takes a whole number of milliseconds")
            args.watchdog_ms, i = int(argv[i + 1]), i + 2
        else:
            usage_error(f"unrecognised argument {opt!r}")
    if not args.control:
        usage_error("--control is required")
    if args.announce_at_start and args.watchdog_ms is not None:
        usage_error("--announce-at-start and --watchdog-ms exclude each other")
    if args.watchdog_ms is not None and not 20 <= args.watchdog_ms <= 60_000:
        usage_error("--watchdog-ms must be between 20 and 60000")
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    speaker = Speaker(args.routes, ExaBGPChannel())
    mode_name = f"watchdog {args.watchdog_ms} ms" if args.watchdog_ms else "static"
    log(f"started (pid {os.getpid()}, {mode_name}), withdrawing first")
    speaker.apply("withdraw", why="start")
    if args.backup:
        backup = Speaker(args.backup, speaker.channel)
        backup.apply("announce", why="backup routes, announced always")
    if args.announce_at_start:
        speaker.apply("announce")
    Server(args.control, speaker, args.watchdog_ms).run()


if __name__ == "__main__":
    main()
