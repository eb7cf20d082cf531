"""The health daemon's loop: run checks, decide, tell the shim, keep its watchdog fed.

Threads: one worker per check that can block (introspection, identity, tcp, exec: runs
the probe at the time it is told, posts the result and pokes the loop's wake pipe), the
metrics server's, and the main loop, which does everything else. The DNS check needs no
thread: its socket is non-blocking; after sending, the loop waits up to QUICK_ANSWER_MS
for the answer (the site's own server answers within a fraction of that), else its
selector waits on the socket; a run is a send, a readable event and a parse, and its
timeout is a timer of the loop (it never holds the loop up for longer than that).
After a good run the check keeps a TCP connection to its server open (`ServerWatchLink`);
when it closes, the loop connects again: a server that only dropped an idle connection
takes the new one, a dead one refuses it, and then the next query goes out at once and,
unanswered, again every WATCH_RESEND_S until its verdict. The workers' kept HTTPS
connections are watched for the server closing them (`HangUpWatch`, checks that run more
often than the service's keep-alive timeout only): that check then runs at once.
The main loop waits on its selector (the DNS sockets, the wake pipe for results and
signals) with a timeout that brings it back for the next keepalive, the drain-file poll,
a DNS query's timeout, a check that may have hung and any timer of the state machine.
A result schedules that check's next run at once (a worker waits for its time itself),
and the keepalive and the drain poll are done early when the loop is awake anyway
(within a quarter of a keepalive period, half a drain period), and a keepalive waits up
to a quarter of its period for such a wake-up: an idle site wakes about once per DNS
check. A keepalive is a store of the time into the beat cell the shim maps (no syscall,
no wake-up of the shim). Keepalives come from this loop on purpose: if it hangs, they
stop and the shim withdraws. While it waits for the shim's answer to a command it keeps
them coming (Controller.command).

A check that does not come back within timeout x 1.5 (+50 ms) is counted as a failure
("hung"), again every such period, and its late result is dropped.

Saturation: a result may say the service is saturated (at its connection limit, yet
answering). With `saturation: absorb` (the default) that changes nothing but the report;
with `withdraw` such a result counts as a failure. Either way the state file says
`"saturation": {"policy": ..., "saturated": ...}`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import select
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from lab.shared.speaker_client import Controller, ShimError
from lab.sites.health.checks import DnsProbe, Probe, Result, make_probe
from lab.sites.health.config import TIMING_FIELDS, Check, DnsCheck, HealthConfig, parse_listen
from lab.sites.health.metrics import Metrics
from lab.sites.health.report import EventLog, iso, replace_state_file
from lab.sites.health.state import ANNOUNCE, GSHUT, UP, WITHDRAW, CheckTracker, Site, Transition

log = logging.getLogger("lab.sites.health")

SHIM_COMMANDS = {WITHDRAW: "withdraw", ANNOUNCE: "announce", GSHUT: "announce gshut"}
SHIM_ROUTES = {"withdrawn": "withdrawn", "announced": "announced",
               "announced-gshut": "gshut"}
HANG_FACTOR, HANG_GRACE_S = 1.5, 0.05
KEEPALIVES_PER_WATCHDOG = 3
# The DNS check waits this long for its answer right after sending (the loop holds still
# meanwhile; nothing it does needs a finer grain): an answer then costs no second wake-up.
QUICK_ANSWER_MS = 2
# After the server's watch connection closed, a query not yet answered is sent again
# this often until the run's verdict or its timeout: the dying server's UDP socket may
# still take (and lose) the first one, and the refusal comes once it is gone.
WATCH_RESEND_S = 0.005
# A worker's kept HTTPS connection is watched only for a check that runs more often than
# this: the service then never closes it as idle (its keep-alive timeout is 5 s), so a
# close means the service went away. A slower check is left to its pace.
KEPT_WATCH_MAX_INTERVAL_MS = 4000


@dataclass(frozen=True)
class _Done:
    check: str
    run_id: int
    started: float
    result: Result


def run_gap_s(interval_s: float, fast_s: float, fast: bool, recheck_s: float | None) -> float:
    """From one run's start to the next: the fast interval or the interval -- or sooner
    when the probe said when its answer will change (`Result.recheck_s`), never sooner
    than the fast interval."""
    gap = fast_s if fast else interval_s
    return gap if recheck_s is None else min(gap, max(recheck_s, fast_s))


class Worker:
    """Runs one check's probe in its own thread at the time `start()` gives it."""

    def __init__(self, cfg: Check, probe: Probe, results: queue.SimpleQueue[Any],
                 wake: Any = None) -> None:
        self.cfg, self.probe, self.results = cfg, probe, results
        self.wake = wake or (lambda: None)  # tells the main loop a result is queued
        self.go = threading.Event()
        self.stopping = False
        self.run_id = 0
        self.at = 0.0  # when the next run is to begin (monotonic)
        # Main thread's view: a run is in flight (or scheduled) since then.
        self.busy_since: float | None = None
        self.abandoned = 0  # run id already counted as hung
        # The kept connection closed while a run was under way or its result not yet
        # taken: the next run starts at once, whatever time it is given.
        self.hurried = False
        self.thread = threading.Thread(target=self._loop, name=f"check-{cfg.name}",
                                       daemon=True)
        self.thread.start()

    def start(self, at: float) -> None:
        """Run the probe at `at` (monotonic seconds; at once if that has passed)."""
        if self.hurried:
            self.hurried, at = False, min(at, time.monotonic())
        self.run_id += 1
        self.busy_since = self.at = at
        self.go.set()

    def stop(self) -> None:
        self.stopping = True
        self.go.set()

    def hurry(self, now: float) -> None:
        """Run now rather than at the time given (the probe's kept connection closed).
        A run already under way is left alone, and the one after it starts at once: that
        run may have ended well just before the close, its result not yet taken."""
        if self.busy_since is not None and self.busy_since > now:
            self.busy_since = self.at = now
            self.go.set()
        else:
            self.hurried = True

    def _loop(self) -> None:
        while True:
            self.go.wait()
            self.go.clear()
            while not self.stopping and (left := self.at - time.monotonic()) > 0:
                self.go.wait(left)  # only stop() sets it meanwhile
                self.go.clear()
            if self.stopping:
                return
            run_id, started = self.run_id, time.monotonic()
            try:
                result = self.probe.run()
            except Exception as exc:  # a bug in a probe is a failed check, not a dead one
                result = Result(False, f"check crashed: {type(exc).__name__}",
                                time.monotonic() - started)
            self.results.put(_Done(self.cfg.name, run_id, started, result))
            self.wake()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def next_time(self, hang_after: float) -> float | None:
        """When the main loop must look at this check again (a hung run)."""
        return None if self.busy_since is None else self.busy_since + hang_after


