"""BIRD's control socket: one client that speaks BIRD's CLI protocol on it directly (no
`birdc` process per question), and the parsers of BIRD's answers.

The protocol (BIRD 2): on connect BIRD greets with `0001 BIRD x.y.z ready.`; each command
is one line; each line of a reply starts with a four-digit code and a `-` (more lines
follow) or a space (the reply's last line); a line starting with a space continues the
line before it (same code); a line starting with `+` is a spontaneous printout, not part
of any reply. Codes 0xxx say a command completed (0000 OK), 1xxx and 2xxx are table rows
and headings, 8xxx run-time errors (8001 "Network not found"), 9xxx parse errors. Every
connection is restricted first (`restrict`, like `birdc -r`): read-only commands only.

Two outcomes are kept apart: BIRD did not answer (the socket is missing or refuses, BIRD
closed it, or said nothing within the timeout: `BirdUnavailable`), and BIRD answered, maybe
with an error such as "Network not found" (a `Reply` with its code). `Reply.text` is what
`birdc` prints for the same answer, so the parsers below read either.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.model import names

TIMEOUT_S = 5.0  # BIRD answers the lab's questions in well under a millisecond
MAX_REPLY_BYTES = 8 * 1024 * 1024  # far beyond any answer about a lab's few prefixes
RESTRICTED = 16   # 0016 Access restricted
NOT_FOUND = 8001  # 8001 Network not found


class BirdUnavailable(Exception):
    """No usable answer from BIRD on its control socket; `reason` says what happened."""

    def __init__(self, ctl: Path, reason: str) -> None:
        super().__init__(f"BIRD not answering on {ctl}: {reason}")
        self.ctl = ctl
        self.reason = reason


@dataclass(frozen=True)
class Reply:
    """BIRD's answer to one command: (code, text) per line, continuation lines with the
    code of the line they continue; `code` is the code of the last line."""

    code: int
    lines: tuple[tuple[int, str], ...]

    @property
    def ok(self) -> bool:
        """False for BIRD's run-time and parse errors (8xxx, 9xxx)."""
        return self.code < 8000

    @property
    def not_found(self) -> bool:
        """BIRD has no route for the network asked about."""
        return self.code == NOT_FOUND

    @property
    def text(self) -> str:
        """The answer as birdc prints it: every line's text but the bare 0000 OK."""
        return "".join(f"{text}\n" for code, text in self.lines if code != 0)

    @property
    def message(self) -> str:
        """The last line's text (an error's own words, e.g. "Network not found")."""
        return self.lines[-1][1] if self.lines else ""


def _line(raw: str, previous: int | None) -> tuple[int, str, bool] | None:
    """One line of BIRD's framing -> (code, text, last line of the reply?); None for a
    spontaneous printout (`+...`)."""
    if raw.startswith("+"):
        return None
    if raw.startswith(" "):
        return (previous if previous is not None else 0), raw[1:], False
    if len(raw) >= 5 and raw[:4].isdigit() and raw[4] in " -":
        return int(raw[:4]), raw[5:], raw[4] == " "
    # Not BIRD's framing (birdc prints such a line and reads on): keep it, read on.
    return (previous if previous is not None else 0), raw, False


