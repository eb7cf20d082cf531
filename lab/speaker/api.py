"""ExaBGP's API process for a site: the only way the site's routes get announced.

ExaBGP starts this program and reads announce/withdraw lines from its stdout; it
acknowledges each line on our stdin with `done` or `error`. We read and check every
acknowledgement. Commands arrive on a unix socket in the site's run directory:

    announce            announce the anycast prefixes
    announce gshut      announce them with GRACEFUL_SHUTDOWN (65535:0), for a drain
    withdraw            withdraw them
    state               report the current state

Each command gets one JSON line back: {"ok": bool, "state": ..., "detail": ...}.

Fail-closed start: ExaBGP keeps routes when its API process dies and respawns it, so
the first thing a (re)started API process does is withdraw everything.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ACK_TIMEOUT_S = 2.0
GRACEFUL_SHUTDOWN = "65535:0"


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


class ExaBGPChannel:
    """Our stdout to ExaBGP, our stdin for its acknowledgements."""

    def __init__(self) -> None:
        self.acks: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_stdin, daemon=True).start()

    def _read_stdin(self) -> None:
        for raw in sys.stdin:
            line = raw.strip()
            if line:
                self.acks.put(line)
        self.acks.put("shutdown")  # ExaBGP went away

    def send(self, lines: list[str]) -> list[str]:
        """Write each line, wait for its acknowledgement; returns the answers."""
        answers = []
        for line in lines:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            try:
                answers.append(self.acks.get(timeout=ACK_TIMEOUT_S))
            except queue.Empty:
                answers.append("timeout")
        return answers


class Speaker:
    def __init__(self, routes: list[Route], channel: ExaBGPChannel) -> None:
        self.routes = routes
        self.channel = channel
        self.state = "withdrawn"
        self.changed_at = time.time()

    def apply(self, action: str, gshut: bool = False) -> dict:
        answers = self.channel.send(route_lines(action, self.routes, gshut))
        ok = all(a == "done" for a in answers)
        if ok:
            new = "withdrawn" if action == "withdraw" else (
                "announced-gshut" if gshut else "announced")
            if new != self.state:
                self.state, self.changed_at = new, time.time()
        log(f"{action}{' gshut' if gshut else ''}: {' '.join(answers)}")
        return {"ok": ok, "state": self.state, "detail": answers}

    def handle(self, command: str) -> dict:
        words = command.split()
        if words == ["announce"]:
            return self.apply("announce")
        if words == ["announce", "gshut"]:
            return self.apply("announce", gshut=True)
        if words == ["withdraw"]:
            return self.apply("withdraw")
        if words == ["state"]:
            return {"ok": True, "state": self.state, "since": self.changed_at}
        return {"ok": False, "state": self.state, "detail": f"unknown command {command!r}"}


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} speaker-api: {message}\n")
    sys.stderr.flush()


def serve(control: Path, speaker: Speaker) -> None:
    if control.exists():
        control.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(control))
    server.listen(8)
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is server:
                conn, _ = server.accept()
                sel.register(conn, selectors.EVENT_READ)
                buffers[conn] = b""
                continue
            data = sock.recv(4096)
            if not data:
                sel.unregister(sock)
                buffers.pop(sock, None)
                sock.close()
                continue
            buffers[sock] += data
            while b"\n" in buffers[sock]:
                line, buffers[sock] = buffers[sock].split(b"\n", 1)
                reply = speaker.handle(line.decode(errors="replace").strip())
                sock.sendall((json.dumps(reply) + "\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, type=Path, help="unix socket path")
    # Two words, not "P,NH": ExaBGP's `run` tokenizer splits on commas.
    parser.add_argument("--route", action="append", default=[], nargs=2,
                        metavar=("PREFIX", "NEXTHOP"))
    parser.add_argument("--announce-at-start", action="store_true",
                        help="announce once the start-up withdrawal is done (static mode)")
    args = parser.parse_args()
    routes = [Route(prefix, nexthop) for prefix, nexthop in args.route]
    speaker = Speaker(routes, ExaBGPChannel())
    log(f"started (pid {os.getpid()}), withdrawing first")
    speaker.apply("withdraw")
    if args.announce_at_start:
        speaker.apply("announce")
    serve(args.control, speaker)


if __name__ == "__main__":
    main()
