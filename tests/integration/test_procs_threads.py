"""The process runner starts children in the right namespace while other threads are busy
(socket I/O, allocation, sockets made in another namespace), as `measure` does when it
restarts daemons under running probe threads; `restart` replays the daemon's own argv."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import netns

from lab.host import procs
from lab.host.journal import Journal
from lab.shared.nsnet import socket_in

from .helpers import unique_name, wait_for

STARTS = 50


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """Two namespaces of this test's own: the target, and one busy threads talk in."""
    names = (unique_name("procs-target"), unique_name("procs-busy"))
    for name in names:
        netns.create(name)
    try:
        yield names
    finally:
        for name in names:
            netns.remove(name)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    """A journal in a temporary directory; every process it records is stopped after."""
    journal = Journal(unique_name("procs"), directory=tmp_path / "lab")
    journal.open()
    yield journal
    procs.stop_many({r.pid: r.start_time for r in journal.owned().processes}, grace_s=1.0)


def ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def busy_threads(stop: threading.Event, busy_ns: str) -> list[threading.Thread]:
    """Threads doing socket I/O, allocating, and making sockets in another namespace."""

    def echo() -> None:
        a, b = socket.socketpair()
        with a, b:
            while not stop.is_set():
                a.sendall(b"x" * 4096)
                b.recv(65536)

    def allocate() -> None:
        while not stop.is_set():
            junk = [bytearray(1024) for _ in range(200)]
            del junk

    def elsewhere() -> None:
        while not stop.is_set():
            socket_in(busy_ns, socket.AF_INET, socket.SOCK_DGRAM).close()

    threads = [threading.Thread(target=f, daemon=True)
               for f in (echo, echo, allocate, allocate, elsewhere, elsewhere)]
    for t in threads:
        t.start()
    return threads


def exec_done(pid: int, program: str) -> bool:
    """True once the child has exec'd `program` (nsenter has done its part)."""
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")) == program
    except OSError:
        return False


def test_children_land_in_their_namespace_while_threads_run(namespaces, journal, tmp_path):
    target, busy = namespaces
    want = ns_inode(f"/run/netns/{target}")
    assert want != ns_inode("/proc/self/ns/net")
    stop = threading.Event()
    threads = busy_threads(stop, busy)
    sleep = os.path.realpath(shutil.which("sleep") or "/bin/sleep")
    try:
        records = [procs.start(journal, name=f"sleep-{i}@x", node="x", netns=target,
                               argv=[sleep, "60"], log_path=tmp_path / f"sleep-{i}.log")
                   for i in range(STARTS)]
        answers = [procs.run_in(target, ["readlink", "/proc/self/ns/net"]).stdout.strip()
                   for _ in range(STARTS)]
        assert all(t.is_alive() for t in threads)  # they were busy all along
    finally:
        stop.set()
        for t in threads:
            t.join(5)

    for record in records:
        wait_for(lambda r=record: exec_done(r.pid, os.path.basename(sleep)), timeout=5,
                 message=f"pid {record.pid} to exec sleep")
        assert ns_inode(f"/proc/{record.pid}/ns/net") == want
        assert procs.is_running(record)
    assert answers == [f"net:[{want}]"] * STARTS


def test_journal_keeps_the_programs_own_argv_and_restart_replays_it(namespaces, journal,
                                                                   tmp_path):
    target, _ = namespaces
    argv = ["sleep", "60"]
    first = procs.start(journal, name="sleep@x", node="x", netns=target, argv=argv,
                        log_path=tmp_path / "sleep.log")
    intents = [e for e in journal.entries() if e["kind"] == "process-intent"]
    assert [(e["argv"], e["netns"]) for e in intents] == [(argv, target)]

    assert procs.stop(first, grace_s=1.0)
    again = procs.restart(journal, "sleep@x")
    assert again.pid != first.pid
    wait_for(lambda: exec_done(again.pid, "sleep"), timeout=5, message="restarted sleep")
    assert ns_inode(f"/proc/{again.pid}/ns/net") == ns_inode(f"/run/netns/{target}")
    # During execve /proc/PID/exe changes before the new arguments are in place: poll.
    wait_for(lambda: Path(f"/proc/{again.pid}/cmdline").read_bytes().split(b"\0")[:2]
             == [b"sleep", b"60"], timeout=5, message="restarted sleep's arguments")
    assert procs.running(journal, "sleep@x") == again