class BirdClient:
    """One persistent connection to one BIRD's control socket, opened on first use and
    restricted. Each `ask` is bounded by `timeout_s` as a whole (connecting, BIRD's greeting,
    the answer); after a timeout or a broken answer the connection is dropped, and the next
    `ask` opens a new one. When BIRD has closed an idle connection (it restarted), `ask`
    reconnects once. One client per thread."""

    def __init__(self, ctl: Path, timeout_s: float = TIMEOUT_S) -> None:
        self.ctl = ctl
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buf = b""

    def __enter__(self) -> BirdClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._buf = None, b""

    def ask(self, command: str) -> Reply:
        """Send one command, return BIRD's whole reply; BirdUnavailable if there is none."""
        if "\n" in command or "\r" in command:
            raise ValueError(f"a BIRD command is one line: {command!r}")
        deadline = time.monotonic() + self.timeout_s
        reused = self._sock is not None
        try:
            return self._exchange(command, deadline)
        except _Closed as exc:
            self.close()
            if not reused:
                raise BirdUnavailable(self.ctl, str(exc)) from None
        # BIRD closed the connection we kept (a restart): one fresh connection, same deadline.
        try:
            return self._exchange(command, deadline)
        except _Closed as exc:
            self.close()
            raise BirdUnavailable(self.ctl, str(exc)) from None

    def _exchange(self, command: str, deadline: float) -> Reply:
        try:
            if self._sock is None:
                self._connect(deadline)
            return self._command(command, deadline)
        except BirdUnavailable:
            self.close()
            raise

    def _connect(self, deadline: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock, self._buf = sock, b""
        try:
            sock.settimeout(self._remaining(deadline))
            sock.connect(str(self.ctl))
        except FileNotFoundError:
            raise BirdUnavailable(self.ctl, "no control socket (BIRD not started, or "
                                            "gone)") from None
        except ConnectionRefusedError:
            raise BirdUnavailable(self.ctl, "the control socket refuses connections "
                                            "(BIRD not running)") from None
        except TimeoutError:
            raise BirdUnavailable(self.ctl, f"no connection within {self.timeout_s:g} "
                                            "s") from None
        except OSError as exc:
            raise BirdUnavailable(self.ctl, exc.strerror or str(exc)) from None
        try:
            self._reply(deadline)  # the greeting: 0001 BIRD x.y.z ready.
            restricted = self._command("restrict", deadline)
        except _Closed as exc:
            raise BirdUnavailable(self.ctl, str(exc)) from None
        if restricted.code != RESTRICTED:
            raise BirdUnavailable(self.ctl, f"BIRD refused to restrict the connection "
                                            f"({restricted.code:04d} {restricted.message})")

    def _command(self, command: str, deadline: float) -> Reply:
        self._send(command, deadline)
        return self._reply(deadline)

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BirdUnavailable(self.ctl, f"no answer within {self.timeout_s:g} s")
        return left

    def _send(self, command: str, deadline: float) -> None:
        assert self._sock is not None
        try:
            self._sock.settimeout(self._remaining(deadline))
            self._sock.sendall(command.encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            raise _Closed("BIRD closed the control connection") from None
        except TimeoutError:
            raise BirdUnavailable(self.ctl, f"no answer within {self.timeout_s:g} s") from None
        except OSError as exc:
            raise BirdUnavailable(self.ctl, exc.strerror or str(exc)) from None

    def _reply(self, deadline: float) -> Reply:
        lines: list[tuple[int, str]] = []
        previous: int | None = None
        size = 0
        while True:
            raw = self._read_line(deadline)
            size += len(raw) + 1
            if size > MAX_REPLY_BYTES:
                raise BirdUnavailable(self.ctl, f"an answer larger than {MAX_REPLY_BYTES} "
                                                "bytes")
            parsed = _line(raw, previous)
            if parsed is None:
                continue
            code, text, last = parsed
            lines.append((code, text))
            previous = code
            if last:
                return Reply(code, tuple(lines))

    def _read_line(self, deadline: float) -> str:
        assert self._sock is not None
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_REPLY_BYTES:
                raise BirdUnavailable(self.ctl, f"a line longer than {MAX_REPLY_BYTES} bytes")
            try:
                self._sock.settimeout(self._remaining(deadline))
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise BirdUnavailable(self.ctl, f"no answer within {self.timeout_s:g} "
                                                "s") from None
            except ConnectionResetError:
                chunk = b""
            except OSError as exc:
                raise BirdUnavailable(self.ctl, exc.strerror or str(exc)) from None
            if not chunk:
                raise _Closed("BIRD closed the control connection")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\n", 1)
        return raw.decode(errors="replace")


class _Closed(Exception):
    """BIRD closed the connection (EOF, reset, broken pipe): a kept connection may be
    retried on a fresh one."""


def ask(ctl: Path, command: str, timeout_s: float = TIMEOUT_S) -> Reply:
    """One question on a connection of its own (connect, restrict, ask, close)."""
    with BirdClient(ctl, timeout_s) as client:
        return client.ask(command)


class Birds:
    """The routers' BIRDs of one lab, by router name: a `BirdClient` each, opened on first
    use, all closed with this object. One look at the lab: a router whose BIRD did not answer
    is not asked again (`unavailable` says why), so a hung BIRD costs one timeout."""

    def __init__(self, lab_dir: Path, timeout_s: float = TIMEOUT_S) -> None:
        self.lab_dir = lab_dir
        self.timeout_s = timeout_s
        self.unavailable: dict[str, BirdUnavailable] = {}
        self._clients: dict[str, BirdClient] = {}

    def __enter__(self) -> Birds:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def ask(self, router: str, command: str) -> Reply:
        """The router's BIRD's reply; BirdUnavailable (again) once it did not answer."""
        if router in self.unavailable:
            raise self.unavailable[router]
        client = self._clients.get(router)
        if client is None:
            client = self._clients[router] = BirdClient(
                names.bird_socket(self.lab_dir, router), self.timeout_s)
        try:
            return client.ask(command)
        except BirdUnavailable as exc:
            self.unavailable[router] = exc
            raise


@dataclass(frozen=True)
class Protocol:
    name: str
    proto: str
    state: str
    info: str


def parse_protocols(text: str) -> list[Protocol]:
    """`show protocols` -> one entry per protocol (BIRD 2 table layout). The indented
    detail lines of `show protocols all` are skipped."""
    out = []
    for line in text.splitlines():
        if line[:1].isspace():
            continue
        parts = line.split(None, 5)
        if len(parts) < 5 or parts[0] in ("BIRD", "Name"):
            continue
        info = parts[5].strip() if len(parts) > 5 else ""
        out.append(Protocol(parts[0], parts[1], parts[3], info))
    return out


def bgp_state(proto: Protocol) -> str:
    """'Established', 'Active', 'Connect', ... (the first word of BIRD's info column)."""
    if proto.state == "up":
        return "Established"
    return proto.info.split()[0] if proto.info else proto.state


@dataclass
class Route:
    """One route of `show route ... all`. `next_hops` lists every `via` line: one for a
    plain route, several for the merged (ECMP) route of `show route ... export kernel4`."""

    prefix: str
    protocol: str
    next_hop: str | None
    interface: str | None
    as_path: list[int] = field(default_factory=list)
    communities: list[str] = field(default_factory=list)
    local_pref: int | None = None
    next_hops: list[str] = field(default_factory=list)
    net: str | None = None    # the network BIRD answered with (`for` is a longest match)
    primary: bool = False     # starred: BIRD's best route for the network


BestRoute = Route

ROUTE_HEAD = re.compile(r"^(\S+)?\s+\w+\s+\[(\S+)\s[^\]]*\]\s+(\*)?")
VIA = re.compile(r"^\s+via\s+(\S+)\s+on\s+(\S+)")
DEV = re.compile(r"^\s+dev\s+(\S+)")


def parse_routes(text: str, prefix: str = "") -> list[Route]:
    """Every route of `show route [for PREFIX] [export P] all`, in BIRD's order (for each
    network its primary route first). `prefix` labels the routes (default: their net)."""
    routes: list[Route] = []
    current: Route | None = None
    net: str | None = None
    for line in text.splitlines():
        head = ROUTE_HEAD.match(line)
        if head and not line.startswith("\t"):
            net = head.group(1) or net
            current = Route(prefix or net or "", head.group(2), None, None, net=net,
                            primary=head.group(3) is not None)
            routes.append(current)
            continue
        if current is None:
            continue
        via, dev = VIA.match(line), DEV.match(line)
        if via:
            current.next_hops.append(via.group(1))
            if current.next_hop is None:
                current.next_hop, current.interface = via.group(1), via.group(2)
        elif dev and current.interface is None:
            current.interface = dev.group(1)
        stripped = line.strip()
        if stripped.startswith("BGP.as_path:"):
            current.as_path = [int(a) for a in stripped.split(":", 1)[1].split()
                               if a.isdigit()]
        elif stripped.startswith("BGP.community:"):
            pairs = re.findall(r"\((\d+),\s*(\d+)\)", stripped)
            current.communities = [f"{a}:{b}" for a, b in pairs]
        elif stripped.startswith("BGP.local_pref:"):
            current.local_pref = int(stripped.split(":", 1)[1])
    return routes


def parse_best_route(text: str, prefix: str) -> Route | None:
    """The primary (starred) route from `show route for PREFIX [export P] all`; None when
    BIRD has no route ("Network not found")."""
    return next((r for r in parse_routes(text, prefix) if r.primary), None)


def route_count_command(protocol: str) -> str:
    """Ask how many routes a protocol (a BGP session) brought in, over all tables."""
    return f"show route protocol {protocol} count"


COUNT = re.compile(r"^(?:Total:\s+)?(\d+) of \d+ routes")


def parse_route_count(text: str) -> int | None:
    """`show route ... count` -> the routes counted: BIRD's `Total: N of M routes ...` line
    when it counted in several tables, else the sum of its `N of M routes ... in table T`
    lines; None when the answer holds neither."""
    per_table, total = [], None
    for line in text.splitlines():
        m = COUNT.match(line.strip())
        if m is None:
            continue
        if line.strip().startswith("Total:"):
            total = int(m.group(1))
        else:
            per_table.append(int(m.group(1)))
    if total is not None:
        return total
    return sum(per_table) if per_table else None


def fib_route_command(prefix: str) -> str:
    """Ask for the route BIRD gives the kernel: with `merge paths` (ECMP) that is one
    route carrying every equal-cost next hop; the table itself keeps one route per peer."""
    family = 6 if ":" in prefix else 4
    return f"show route for {prefix} export {names.KERNEL_PROTOCOLS[family]} all"


@dataclass(frozen=True)
class BfdSession:
    """One row of `show bfd sessions`: the neighbour, the interface, the state (Up, Down,
    Init, AdminDown), since when, and the negotiated interval and timeout in seconds."""

    protocol: str
    address: str
    interface: str
    state: str
    since: str
    interval_s: float | None
    timeout_s: float | None


def _seconds(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_bfd_sessions(text: str) -> list[BfdSession]:
    """`show bfd sessions` -> one entry per session, under the `NAME:` line of its BFD
    protocol; the heading row (`IP address ...`) is skipped."""
    out = []
    protocol = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("BIRD ", "IP address")):
            continue
        if stripped.endswith(":") and " " not in stripped:
            protocol = stripped[:-1]
            continue
        parts = stripped.split()
        # address, interface, state, since (a time, maybe with a date before it),
        # interval, timeout.
        if len(parts) < 6 or not (":" in parts[0] or "." in parts[0]):
            continue
        out.append(BfdSession(protocol, parts[0], parts[1], parts[2], " ".join(parts[3:-2]),
                              _seconds(parts[-2]), _seconds(parts[-1])))
    return out


_SINCE_RE = re.compile(r"(?:(\d{4})-(\d{2})-(\d{2}))?\s*(?:(\d{2}):(\d{2}):(\d{2})(\.\d+)?)?")
DAY_S = 86400.0
CLOCK_SLACK_S = 1.0  # BIRD and this process read the same clock; rounding aside


def since_epoch(since: str, now: float) -> float | None:
    """BIRD's `Since` column as a Unix time, read in this machine's local time as BIRD
    writes it: `23:00:00.400` (a time of day: the latest such instant not after `now`),
    `2026-12-01 23:00:00.400`, or a date alone for old states (its midnight). None when
    the text is none of these."""
    m = _SINCE_RE.fullmatch(since.strip())
    if m is None or not (m.group(1) or m.group(4)):
        return None
    year, month, day, hour, minute, second, frac = m.groups()
    hms = (int(hour), int(minute), int(second)) if hour else (0, 0, 0)
    fraction = float(frac) if frac else 0.0
    if year:
        stamp = time.mktime((int(year), int(month), int(day), *hms, 0, 0, -1))
        return stamp + fraction
    today = time.localtime(now)
    stamp = time.mktime((today.tm_year, today.tm_mon, today.tm_mday, *hms, 0, 0, -1))
    stamp += fraction
    if stamp > now + CLOCK_SLACK_S:  # a time of day later than now: it was yesterday's
        stamp -= DAY_S
    return stamp