class Registration:
    """A socket that comes and goes (made again after an error, a reconnect), kept in
    the loop's selector with `data`: `follow(sock)` moves the registration when the
    socket changed. The fd number is kept with it: a new socket may get the same one."""

    def __init__(self, selector: selectors.BaseSelector, data: Any) -> None:
        self.selector, self.data = selector, data
        self.sock: socket.socket | None = None
        self.fd = -1
        self.events = selectors.EVENT_READ

    def follow(self, sock: socket.socket | None, events: int = selectors.EVENT_READ) -> None:
        """Watch `sock` for `events` (readable, or writable: a connect under way)."""
        if sock is self.sock:
            if sock is not None and events != self.events:
                self.selector.modify(self.fd, events, self.data)
                self.events = events
            return
        self.drop()
        if sock is not None:
            self.sock, self.fd, self.events = sock, sock.fileno(), events
            self.selector.register(self.fd, events, self.data)

    def drop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(self.fd)
        self.sock, self.fd = None, -1


class InlineDns:
    """The DNS check run by the main loop itself (no thread): `start(at)` as a Worker's;
    `tick(now)` sends the query when it is due and gives up at its timeout; `readable()`
    (the selector saw the socket readable) reads and, when it is this run's answer,
    posts the result like a worker."""

    def __init__(self, cfg: DnsCheck, probe: DnsProbe, results: queue.SimpleQueue[Any],
                 selector: selectors.BaseSelector) -> None:
        self.cfg, self.probe, self.results, self.selector = cfg, probe, results, selector
        self.run_id = self.abandoned = 0
        self.at = 0.0
        self.busy_since: float | None = None
        self.pending = False  # started, query not sent yet
        self.started: float | None = None  # query in flight since
        self.deadline = 0.0
        self.resend_at: float | None = None  # the watch closed: send again at this time
        self.registration = Registration(selector, self)  # the probe's socket
        self.watch_link = ServerWatchLink(self, selector)

    def start(self, at: float) -> None:
        if self.resend_at is not None:  # the watch closed after the last run's verdict
            at = min(at, self.resend_at)
        self.run_id += 1
        self.busy_since = self.at = at
        self.pending = True

    def stop(self) -> None:
        self.pending, self.started = False, None

    def join(self, timeout: float) -> None:
        """Nothing runs on its own; leave the selector before the socket is closed."""
        self.registration.drop()
        self.watch_link.registration.drop()

    def hurry(self, now: float) -> None:
        """The server's watch connection closed: query now, and again every
        WATCH_RESEND_S until this run's verdict. Between a verdict and the next run's
        `start` (both in one batch of the loop's events) that run is the one hurried."""
        self.resend_at = now
        if self.pending and self.at > now:
            self.at = now

    def next_time(self, hang_after: float) -> float | None:
        if self.pending:
            return self.at
        if self.started is None:
            return None
        return self.deadline if self.resend_at is None else min(self.deadline,
                                                                 self.resend_at)

    def tick(self, now: float) -> None:
        if self.started is not None and now >= self.deadline:
            self._done(False, "timeout", now)
        if self.pending and now >= self.at:
            self.pending, self.started = False, now
            self.busy_since = now  # a hung-run verdict counts from the query's sending
            self.deadline = now + self.cfg.timeout_ms / 1000
            self._send(now)
        elif self.started is not None and self.resend_at is not None and now >= self.resend_at:
            self._send(now)

    def _send(self, now: float) -> None:
        if self.resend_at is not None:
            self.resend_at = now + WATCH_RESEND_S
        failed = self.probe.send()
        if failed is None:  # the site's own server answers within a fraction of a ms
            failed = self.probe.receive_soon(QUICK_ANSWER_MS)
        self._follow_socket()
        if failed is not None:
            self._done(*failed, time.monotonic())

    def readable(self) -> None:
        if self.started is None:
            self.probe.drain()  # nobody waits: a late answer or an ICMP error
        else:
            outcome = self.probe.receive()
            if outcome is not None:
                self._done(*outcome, time.monotonic())
        self._follow_socket()

    def _done(self, ok: bool, reason: str, now: float) -> None:
        assert self.started is not None
        started, self.started = self.started, None
        self.resend_at = None
        if ok and self.cfg.watch_tcp:
            self.watch_link.connect()
        self.results.put(_Done(self.cfg.name, self.run_id, started,
                               Result(ok, reason, now - started)))

    def _follow_socket(self) -> None:
        """Keep the selector on the probe's socket (it is made again after an error)."""
        self.registration.follow(self.probe.sock)