def test_a_missing_namespace_or_program_is_refused_before_anything_starts(namespaces,
                                                                          journal, tmp_path):
    target, _ = namespaces
    missing = unique_name("procs-missing")
    with pytest.raises(FileNotFoundError, match="no network namespace"):
        procs.run_in(missing, ["true"])
    with pytest.raises(FileNotFoundError, match="no network namespace"):
        procs.start(journal, name="x@x", node="x", netns=missing, argv=["true"],
                    log_path=tmp_path / "x.log")
    assert missing not in netns.listnetns()  # never created by asking
    with pytest.raises(FileNotFoundError, match="no program"):
        procs.run_in(target, ["no-such-program-here"])
    with pytest.raises(FileNotFoundError, match="no program"):
        procs.start(journal, name="y@x", node="x", netns=target,
                    argv=["no-such-program-here"], log_path=tmp_path / "y.log")
    assert journal.owned().processes == []


def test_the_launcher_forks_a_preloaded_daemon_into_its_namespace(namespaces, journal,
                                                                  tmp_path, monkeypatch):
    """A `python -m MODULE` daemon the launcher runs is in its namespace, shows its own
    argv, carries the lab's marker, writes its log, outlives the launcher, stops by PID."""
    target, _ = namespaces
    monkeypatch.setattr(procs, "LAUNCHED", {"http.server": "socketserver"})
    monkeypatch.delenv(procs.LAUNCHER_ENV, raising=False)
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "8000"]
    log = tmp_path / "server.log"
    record = procs.start(journal, name="web@x", node="x", netns=target, argv=argv,
                         log_path=log, cwd=tmp_path)
    launcher = procs.running(journal, "launcher")
    assert launcher is not None and launcher.pid != record.pid
    assert ns_inode(f"/proc/{record.pid}/ns/net") == ns_inode(f"/run/netns/{target}")
    wait_for(lambda: "Serving HTTP" in log.read_text(), timeout=10, message="server log")
    title = Path(f"/proc/{record.pid}/cmdline").read_bytes().rstrip(b"\0").decode()
    assert title == " ".join(argv)
    environ = Path(f"/proc/{record.pid}/environ").read_bytes().split(b"\0")
    assert f"{procs.MARKER}={journal.lab}".encode() in environ
    assert record.pid in procs.marked_pids(journal.lab)

    procs.Launcher.close_all()
    assert not procs.is_running(launcher)
    assert procs.is_running(record)  # the daemon is not the launcher's to end
    assert procs.stop(record, grace_s=1.0)
    assert not procs.is_running(record)


def test_the_launcher_is_not_used_when_told_to_exec(namespaces, journal, tmp_path,
                                                   monkeypatch):
    target, _ = namespaces
    monkeypatch.setattr(procs, "LAUNCHED", {"http.server": "socketserver"})
    monkeypatch.setenv(procs.LAUNCHER_ENV, "exec")
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "8000"]
    record = procs.start(journal, name="web@x", node="x", netns=target, argv=argv,
                         log_path=tmp_path / "server.log", cwd=tmp_path)
    assert procs.running(journal, "launcher") is None
    wait_for(lambda: Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")[1:3]
             == [b"-m", b"http.server"], timeout=5, message="exec'd server")
    assert procs.stop(record, grace_s=1.0)


def test_many_threads_start_through_the_launcher_at_once(namespaces, journal, tmp_path,
                                                         monkeypatch):
    """Starts from several threads share one launcher (requests pipelined): each daemon
    is in its namespace with its own argv, and its intent is in the journal before its
    process record."""
    from concurrent.futures import ThreadPoolExecutor

    target, _ = namespaces
    monkeypatch.setattr(procs, "LAUNCHED", {"http.server": "socketserver"})
    monkeypatch.delenv(procs.LAUNCHER_ENV, raising=False)
    count = 16

    def one(i: int) -> procs.ProcessRecord:
        argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(8100 + i)]
        return procs.start(journal, name=f"web-{i}@x", node="x", netns=target, argv=argv,
                           log_path=tmp_path / f"web-{i}.log", cwd=tmp_path)

    with ThreadPoolExecutor(max_workers=8) as pool:
        records = list(pool.map(one, range(count)))
    assert len({r.pid for r in records}) == count
    want = ns_inode(f"/run/netns/{target}")
    for i, record in enumerate(records):
        assert procs.is_running(record)
        assert ns_inode(f"/proc/{record.pid}/ns/net") == want
        wait_for(lambda i=i: f"port {8100 + i}" in (tmp_path / f"web-{i}.log").read_text(),
                 timeout=10, message=f"server {i} serving")
    entries = journal.entries()
    for record in records:
        intent = next(k for k, e in enumerate(entries)
                      if e["kind"] == "process-intent" and e["name"] == record.name)
        fact = next(k for k, e in enumerate(entries)
                    if e["kind"] == "process" and e.get("pid") == record.pid)
        assert intent < fact
    launchers = [r for r in journal.owned().processes if r.name == "launcher"]
    assert len(launchers) == 1  # one launcher served every thread
    procs.Launcher.close_all()
