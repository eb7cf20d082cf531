"""A pre-imported launcher for the lab's own Python daemons (health daemon, introspection
service): it imports their modules once, then forks one child per daemon, which joins
its node's network namespace and runs the daemon's `python -m MODULE` entry point.

Paying the interpreter's start and the imports once, instead of once per daemon, is what
makes a large lab start fast; the children share the imported pages copy-on-write (the
imported objects are moved out of the garbage collector's reach with `gc.freeze()`, and
stay there in the children, so that their collections do not copy them).

The launcher is single-threaded, so forking it is safe. It talks to the process runner
(`lab.host.procs`) over its stdin/stdout, one JSON line per request and one per answer,
and exits when its stdin closes (the command that started it ended or died) and every
child it forked has answered. Requests are pipelined: the launcher forks as soon as a
request arrives, without waiting for earlier children, and answers each (its request's
`id` echoed, then `pid` or `error`) once that child has reported from its namespace, in
whatever order the children do. A child's report is its own; the launcher never waits
for one child to fork the next (on a busy machine a child may wait tens of milliseconds
for a core). Children are in a new session, with stdin on /dev/null and stdout/stderr on
their log file; they are reaped by the kernel (SIGCHLD ignored here) and outlive the
launcher. A request with `wait` (a config check: `exabgp validate`, `--check-config`)
is answered once its program has ended, with its exit code (`exit`); its output is in
its log file. With `timeout_s`, a program still running by then is killed (SIGKILL,
through a pidfd) and answered with `killed: "timeout"`, as subprocess.run would stop it;
the launcher stays until it has ended. When nobody reads the answers any more (the
runner died), the launcher still waits for the children that are getting ready.

Run as: python -m lab.host.zygote TARGET=PRELOAD[,PRELOAD...]...: a TARGET is a module it
may run as `python -m MODULE`, or the path of a Python console script (ExaBGP's `exabgp`);
a PRELOAD is what the target's entry point imports (importing a `__main__` would run
it), or a module the daemon would otherwise import only once it runs (then each child
would hold a copy of its own).

Each child caps glibc's malloc arenas (`mallopt(M_ARENA_MAX)`, what MALLOC_ARENA_MAX
would set had the child been exec'd): a daemon's threads then share a few arenas instead
of dirtying one each. Every
child's process title is set to the argv it stands for, so `ps` shows the daemon.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import importlib.util
import json
import math
import os
import runpy
import select
import signal
import sys
import time
from typing import Any

import setproctitle

CLONE_NEWNET = 0x40000000
M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENA_MAX = 2
NETNS_DIR = "/run/netns"


def _setns(netns: str) -> None:
    """Join /run/netns/NETNS (never creating it)."""
    if "/" in netns or netns in ("", ".", ".."):
        raise ValueError(f"bad namespace name {netns!r}")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _child(request: dict[str, Any], ready: int) -> None:
    """In the forked child: become the daemon. Writes "ok" (or why not) to `ready` once it
    is in its namespace, with its stdio, directory, title and environment; a request with
    `wait` (a short run such as a config check) keeps `ready` and writes " exit CODE" to
    it when the program ends. Never returns."""
    code = 1
    started = False
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        log = os.open(request["log_path"],
                      os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        top = min(os.sysconf("SC_OPEN_MAX"), 65536)
        os.closerange(3, ready)
        os.closerange(ready + 1, top)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the child's own stdio
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, ARENA_MAX)
        if request.get("netns"):
            _setns(request["netns"])
        os.chdir(request["cwd"])
        # Before the environment changes: with SPT_NOENV (set by the runner) the title
        # stays within the launcher's own argv and /proc/PID/environ keeps the marker.
        setproctitle.setproctitle(" ".join(request["argv"]))
        os.environ.clear()
        os.environ.update(request["env"])
        with contextlib.suppress(OSError):  # the launcher is gone: nobody to tell
            os.write(ready, b"ok")
        started = True
        if not request.get("wait"):
            os.close(ready)
            ready = -1  # from here on the daemon's own: its number may be reused
        target, args = request["target"], request["argv"][request["skip"]:]
        if target.startswith("/"):  # a console script: run it as its shebang would
            sys.argv = [target, *args]
            runpy.run_path(target, run_name="__main__")
        else:
            sys.argv = [target, *args]
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, (int, type(None))):
            with contextlib.suppress(Exception):
                print(done.code, file=sys.stderr)  # as the interpreter would
    except BaseException as failed:
        import traceback
        traceback.print_exc()
        if ready >= 0 and not started:
            with contextlib.suppress(OSError):
                os.write(ready, f"{type(failed).__name__}: {failed}".encode()[:500])
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            if ready >= 0 and started:
                with contextlib.suppress(OSError):
                    os.write(ready, f" exit {code}".encode())
            os._exit(code)


def _preload(pairs: list[str]) -> set[str]:
    """Import every PRELOAD; the TARGETs that may be run."""
    targets = set()
    for pair in pairs:
        target, _, preloads = pair.partition("=")
        for preload in preloads.split(","):
            importlib.import_module(preload)
        if target.startswith("/"):
            if not os.path.isfile(target):
                raise SystemExit(f"no script {target}")
        else:
            spec = importlib.util.find_spec(target)
            if spec is None or (spec.submodule_search_locations is not None
                                and importlib.util.find_spec(f"{target}.__main__") is None):
                raise SystemExit(f"{target} cannot be run with -m")
        targets.add(target)
    return targets


class _Pending:
    """A forked child that has not reported yet: its PID, the request's id, what it said;
    for a `wait` request with a `timeout_s`, when it is stopped and a handle to stop it
    by (a pidfd: the kernel reaps our children at once, so their PIDs may be reused)."""

    def __init__(self, pid: int, rid: Any, wait: bool, deadline: float | None = None) -> None:
        self.pid, self.rid, self.wait, self.said = pid, rid, wait, b""
        self.deadline, self.killed = deadline, False
        self.pidfd: int | None = None
        if deadline is not None:
            with contextlib.suppress(OSError):  # already gone: nothing to stop
                self.pidfd = os.pidfd_open(pid)

    def stop(self) -> None:
        """Past its deadline: SIGKILL the program (it is answered when its pipe closes)."""
        self.killed = True
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _timeout(request: dict[str, Any]) -> float | None:
    """A `wait` request's own limit in seconds, if it gives a sound one."""
    limit = request.get("timeout_s")
    if not request.get("wait") or isinstance(limit, bool) or not isinstance(limit, int | float):
        return None
    return float(limit) if 0 < limit < 3600 else None