class ServerWatchLink:
    """The DNS probe's `ServerWatch` in the loop's selector: connected after a good run
    (when it is not); when the server closes it, connected again at once, and if that
    is refused, the check's next query is sent at once. A connect never holds the loop:
    the selector waits for its socket to turn writable, then its outcome is read."""

    def __init__(self, dns: InlineDns, selector: selectors.BaseSelector) -> None:
        self.dns, self.watch = dns, dns.probe.watch
        self.registration = Registration(selector, self)
        # The last connect's outcome after a good run (None: connected), logged when it
        # changes. Unbound closes an idle connection after its tcp-idle-timeout: the
        # watch connects again then, every few seconds, quietly.
        self.problem: str | None = ""
        self.reconnecting = False  # the connect under way follows a close

    def connect(self) -> None:
        """After a good run: connect unless connected (or connecting)."""
        if self.watch.sock is None:
            self.reconnecting = False
            self._started(self.watch.connect())

    def _started(self, problem: str | None) -> None:
        if problem is not None or not self.watch.connecting:
            self._outcome(problem)
        else:
            self.registration.follow(self.watch.sock, selectors.EVENT_WRITE)

    def _outcome(self, problem: str | None) -> None:
        self.registration.follow(self.watch.sock)  # readable: the server closing it
        if self.reconnecting:
            self.reconnecting = False
            if problem is not None:  # refused: the server is gone
                self.dns.hurry(time.monotonic())
            return
        if problem != self.problem:
            if problem is None:
                log.info("%s: watching %s over TCP (a closed connection runs the check "
                         "at once)", self.dns.cfg.name, _where(self.watch.address))
            else:
                log.info("%s: no TCP watch on %s (%s): the check's interval alone",
                         self.dns.cfg.name, _where(self.watch.address), problem)
            self.problem = problem

    def readable(self) -> None:
        """A connect ended, or the connection closed: then connect again at once. A
        server that only dropped an idle connection takes the new one (its listener is
        there: nothing else to do); a dead one refuses it (its process closed the
        listener first), and the check runs now."""
        if self.watch.connecting:
            self._outcome(self.watch.connected())
            return
        if not self.watch.closed():
            return
        self.registration.follow(None)  # out of the selector before the fd is reused
        self.reconnecting = True
        self._started(self.watch.connect())


