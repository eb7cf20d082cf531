"""Process runner: start programs inside a node's namespace, stop them by PID.

A child is started as `nsenter --net=/run/netns/NAME -- PROGRAM ...`: nsenter joins the
namespace and execs the program in place (same PID, no fork, nothing in Python runs in
the forked child, so starting is safe while other threads run). The lab's own Python
daemons (`python -m` one of LAUNCHED) are instead forked, already imported, by one
launcher per lab and command (`lab.host.zygote`): same namespace, log, environment and
records, a fraction of the start-up cost and shared memory. Each child writes to its
own log file, carries the lab's marker in its environment (ANYCAST_LAB=<lab>,
ANYCAST_LAB_NODE=<node>) and is recorded in the journal with its own argv, its PID and
kernel start time, so we only ever signal processes we started.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from lab.host.env import require_tools
from lab.host.journal import Journal, ProcessRecord, valid_lab_name
from lab.shared.wait import wait_until

MARKER = "ANYCAST_LAB"
NODE_MARKER = "ANYCAST_LAB_NODE"
NETNS_DIR = Path("/run/netns")
KILL_WAIT_S = 2.0  # how long a SIGKILLed process may take to be gone (milliseconds, normally)
# What the launcher runs: `python -m MODULE` daemons and console scripts of this
# interpreter's environment, each with what its entry point imports.
# The introspection service's list also names what uvicorn and anyio import only once
# the server runs (its event loop, TLS streams, OpenSSL backend): shared, not per child.
_SERVED = ("anyio._backends._asyncio,anyio.streams.tls,anyio.streams.stapled,"
           "anyio.streams.memory,anyio.lowlevel,cryptography.hazmat.backends.openssl,"
           "uvicorn.lifespan.off,uvicorn.loops.asyncio,uvicorn.loops.auto")
LAUNCHED = {"lab.sites.health": "lab.sites.health.cli",
            "lab.sites.introspect": f"lab.sites.introspect.server,{_SERVED}",
            "lab.sites.issuer": f"lab.sites.issuer.server,{_SERVED}"}
LAUNCHED_SCRIPTS = {"exabgp": "exabgp.application.main"}
LAUNCHER_ENV = "ANYCAST_LAB_LAUNCHER"  # "exec": start every daemon by nsenter (to compare)
LAUNCHER_TIMEOUT_S = 30.0


def enter_netns(netns: str):
    """A function that moves the calling process into `netns` (never creating it). Only
    for a single-threaded process about to exec (`anycast-lab exec`); never as a
    preexec_fn: children are started in their namespace by `in_netns`."""
    from pyroute2.netns import setns  # only here: pyroute2 takes ~0.2 s to import

    def _enter() -> None:
        setns(netns, flags=0)

    return _enter


def in_netns(netns: str, argv: Sequence[str], path: str | None = None) -> list[str]:
    """The argv that runs `argv` inside `netns`: nsenter joins the namespace and execs the
    program in place. Refuses up front, as exec would, a namespace or program that does
    not exist (`path`: the child's PATH, for finding the program)."""
    netns_file = NETNS_DIR / netns
    if not netns_file.exists():
        raise FileNotFoundError(f"no network namespace {netns} ({netns_file} is missing)")
    if shutil.which(argv[0], path=path) is None:
        raise FileNotFoundError(f"no program {argv[0]!r} to run in {netns}")
    nsenter = require_tools(["nsenter"])["nsenter"]
    return [nsenter, f"--net={netns_file}", "--", *argv]


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 (the state) on. The command name (field 2) is anybody's
    choice: it may hold spaces, parentheses and bytes that are not UTF-8, so it is read as
    bytes and skipped up to its last closing parenthesis. OSError if the process is gone."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return stat[stat.rfind(b")") + 2:].decode("ascii").split()


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (the state) on, or None if the process is gone."""
    try:
        return _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):  # a zombie has finished
        return None
    return int(fields[19])


def is_stopped(pid: int) -> bool:
    """The process is stopped by a signal (SIGSTOP: state T)."""
    fields = _stat(pid)
    return fields is not None and fields[0] == "T"


def is_running(record: ProcessRecord) -> bool:
    return start_time(record.pid) == record.start_time


def _all_uids_root(pid: int) -> bool:
    """Real, effective, saved and filesystem UIDs all 0 (a process cannot fake this,
    unlike the owner of /proc/PID, which a non-dumpable process hands to root)."""
    try:  # bytes: the Name line is the process's own choice, not always UTF-8
        for line in Path(f"/proc/{pid}/status").read_bytes().splitlines():
            if line.startswith(b"Uid:"):
                return all(u == b"0" for u in line.split()[1:])
    except OSError:
        return False
    return False


def _netns_inode(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def ancestors() -> set[int]:
    """This process and every process above it: never signalled by teardown (a `down`
    run from an `exec` shell carries the lab's marker)."""
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(_stat_fields(pid)[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def marker_of(pid: int) -> str | None:
    """The lab named by the process's marker, if it carries one (None: gone, unreadable,
    unmarked)."""
    prefix = f"{MARKER}=".encode()
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    if prefix not in env:
        return None
    found = next((item[len(prefix):] for item in env.split(b"\0") if item.startswith(prefix)),
                 None)
    return None if found is None else found.decode(errors="replace")


def _markers() -> Iterator[tuple[int, str]]:
    """(pid, lab) for every live process that is marked as a lab's and can be one of
    ours: run by root (all UIDs 0), outside the host's own network namespace (every lab
    process runs in a lab namespace), a valid lab name in full, and neither this process
    nor one of its ancestors. Anything else carrying the marker is a stranger's."""
    host_netns = _netns_inode(1)
    mine = ancestors()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        lab = marker_of(pid)
        if (lab is None or not valid_lab_name(lab) or pid in mine or not _all_uids_root(pid)
                or _netns_inode(pid) in (None, host_netns)):
            continue
        yield pid, lab


def marked_pids(lab: str) -> list[int]:
    """PIDs of ours whose environment carries this lab's marker (finds what a crash left)."""
    return [pid for pid, marked in _markers() if marked == lab]


def marked_labs() -> set[str]:
    """Every lab name found in a marker of ours (whatever its journal says)."""
    return {marked for _pid, marked in _markers()}


def marked_cwds() -> dict[str, set[str]]:
    """Every lab name found in a marker of ours, with its processes' working directories
    (as /proc shows them; a process that is gone or unreadable adds none)."""
    out: dict[str, set[str]] = {}
    for pid, lab in _markers():
        cwds = out.setdefault(lab, set())
        try:
            cwds.add(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
    return out


def _scripts() -> dict[str, str]:
    """Console scripts the launcher may run: {path: preload}, from this interpreter's bin."""
    bin_dir = Path(sys.executable).parent
    return {str(bin_dir / name): preload for name, preload in LAUNCHED_SCRIPTS.items()
            if (bin_dir / name).is_file()}


def _targets() -> dict[str, str]:
    return {**LAUNCHED, **_scripts()}


def _launched(argv: Sequence[str]) -> tuple[str, int] | None:
    """(target, arguments to skip) when the launcher runs `argv`: `python -m MODULE ...`
    for one of LAUNCHED, or one of this environment's LAUNCHED_SCRIPTS; else None."""
    if os.environ.get(LAUNCHER_ENV) == "exec" or not argv:
        return None
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m" and argv[2] in LAUNCHED:
        return argv[2], 3
    if argv[0] in _scripts():
        return argv[0], 1
    return None


class Launcher:
    """One lab's pre-imported launcher (`lab.host.zygote`), started on first use by this
    command (or ahead of it: `warm_launcher`) and recorded like every process; it exits
    when this command ends. Any number of threads may ask it to fork at once: each
    request carries an id, one reader thread hands each answer to the thread that asked,
    and the launcher forks the next daemon while earlier ones are still getting ready."""

    _by_lab: dict[str, Launcher] = {}
    _guard = threading.Lock()

    def __init__(self, journal: Journal) -> None:
        self.lock = threading.Lock()  # one request written at a time; guards _waiting
        self._waiting: dict[int, Future[dict | None]] = {}
        self._ids = itertools.count(1)
        self._gone = False
        self.lab = journal.lab
        argv = [sys.executable, "-m", "lab.host.zygote",
                *(f"{target}={preload}" for target, preload in _targets().items())]
        log_path = journal.dir / "launcher.log"
        journal.record("process-intent", name="launcher", node="", argv=argv, netns=None,
                       log_path=str(log_path), env={}, cwd=str(journal.dir))
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                # SPT_NOENV: a child's title never overwrites the environment block, which
                # carries the lab's marker.
                env={**_base_env(journal.lab), "SPT_NOENV": "1"}, cwd=journal.dir,
                start_new_session=True,
                text=True)
        journal.record("process", name="launcher", node="", pid=self.proc.pid,
                       start_time=start_time(self.proc.pid) or 0)
        self._reader = threading.Thread(target=self._read_answers, daemon=True,
                                        name=f"launcher-{journal.lab}")
        self._reader.start()

    @classmethod
    def of(cls, journal: Journal) -> Launcher:
        with cls._guard:
            launcher = cls._by_lab.get(journal.lab)
            if launcher is None or launcher.proc.poll() is not None:
                launcher = cls._by_lab[journal.lab] = cls(journal)
            return launcher

    @classmethod
    def close_all(cls) -> None:
        """Close every launcher's stdin and wait for it to exit (its children stay)."""
        with cls._guard:
            launchers, cls._by_lab = list(cls._by_lab.values()), {}
        for launcher in launchers:
            if launcher.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    launcher.proc.stdin.close()
            launcher.proc.wait(timeout=LAUNCHER_TIMEOUT_S)
            launcher._reader.join(timeout=LAUNCHER_TIMEOUT_S)

    def _read_answers(self) -> None:
        """Hand each answer to the request it names; when the launcher's output ends,
        every request still waiting learns that it is gone."""
        assert self.proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            for line in self.proc.stdout:
                try:
                    reply = json.loads(line)
                except json.JSONDecodeError:
                    continue
                with self.lock:
                    waiting = self._waiting.pop(reply.get("id"), None)
                if waiting is not None:
                    waiting.set_result(reply)
                else:
                    self._stop_unrecorded(reply)
        with self.lock:
            self._gone = True
            left, self._waiting = list(self._waiting.values()), {}
        for waiting in left:
            waiting.set_result(None)

    def _stop_unrecorded(self, reply: dict) -> None:
        """A daemon forked for a request that gave up waiting (`ask` timed out) runs
        without a record: nothing would see or restart it, and a second could be started
        beside it. It is ours (forked by our launcher, marked with our lab), so stop it."""
        pid = reply.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or "exit" in reply or pid <= 1:
            return
        if marker_of(pid) == self.lab and _all_uids_root(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def fork(self, target: str, skip: int, argv: Sequence[str], netns: str | None,
             log_path: Path, env: dict[str, str], cwd: Path) -> int:
        """The PID of the daemon the launcher forked (RuntimeError if it could not)."""
        reply = self.ask({"target": target, "skip": skip, "argv": list(argv),
                          "netns": netns, "log_path": str(log_path), "env": env,
                          "cwd": str(cwd)}, LAUNCHER_TIMEOUT_S)
        return int(reply["pid"])

    def run(self, target: str, skip: int, argv: Sequence[str], log_path: Path,
            env: dict[str, str], cwd: Path, timeout_s: float) -> tuple[int | None, bool]:
        """Run a short program (a config check) in this namespace to its end: its exit
        code (None if it ended without one: killed), and whether the launcher stopped it
        at `timeout_s` (it does, as subprocess.run would: nothing is left running). Its
        output is in `log_path`."""
        reply = self.ask({"target": target, "skip": skip, "argv": list(argv), "netns": None,
                          "log_path": str(log_path), "env": env, "cwd": str(cwd),
                          "wait": True, "timeout_s": timeout_s},
                         timeout_s + LAUNCHER_TIMEOUT_S)
        code = reply.get("exit")
        return (code if isinstance(code, int) else None), reply.get("killed") == "timeout"

    def ask(self, request: dict, timeout_s: float) -> dict:
        """Send one request and wait for its answer (RuntimeError: no pid in it)."""
        rid = next(self._ids)
        answer: Future[dict | None] = Future()
        with self.lock:
            if self._gone:
                raise RuntimeError("the daemon launcher exited (see launcher.log)")
            self._waiting[rid] = answer
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps({"id": rid, **request}) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as gone:
                self._waiting.pop(rid, None)
                raise RuntimeError(f"the daemon launcher is gone: {gone}") from gone
        try:
            reply = answer.result(timeout=timeout_s)
        except FutureTimeout:
            with self.lock:
                self._waiting.pop(rid, None)
            raise RuntimeError(f"the daemon launcher did not answer in {timeout_s:.0f} s "
                               "(see launcher.log)") from None
        if reply is None:
            raise RuntimeError("the daemon launcher exited (see launcher.log)")
        if "pid" not in reply:
            raise RuntimeError(f"the daemon launcher refused: {reply.get('error')}")
        return reply


def warm_launcher(journal: Journal) -> bool:
    """Start the lab's launcher now, so that its imports are done by the time the first
    config check or daemon needs it; False (nothing started) when daemons are started by
    exec (ANYCAST_LAB_LAUNCHER=exec) or none of the launched programs is installed."""
    if os.environ.get(LAUNCHER_ENV) == "exec" or not _targets():
        return False
    Launcher.of(journal)
    return True


def run_check(journal: Journal, argv: Sequence[str], env: dict[str, str] | None,
              timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run a short command (a daemon's config check) to its end, as subprocess.run with
    captured text output would (stderr folded into stdout). One of the lab's own Python
    programs runs in the lab's launcher, already imported (no interpreter start); any
    other command, or all with ANYCAST_LAB_LAUNCHER=exec, as a child of this process."""
    launched = _launched(argv)
    child_env = dict(os.environ) if env is None else env
    if launched is None:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s,
                              check=False, env=child_env)
    fd, name = tempfile.mkstemp(prefix=".check-", suffix=".log", dir=journal.dir)
    os.close(fd)
    out = Path(name)
    try:
        code, stopped = Launcher.of(journal).run(*launched, argv, out, child_env,
                                                 journal.dir, timeout_s)
        text = out.read_text(errors="replace")
    finally:
        out.unlink(missing_ok=True)
    if stopped:
        text += f"\nstopped after {timeout_s:g} s: the check did not finish\n"
    return subprocess.CompletedProcess(list(argv), 1 if code is None else code, text, "")


def _base_env(lab: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8", MARKER: lab}


def start(journal: Journal, *, name: str, node: str, netns: str | None, argv: Sequence[str],
          log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> ProcessRecord:
    """Start `argv` in `netns` and record it; returns the journal record."""
    journal.record("process-intent", name=name, node=node, argv=list(argv), netns=netns,
                   log_path=str(log_path), env=env or {}, cwd=str(cwd) if cwd else None)
    child_env = {**_base_env(journal.lab), NODE_MARKER: node, **(env or {})}
    launched = _launched(argv)
    if launched is not None:
        if netns and not (NETNS_DIR / netns).exists():
            raise FileNotFoundError(f"no network namespace {netns} ({NETNS_DIR / netns} is "
                                    "missing)")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        pid = Launcher.of(journal).fork(*launched, argv, netns, log_path, child_env,
                                        cwd or journal.dir)
        return _recorded(journal, name, node, pid)
    command = in_netns(netns, argv, child_env["PATH"]) if netns else list(argv)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=child_env, cwd=cwd or journal.dir, start_new_session=True,
        )
    # We never wait() for daemons we leave running; forget the handle without a warning.
    proc.returncode = 0
    # nsenter execs the program in place: the PID and start time are the program's own.
    return _recorded(journal, name, node, proc.pid)


def _recorded(journal: Journal, name: str, node: str, pid: int) -> ProcessRecord:
    started = start_time(pid) or 0
    journal.record("process", name=name, node=node, pid=pid, start_time=started)
    return ProcessRecord(name, node, pid, started)


def last_intent(journal: Journal, name: str) -> dict | None:
    """How a process was last started (its journal intent: argv, netns, log path...)."""
    return next((e for e in reversed(journal.entries())
                 if e["kind"] == "process-intent" and e["name"] == name), None)


def restart(journal: Journal, name: str) -> ProcessRecord:
    """Start a process again exactly as it was last started (from its journal intent)."""
    intent = last_intent(journal, name)
    if intent is None:
        raise KeyError(name)
    return start(journal, name=name, node=intent["node"], netns=intent.get("netns"),
                 argv=intent["argv"], log_path=Path(intent["log_path"]),
                 env=intent.get("env") or {},
                 cwd=Path(intent["cwd"]) if intent.get("cwd") else None)


def running(journal: Journal, name: str) -> ProcessRecord | None:
    """The live process of that name started by this lab, if any."""
    for record in reversed(journal.owned().processes):
        if record.name == name and is_running(record):
            return record
    return None


def stop(record: ProcessRecord, grace_s: float = 3.0) -> bool:
    """SIGTERM, wait up to `grace_s`, then SIGKILL. True if it was running."""
    if not is_running(record):
        return False
    return stop_pid(record.pid, grace_s, record.start_time)


def stop_pid(pid: int, grace_s: float, expected_start: int | None = None) -> bool:
    """Stop one PID we own; `expected_start` guards against a recycled PID."""
    if expected_start is not None and start_time(pid) != expected_start:
        return False
    return _terminate({pid: expected_start}, grace_s)


def _gone(pid: int, expected_start: int | None) -> bool:
    """The process has exited (or its PID now names another process)."""
    now = start_time(pid)
    return now is None or (expected_start is not None and now != expected_start)


def _terminate(pids: dict[int, int | None], grace_s: float) -> bool:
    """The one stop loop: SIGTERM, up to `grace_s` for them to exit, then SIGKILL to the
    rest and up to KILL_WAIT_S ({pid: start time or None}). True when all are gone."""
    left = dict(pids)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, KILL_WAIT_S)):
        left = {p: s for p, s in left.items() if not _gone(p, s)}
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

        def all_gone(waiting: dict[int, int | None] = left) -> bool:
            for pid in waiting:
                _reap(pid)
            return all(_gone(p, s) for p, s in waiting.items())

        if wait_until(all_gone, wait_s, interval_s=0.01):
            return True
    return False


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child (else: nothing to do)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def run_in(netns: str, argv: Sequence[str], timeout: float = 10.0,
           input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short command inside a namespace and wait for it (for checks and helpers)."""
    return subprocess.run(in_netns(netns, argv), capture_output=True, text=True,
                          timeout=timeout, input=input_text, check=False)


def stop_many(pids: dict[int, int], grace_s: float = 3.0) -> int:
    """Stop several owned processes at once ({pid: start_time}); returns how many ran."""
    running: dict[int, int | None] = {p: s for p, s in pids.items() if start_time(p) == s}
    _terminate(running, grace_s)
    return len(running)