def serve(pairs: list[str]) -> int:
    targets = _preload(pairs)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    gc.collect()
    gc.freeze()
    out = sys.stdout
    poller = select.poll()  # no descriptor of its own for the children to inherit
    poller.register(0, select.POLLIN)
    pending: dict[int, _Pending] = {}  # ready pipe's read end -> its child
    buffer = b""
    reading = True

    listening = True  # somebody reads the answers

    def answer(rid: Any, **what: Any) -> None:
        # Once nobody reads them (the runner died), the children still starting are
        # waited for as before; only their answers are dropped.
        nonlocal listening
        if not listening:
            return
        try:
            out.write(json.dumps({"id": rid, **what}) + "\n")
            out.flush()
        except (OSError, ValueError):
            listening = False

    def fork(line: bytes) -> None:
        rid = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            rid = request.get("id")
            target = request.get("target")
            if not isinstance(target, str) or target not in targets:
                raise ValueError(f"{target!r} is not preloaded here")
            read_end, write_end = os.pipe()
        except (ValueError, OSError) as failed:
            answer(rid if isinstance(rid, str | int) else None, error=str(failed))
            return
        try:
            pid = os.fork()
        except OSError as failed:  # e.g. the process limit
            os.close(read_end)
            os.close(write_end)
            answer(rid, error=f"cannot fork: {failed}")
            return
        if pid == 0:
            os.close(read_end)
            _child(request, write_end)
        os.close(write_end)
        limit = _timeout(request)
        pending[read_end] = _Pending(pid, rid, bool(request.get("wait")),
                                     None if limit is None else time.monotonic() + limit)
        poller.register(read_end, select.POLLIN)

    def poll_timeout_ms() -> int | None:
        """Until the nearest deadline of a running `wait` child (None: no deadline)."""
        deadlines = [c.deadline for c in pending.values()
                     if c.deadline is not None and not c.killed]
        if not deadlines:
            return None
        return max(0, math.ceil((min(deadlines) - time.monotonic()) * 1000))

    # Once stdin has closed nobody reads the answers: a child that is still getting ready
    # is waited for (it reports in moments), and so is a short run (`wait`) with a
    # deadline (it ends by then at the latest); one without is left to finish on its own.
    while reading or any(not child.wait or child.deadline is not None
                         for child in pending.values()):
        for fd, _event in poller.poll(poll_timeout_ms()):
            if fd == 0:
                chunk = os.read(0, 65536)
                if not chunk:  # the runner is done: answer what is pending, then exit
                    reading = False
                    poller.unregister(0)
                    continue
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        fork(line)
                continue
            child = pending[fd]
            chunk = os.read(fd, 512)
            if chunk and len(child.said) < 512:
                child.said += chunk
                continue
            if chunk:
                continue
            # EOF: the child closed its end (after "ok", or by exiting).
            poller.unregister(fd)
            os.close(fd)
            del pending[fd]
            child.close()
            said = child.said.decode(errors="replace")
            if child.killed:
                answer(child.rid, pid=child.pid, exit=None, killed="timeout")
            elif said == "ok":
                answer(child.rid, pid=child.pid)
            elif said.startswith("ok exit "):  # a `wait` request's program has ended
                answer(child.rid, pid=child.pid, exit=int(said.split()[-1]))
            elif said.startswith("ok"):  # ended without a word (killed, os._exit)
                answer(child.rid, pid=child.pid, exit=None)
            else:
                answer(child.rid,
                       error=f"the daemon failed before it started: {said or 'no word'}")
        now = time.monotonic()
        for child in pending.values():
            if child.deadline is not None and not child.killed and now >= child.deadline:
                child.stop()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
