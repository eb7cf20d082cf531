"""Talking to a site's speaker API process (lab.sites.speaker.api) over its unix control socket.

`command()` is a one-shot question (e.g. `state`). `Controller` is the watchdog
controller's end (what the health daemon holds): it claims the shim with `control`,
learns the watchdog period from the answer and keeps the watchdog fed every period/4
(or as often as the caller asks; one that is awake anyway may feed it a little early,
so that keepalives ride on its other wake-ups) -- also while it waits for the answer
to a command, so a slow ExaBGP acknowledgement never starves the watchdog. It feeds
it with `keepalive` lines, or, with `beat=True`, by writing the time into a beat cell
(a sealed memfd of 8 bytes, passed once with `control beat` and mapped by both): no
syscall, and the shim is not woken for it. It is single-threaded on purpose:
if the caller's loop stops, keepalives stop and the shim withdraws.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import select
import socket
import time
from pathlib import Path
from typing import Any

KEEPALIVES_PER_WATCHDOG = 4
BEAT_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


def command(control: Path, text: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one command line and return the JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(control))
        sock.sendall(text.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


class ShimError(Exception):
    """The shim refused us, or the connection to it failed or closed."""


class BeatCell:
    """Eight bytes shared with the shim: `beat()` writes CLOCK_MONOTONIC in ns (one
    aligned 64-bit store). The memfd is sealed (it can neither shrink nor grow), so the
    shim's mapping stays valid whatever happens here."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("anycast-beat", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, 8)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, BEAT_SEALS)
            self.map = mmap.mmap(self.fd, 8)
        except OSError:
            os.close(self.fd)
            raise
        self.cell = memoryview(self.map).cast("Q")
        self.beat()

    def beat(self) -> None:
        self.cell[0] = time.monotonic_ns()

    def close_fd(self) -> None:
        """Once the shim has its own descriptor (the mapping stays)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        self.close_fd()
        self.cell.release()
        self.map.close()


class Controller:
    """One connection to a shim in watchdog mode, as its controller."""

    def __init__(self, path: Path, per_watchdog: int = KEEPALIVES_PER_WATCHDOG,
                 beat: bool = False) -> None:
        self.path = path
        self.per_watchdog = per_watchdog  # keepalives per watchdog period
        self.use_beat = beat  # feed the watchdog through a beat cell, not lines
        self.beat: BeatCell | None = None
        self.sock: socket.socket | None = None
        self.watchdog_s = 0.0
        self.keepalive_s = 0.0
        self.next_keepalive = 0.0
        self._buffer = b""

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def open(self, timeout: float = 1.0) -> dict[str, Any]:
        """Connect and claim the watchdog; returns the shim's answer (with its state)."""
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise ShimError(f"cannot connect to {self.path}: {exc.strerror or exc}") from None
        self.sock = sock
        try:
            self.beat = BeatCell() if self.use_beat else None
        except OSError as exc:
            self.close()
            raise ShimError(f"cannot make a beat cell: {exc.strerror or exc}") from None
        reply = self._ask("control beat" if self.beat else "control",
                          time.monotonic() + timeout, keepalives=False)
        if self.beat is not None:
            self.beat.close_fd()
        if not reply.get("ok") or not reply.get("watchdog_ms"):
            self.close()
            raise ShimError(f"shim refused control: {reply.get('detail', reply)}")
        if self.beat is not None and reply.get("beat") is not True:
            self.close()
            raise ShimError("the shim took control without the beat cell")
        self.watchdog_s = reply["watchdog_ms"] / 1000
        self.keepalive_s = self.watchdog_s / self.per_watchdog
        self.next_keepalive = time.monotonic() + self.keepalive_s
        return reply

    def keepalive_if_due(self, now: float | None = None, early: float = 0.0) -> None:
        """Send a keepalive when one is due, or due within `early` seconds; raises
        ShimError if the connection broke."""
        now = time.monotonic() if now is None else now
        if self.sock is None or now < self.next_keepalive - early:
            return
        if self.beat is not None:
            self.beat.beat()
            self.next_keepalive = time.monotonic() + self.keepalive_s
        else:
            self._send("keepalive")

    def check_closed(self) -> None:
        """The socket is readable while no answer is awaited: the shim closed it (its
        watchdog expired, or it restarted), which a controller that feeds a beat cell
        learns only this way. Raises ShimError then; stray bytes are kept for `_ask`."""
        if self.sock is None:
            return
        sock, timeout = self.sock, self.sock.gettimeout()
        sock.setblocking(False)  # a socket with a timeout would wait for data first
        try:
            chunk = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        finally:
            sock.settimeout(timeout)
        if not chunk:
            self.close()
            raise ShimError("the shim closed the connection")
        self._buffer += chunk

    def command(self, text: str, timeout: float) -> dict[str, Any]:
        """Send a command and wait (feeding the watchdog) for its JSON answer."""
        if self.sock is None:
            raise ShimError("not connected")
        return self._ask(text, time.monotonic() + timeout, keepalives=True)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.beat is not None:
            self.beat.close()
        self.sock, self._buffer, self.beat = None, b"", None

    def _send(self, text: str) -> None:
        assert self.sock is not None
        try:
            data = text.encode() + b"\n"
            if self.beat is not None and self.beat.fd >= 0:  # `control beat` carries it
                socket.send_fds(self.sock, [data], [self.beat.fd])
            else:
                self.sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ShimError(f"shim connection lost: {exc.strerror or exc}") from None
        self.next_keepalive = time.monotonic() + self.keepalive_s

    def _ask(self, text: str, deadline: float, keepalives: bool) -> dict[str, Any]:
        self._send(text)
        while b"\n" not in self._buffer:
            assert self.sock is not None
            now = time.monotonic()
            if now >= deadline:
                self.close()
                raise ShimError(f"no answer to {text!r} from the shim")
            wait = deadline - now
            if keepalives:
                wait = min(wait, max(0.0, self.next_keepalive - now))
            readable, _, _ = select.select([self.sock], [], [], wait)
            if readable:
                try:
                    chunk = self.sock.recv(4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    self.close()
                    raise ShimError("the shim closed the connection")
                self._buffer += chunk
            elif keepalives:
                self.keepalive_if_due()
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            reply = json.loads(line)
        except ValueError:
            self.close()
            raise ShimError(f"unreadable answer from the shim: {line[:80]!r}") from None
        if not isinstance(reply, dict):
            self.close()
            raise ShimError(f"unexpected answer from the shim: {line[:80]!r}")
        return reply