def _where(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HangUpWatch:
    """The kept connections of the checks run by workers (introspection, identity),
    watched from the loop for the server closing them: an epoll set of their sockets for
    EPOLLRDHUP alone (the answers their threads read do not wake the loop), itself in the
    loop's selector. A close runs that check at once instead of at its time (a killed
    service is then refused within the fall's fast interval). A socket is watched until it
    is seen closed, then not again; the worker's next connection is a new one. Only a
    check faster than KEPT_WATCH_MAX_INTERVAL_MS is watched (the service closes a slower
    one's connection as idle, which says nothing)."""

    EVENTS = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR

    def __init__(self, selector: selectors.BaseSelector, workers: dict[str, Any]) -> None:
        self.epoll = select.epoll()
        self.selector, self.workers = selector, workers
        self.watched: dict[str, tuple[int, socket.socket]] = {}  # check -> (fd, socket)
        self.by_fd: dict[int, str] = {}  # fd -> check, for the events epoll gives
        self.seen: dict[str, socket.socket] = {}  # check -> its socket seen closed
        selector.register(self.epoll.fileno(), selectors.EVENT_READ, self)

    def follow(self) -> None:
        """Watch each worker's current socket (called by the loop after every step)."""
        for name, w in self.workers.items():
            if not isinstance(w, Worker) or w.cfg.interval_ms >= KEPT_WATCH_MAX_INTERVAL_MS:
                continue
            sock = w.probe.kept_socket()
            old = self.watched.get(name)
            if old is not None and old[1] is sock:
                continue
            if old is not None:
                self._forget(name)
            if sock is None or self.seen.get(name) is sock:
                continue
            try:
                fd = sock.fileno()
                self.epoll.register(fd, self.EVENTS)
            except (OSError, ValueError):  # closed by its thread meanwhile
                continue
            self.watched[name], self.by_fd[fd] = (fd, sock), name

    def _forget(self, name: str) -> None:
        fd, sock = self.watched.pop(name)
        if self.by_fd.get(fd) == name:  # else the number is another check's by now
            del self.by_fd[fd]
        if sock.fileno() == fd:  # a closed socket has left the epoll set by itself
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(fd)

    def readable(self) -> None:
        now = time.monotonic()
        for fd, _ in self.epoll.poll(0):
            name = self.by_fd.get(fd)
            if name is None:
                continue
            sock = self.watched[name][1]
            closed_by_its_thread = sock.fileno() != fd  # since the event: its run knows
            self.seen[name] = sock
            self._forget(name)
            if closed_by_its_thread:
                continue
            worker = self.workers.get(name)
            if isinstance(worker, Worker):
                worker.hurry(now)

    def close(self) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.unregister(self.epoll.fileno())
        self.epoll.close()


class LinkWatch:
    """The shim's socket in the loop's selector: readable while no answer is awaited
    means the shim closed it (a beat cell never writes to it, so nothing else tells)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.registration = Registration(daemon.selector, self)

    def follow(self) -> None:
        self.registration.follow(self.daemon.link.sock)

    def readable(self) -> None:
        try:
            self.daemon.link.check_closed()
        except ShimError as exc:
            self.follow()  # out of the selector before anything reuses the number
            self.daemon.lost_link(str(exc), time.monotonic())


class Daemon:
    def __init__(self, cfg: HealthConfig) -> None:
        self.cfg = cfg
        self.wall_offset = time.time() - time.monotonic()
        self.started_mono = time.monotonic()
        self.site = Site(
            [CheckTracker(c.name, c.rise, c.fall, c.required) for c in cfg.checks],
            hold_down=cfg.hold_down_ms / 1000, hold_down_max=cfg.hold_down_max / 1000,
            drain_delay=cfg.drain_delay_ms / 1000, retry=cfg.command_retry_ms / 1000,
            keep_last=cfg.last_site == "keep-last", last_site_max=cfg.last_site_max_ms / 1000)
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.workers: dict[str, Worker | InlineDns] = {}
        self.due = {c.name: 0.0 for c in cfg.checks}
        self.latency: dict[str, float] = {}
        # Each check's pace as this daemon runs it (the state file shows it).
        self.timing = {c.name: c.model_dump(include=set(TIMING_FIELDS)) for c in cfg.checks}
        # A keepalive every watchdog/3 (100 ms for the lab's 300 ms): the DNS check's
        # pace, so that the two share the loop's wake-ups.
        self.link = Controller(cfg.shim_socket, per_watchdog=KEEPALIVES_PER_WATCHDOG,
                               beat=True)
        self.link_watch = LinkWatch(self)
        self.hangups = HangUpWatch(self.selector, self.workers)
        self.metrics = Metrics([c.name for c in cfg.checks])
        self.events = EventLog(cfg.event_log)
        self.metrics_server: Any = None
        self.stop_signal: str | None = None
        self.hup = False
        self.next_connect = 0.0
        self.next_drain_poll = 0.0
        self.wake_at: float | None = None
        self.decision_reason = "starting"
        self.shim_problem: str | None = None  # last reason we could not connect
        self.saturated = False  # as the latest result that said anything about it
        self.saturated_at = -math.inf  # when the service last said it is saturated
        # The checks whose answers say whether their service is saturated (those of the
        # introspection service): only their timeouts can be put down to it.
        self.saturation_checks: set[str] = set()
        self.next_routes_poll = 0.0  # keep-last: when to ask the shim for its routes next
        self.others_seen: dict[str, Any] = {}  # keep-last: the shim's latest answer
        self.kept_last = False  # keep-last: the latest decision kept us as the last site

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Bind metrics, start the workers, write the first state (nothing announced)."""
        if self.cfg.metrics_listen:
            address, port = parse_listen(self.cfg.metrics_listen)
            self.metrics_server = self.metrics.serve(address, port)
        for c in self.cfg.checks:
            probe = make_probe(c)
            if isinstance(probe, DnsProbe) and isinstance(c, DnsCheck):
                self.workers[c.name] = InlineDns(c, probe, self.queue, self.selector)
            else:
                self.workers[c.name] = Worker(c, probe, self.queue, self.poke)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        self.events.write("start", site=self.cfg.site, pid=os.getpid(),
                          checks=[c.model_dump(include={"name", "type", "required",
                                                        *TIMING_FIELDS})
                                  for c in self.cfg.checks])
        log.info("site %s: %d check(s); shim %s; drain file %s", self.cfg.site,
                 len(self.cfg.checks), self.cfg.shim_socket, self.cfg.drain_file)
        self.write_state()

    def loop(self) -> None:
        """Run until SIGTERM/SIGINT, then shut down (withdraw first)."""
        while self.stop_signal is None:
            self.step()
        self.shutdown()

    def step(self) -> None:
        """Wait for something to do (or until the next timer), then do all of it."""
        timeout = max(0.0, self.next_wake() - time.monotonic())
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 512):
                        pass
            else:
                key.data.readable()
        now = time.monotonic()
        for w in self.workers.values():
            if isinstance(w, InlineDns):
                w.tick(now)
        with contextlib.suppress(queue.Empty):
            while True:
                item = self.queue.get_nowait()
                if isinstance(item, _Done):
                    self.on_result(item)
        now = time.monotonic()
        self.keep_link(now, early=True)
        self.detect_hung(now)
        self.poll_drain(now)
        self.poll_routes(now)
        self.decide(now)
        self.dispatch(time.monotonic())
        self.link_watch.follow()
        self.hangups.follow()

    def shutdown(self) -> None:
        """SIGTERM: withdraw (the shim would also do it when we close), then go."""
        log.info("stopping (%s): withdrawing", self.stop_signal)
        if self.link.connected:
            self.send(WITHDRAW, f"daemon stopping ({self.stop_signal})", time.monotonic())
        self.link.close()
        self.metrics.shim_connected.set(0)
        for w in self.workers.values():
            w.stop()
        self.hangups.close()
        for w in self.workers.values():
            w.join(timeout=1.0)
            w.probe.close()
        self.write_state(running=False)
        self.events.write("stop", signal=self.stop_signal, route=self.site.route)
        self.events.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signal.Signals(signum).name
        self.poke()  # a write to a pipe: safe in a signal handler

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.hup = True
        self.poke()

    def poke(self) -> None:
        """Wake the main loop (from a worker thread or a signal handler)."""
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(self.wake_w, b"\0")

    # --- timers ------------------------------------------------------------------

    def next_wake(self) -> float:
        now = time.monotonic()
        times = [self.next_drain_poll]
        if self.site.keep_last:
            times.append(self.next_routes_poll)
        # A keepalive may wait a quarter of its period for a wake-up the loop has anyway
        # (the DNS check's, normally a few ms later): 25 ms of a 300 ms watchdog, and no
        # second wake-up per period.
        times.append(self.link.next_keepalive + self.link.keepalive_s / 4
                     if self.link.connected else self.next_connect)
        for name, w in self.workers.items():
            if w.busy_since is None:
                times.append(self.due[name])
            else:
                later = w.next_time(self.hang_after(w.cfg))
                if later is not None:
                    times.append(later)
        if self.wake_at is not None:
            times.append(self.wake_at)
        return max(now, min(times))

    @staticmethod
    def hang_after(cfg: Check) -> float:
        return cfg.timeout_ms / 1000 * HANG_FACTOR + HANG_GRACE_S

    # --- checks ------------------------------------------------------------------

    def dispatch(self, now: float) -> None:
        """Start what is idle and due (at start, and after a late result of a hung run)."""
        for name, w in self.workers.items():
            if w.busy_since is None and now >= self.due[name]:
                w.probe.steady = self.steady(name)
                w.start(now)

    def steady(self, name: str) -> bool:
        """The check is up with no failure since: its probe may skip a part it asks only
        every Nth run (set before each run)."""
        tracker = self.site.checks[name]
        return tracker.state == UP and not tracker.changing

    def on_result(self, done: _Done) -> None:
        w = self.workers[done.check]
        if done.run_id <= w.abandoned:
            log.info("%s: late result of a run counted as hung, dropped: %s", done.check,
                     done.result.reason)
            if done.run_id == w.run_id:
                w.busy_since = None
            return
        w.busy_since = None
        self.record(done.check, done.result, time.monotonic())
        tracker = self.site.checks[done.check]
        fast = tracker.fast_pace(time.monotonic() - self.started_mono)
        self.due[done.check] = done.started + run_gap_s(
            w.cfg.interval_ms / 1000, w.cfg.fast_interval_ms / 1000, fast,
            done.result.recheck_s)
        if self.stop_signal is None:
            w.probe.steady = self.steady(done.check)
            w.start(self.due[done.check])

    def detect_hung(self, now: float) -> None:
        for name, w in self.workers.items():
            if w.busy_since is not None and now >= w.busy_since + self.hang_after(w.cfg):
                waited = now - w.busy_since
                w.abandoned, w.busy_since = w.run_id, now  # next verdict one period later
                self.record(name, Result(False, f"hung: no result in {waited * 1000:.0f} ms",
                                         waited), now)

    def record(self, name: str, result: Result, now: float) -> None:
        saturation_changed = self.note_saturation(name, result)
        if result.saturated is not None:
            self.saturation_checks.add(name)
        if result.saturated:
            self.saturated_at = now
        if self.absorbed(name, result, now):
            self.metrics.results.labels(name, "absorbed").inc()
            log.info("%s: %s while the service is saturated: no verdict (absorb)", name,
                     result.reason)
            return
        if result.ok and result.saturated and self.cfg.saturation == "withdraw":
            result = Result(False, "saturated (saturation policy: withdraw)", result.latency,
                            result.saturated)
        self.metrics.results.labels(name, "ok" if result.ok else "fail").inc()
        self.metrics.latency.labels(name).observe(result.latency)
        self.latency[name] = result.latency
        changes = self.site.observe(name, result.ok, result.reason, now)
        for t in changes:
            self.on_transition(t, result)
        if changes or saturation_changed:
            self.write_state()

    def absorbed(self, name: str, result: Result, now: float) -> bool:
        """A timeout shortly after the service said it is saturated, under absorb, of a
        check whose own answers say so (one of that service's): slow because busy, so no
        verdict (see `saturation_grace_ms`). Another service's timeouts (DNS) always
        count: the introspection service's load says nothing of them."""
        slow = result.reason.startswith(("timeout", "hung"))
        return (not result.ok and slow and self.cfg.saturation == "absorb"
                and name in self.saturation_checks
                and now - self.saturated_at <= self.cfg.saturation_grace_ms / 1000)

    def note_saturation(self, name: str, result: Result) -> bool:
        """Keep what the service said about its load; True if that changed."""
        if result.saturated is None or result.saturated == self.saturated:
            return False
        self.saturated = result.saturated
        self.metrics.saturated.set(1 if self.saturated else 0)
        self.events.write("saturation", check=name, saturated=self.saturated,
                          policy=self.cfg.saturation)
        log.info("%s: the service says it is %s (policy %s)", name,
                 "saturated" if self.saturated else "no longer saturated", self.cfg.saturation)
        return True

    def on_transition(self, t: Transition, result: Result) -> None:
        if t.check == "site":
            self.metrics.healthy.set(1 if t.new == UP else 0)
            if t.old != "unknown":
                self.metrics.site_flaps.inc()
            self.events.write("site", old=t.old, new=t.new, reason=t.reason)
            log.info("site %s -> %s: %s", t.old, t.new, t.reason)
            return
        self.metrics.check_state.labels(t.check).state(t.new)
        self.metrics.transitions.labels(t.check, t.new).inc()
        if t.old != "unknown":
            self.metrics.check_flaps.labels(t.check).inc()
        self.events.write("check", check=t.check, old=t.old, new=t.new, reason=t.reason,
                          latency_ms=round(result.latency * 1000, 3))
        log.info("check %s %s -> %s: %s", t.check, t.old, t.new, t.reason)

    # --- drain -------------------------------------------------------------------

    def poll_drain(self, now: float) -> None:
        early = self.cfg.drain_poll_ms / 2000  # awake anyway: look a little early
        if not self.hup and now < self.next_drain_poll - early:
            return
        self.hup = False
        self.next_drain_poll = now + self.cfg.drain_poll_ms / 1000
        drained = self.cfg.drain_file.exists()
        if self.site.set_drained(drained, now):
            self.metrics.drained.set(1 if drained else 0)
            self.events.write("drain", drained=drained, file=str(self.cfg.drain_file))
            log.info("%s (%s)", "drained" if drained else "undrained", self.cfg.drain_file)
            self.write_state()

    # --- last site standing (keep-last) -------------------------------------------

    def poll_routes(self, now: float) -> None:
        """Ask the shim which other sites' anycast routes our router sends us."""
        if not self.site.keep_last or not self.link.connected or now < self.next_routes_poll:
            return
        self.next_routes_poll = now + self.cfg.routes_poll_ms / 1000
        try:
            reply = self.link.command("routes", self.cfg.command_timeout_ms / 1000)
        except ShimError as exc:
            self.lost_link(str(exc), time.monotonic())
            return
        routes = reply.get("routes") if isinstance(reply.get("routes"), dict) else {}
        healthy = any(isinstance(r, dict) and not r.get("gshut") for r in routes.values())
        if reply.get("session") == "up":
            self.site.set_others(healthy, bool(routes))
        else:  # no session, or one the shim has not seen come up: routes unknown
            self.site.others_unknown()
        if routes != self.others_seen:
            self.others_seen = routes
            self.events.write("other-routes", routes=routes, healthy=healthy)
            self.write_state()

    def note_last_site(self, reason: str) -> None:
        kept = reason.startswith("last site standing")
        if kept and not self.kept_last:
            self.metrics.last_site_kept.inc()
            self.events.write("last-site-kept", reason=reason, route=self.site.route)
            log.warning("%s", reason)
        elif self.kept_last and not kept:
            self.events.write("last-site-released", reason=reason)
            log.info("no longer kept as the last site: %s", reason)
        self.kept_last = kept
        self.metrics.last_site.set(1 if kept else 0)

    # --- the shim ----------------------------------------------------------------

    def keep_link(self, now: float, early: bool = False) -> None:
        if self.link.connected:
            try:
                self.link.keepalive_if_due(now, self.link.keepalive_s / 4 if early else 0.0)
            except ShimError as exc:
                self.lost_link(str(exc), now)
            return
        if now < self.next_connect:
            return
        self.next_connect = now + self.cfg.reconnect_ms / 1000
        try:
            reply = self.link.open()
        except ShimError as exc:
            if str(exc) != self.shim_problem:
                log.warning("%s (retrying every %d ms)", exc, self.cfg.reconnect_ms)
                self.shim_problem = str(exc)
            return
        self.shim_problem = None
        self.site.link_lost(now)  # a new controller starts from what the shim has:
        self.site.route = SHIM_ROUTES.get(str(reply.get("state")), "unknown")
        self.metrics.shim_connected.set(1)
        self.metrics.set_route(self.site.route)
        self.events.write("shim", connected=True, answer=reply)
        log.info("controlling the shim at %s (watchdog %d ms, route %s)",
                 self.cfg.shim_socket, reply["watchdog_ms"], self.site.route)
        self.write_state()

    def lost_link(self, why: str, now: float) -> None:
        self.link.close()
        self.site.link_lost(now)  # the shim withdraws when its controller goes
        self.metrics.shim_connected.set(0)
        self.metrics.set_route(self.site.route)
        self.events.write("shim", connected=False, reason=why)
        log.warning("%s: the shim withdraws; reconnecting", why)
        self.next_connect = now  # at once: a restarted shim is back in ~50 ms
        self.write_state()

    def decide(self, now: float) -> None:
        if not self.link.connected:
            self.wake_at = None
            return
        decision = self.site.next_action(now)
        self.wake_at, self.decision_reason = decision.wake_at, decision.reason
        if self.site.keep_last:
            self.note_last_site(decision.reason)
        if decision.action is not None:
            self.send(decision.action, decision.reason, now)
            self.wake_at = time.monotonic()  # decide again at once (e.g. the drain's timer)

    def send(self, action: str, reason: str, now: float) -> None:
        command = SHIM_COMMANDS[action]
        old = self.site.route
        try:
            reply = self.link.command(command, self.cfg.command_timeout_ms / 1000)
        except ShimError as exc:
            self.metrics.commands.labels(command, "fail").inc()
            self.events.write("action", action=command, reason=reason, ok=False,
                              error=str(exc))
            self.lost_link(str(exc), time.monotonic())
            return
        done = time.monotonic()
        ok = bool(reply.get("ok"))
        self.site.applied(action, ok, done)
        self.metrics.commands.labels(command, "ok" if ok else "fail").inc()
        self.metrics.set_route(self.site.route)
        self.events.write("action", action=command, reason=reason, ok=ok, answer=reply,
                          old=old, new=self.site.route, elapsed_ms=round((done - now) * 1000, 3))
        (log.info if ok else log.error)("%s (%s): %s", command, reason,
                                        "ok" if ok else f"FAILED: {reply.get('detail')}")
        self.write_state()

    # --- state file --------------------------------------------------------------

    def wall(self, mono: float | None) -> str | None:
        if mono is None or mono == float("-inf"):
            return None
        return iso(mono + self.wall_offset)

    def summary(self) -> str:
        """One word for `anycast-lab status`."""
        s = self.site
        if s.drained:
            return "draining" if s.route == "gshut" else "drained"
        return {"unknown": "starting"}.get(s.health, s.health)

    def write_state(self, running: bool = True) -> None:
        s = self.site
        doc = {
            "site": self.cfg.site, "pid": os.getpid(), "running": running,
            "updated": iso(time.time()),
            "health": self.summary() if running else "stopped",
            "healthy": s.healthy, "health_reason": s.health_reason,
            "health_since": self.wall(s.health_since),
            "drained": s.drained, "drained_since": self.wall(s.drained_since),
            "route": s.route, "route_since": self.wall(s.route_since),
            "decision": self.decision_reason, "shim_connected": self.link.connected,
            "flaps": s.flaps, "route_changes": s.route_changes,
            "hold_down_ms": round(s.hold_down * 1000),
            "saturation": {"policy": self.cfg.saturation, "saturated": self.saturated},
            "last_site": {"policy": self.cfg.last_site, "kept": self.kept_last,
                          "since": self.wall(s.last_since), "expired": s.last_expired,
                          "other_routes": self.others_seen},
            "checks": {
                name: {"state": t.state, "required": t.required, "since": self.wall(t.since),
                       "reason": t.reason, "last_result": t.last_result, "flaps": t.flaps,
                       "transitions": t.transitions,
                       "latency_ms": (round(self.latency[name] * 1000, 3)
                                      if name in self.latency else None),
                       "timing": self.timing[name]}
                for name, t in s.checks.items()
            },
        }
        try:
            replace_state_file(self.cfg.state_file, doc)
        except OSError as exc:
            log.warning("cannot write the state file %s: %s", self.cfg.state_file, exc)
