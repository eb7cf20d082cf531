"""The lab's journal: what the lab owns, written down *before* it is created.

One directory per lab under the run root (default `/run/anycast-lab/<lab>/`, override
with ANYCAST_LAB_RUN_DIR). `journal.jsonl` is append-only: each line is an intent
("netns", "link", "process-intent") or a fact learned after creation ("process" with its
PID and start time). Replaying it gives the set of things teardown must remove
(namespaces and processes: a link goes with its namespace), so `down` works after a crash,
without the topology file, and twice in a row.

Durability. Every record is one `write()` to a file opened O_APPEND, made before the
namespace, link or process it names is created; it is not fsynced. What the record must
survive is a crash of the tool (the `up` process killed, an exception, Ctrl-C): the write
is then in the kernel's page cache, and every later reader (`down`, the next `up`) sees
it. Only a crash of the machine loses writes that were not flushed, and a machine crash
also destroys everything the record describes: namespaces, veths and processes do not
outlive a reboot. An fsync would make the record outlive objects that are already gone,
at a disk flush per namespace, link and daemon (milliseconds each, hundreds of them in a
large `up`). A tail lost or torn by a machine crash (a partial line, a run of NUL bytes)
is skipped by `entries`, and the next record starts on a line of its own. What does
outlive a reboot, and later runs trust, stays fsynced: the lab's state file (`set_state`:
written to a temporary file, fsynced, renamed) and the files other modules write durably
in the run directory (the lab's keys and certificates, revocation lists, the token store).
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.host import safefs
from lab.model import names
from lab.model.errors import BadInput, EnvironmentProblem
from lab.model.names import valid_lab_name

DEFAULT_RUN_ROOT = "/run/anycast-lab"


def require_lab_name(name: str) -> str:
    """Names from markers, arguments, the environment or directory listings count only
    if they pass the lab-name rule in full (`valid_lab_name`)."""
    if not valid_lab_name(name):
        raise BadInput(f"{name!r} is not a lab name (lowercase letters, digits and '-', "
                       "starting with a letter, at most 24 characters)")
    return name


def run_root() -> Path:
    raw = os.environ.get("ANYCAST_LAB_RUN_DIR") or DEFAULT_RUN_ROOT
    if not os.path.isabs(raw) or "\0" in raw:
        raise EnvironmentProblem(f"ANYCAST_LAB_RUN_DIR must be an absolute path, not "
                                 f"'{raw}': set it to a directory such as {DEFAULT_RUN_ROOT}")
    return Path(os.path.normpath(raw))


def ensure_run_root() -> Path:
    """The run root, created (or checked) root-owned and writable only by us."""
    root = run_root()
    if not root.parent.is_dir():
        raise EnvironmentProblem(f"the run directory's parent {root.parent} does not exist: "
                                 "create it, or set ANYCAST_LAB_RUN_DIR")
    return safefs.ensure_private_dir(root)


def lab_dir(lab: str) -> Path:
    return run_root() / require_lab_name(lab)


def _ours(path: Path) -> bool:
    """A directory entry we created: a real directory owned by us, not writable by others."""
    try:
        safefs.check_private_dir(path)
    except EnvironmentProblem:
        return False
    return True


def existing_labs() -> list[str]:
    """Labs with a journal in the run root; entries that are not valid lab names, not real
    directories or not owned by us are ignored."""
    root = run_root()
    if not root.is_dir() or not _ours(root):
        return []
    return sorted(p.name for p in root.iterdir()
                  if valid_lab_name(p.name) and _ours(p) and (p / names.JOURNAL).is_file()
                  and not (p / names.JOURNAL).is_symlink())


def lab_dirs_elsewhere(lab: str, cwds: Iterable[str], root: Path,
                       default_root: Path) -> list[Path]:
    """Where the directory of a lab that has no journal in `root` may be, under another
    run root (pure): the default run root's when `root` is another, and every directory
    named after the lab above one of its processes' working directories (a lab's
    processes run in its directory), but not in `root`. A working directory that was
    deleted (`... (deleted)`, as /proc shows it) is no lead."""
    found = [default_root / lab] if root != default_root else []
    for cwd in cwds:
        if cwd.endswith(" (deleted)") or not os.path.isabs(cwd):
            continue
        path = Path(cwd)
        found += [p for p in (path, *path.parents) if p.name == lab and p.parent != root]
    return list(dict.fromkeys(found))


def split_unjournaled(found: Iterable[str], journaled: Iterable[str],
                      elsewhere: Callable[[str], Path | None]) -> tuple[list[str], dict[str, Path]]:
    """The labs seen on this machine (markers, namespaces) that have no journal in this run
    root, split in two (pure): orphans (their journal is gone: ours to tear down), and
    labs whose journal `elsewhere` finds under another run root (name -> its directory):
    another run directory's labs, not ours."""
    orphans, others = [], {}
    for lab in sorted(set(found) - set(journaled)):
        where = elsewhere(lab)
        if where is None:
            orphans.append(lab)
        else:
            others[lab] = where
    return orphans, others


def journal_elsewhere(lab: str, cwds: Iterable[str]) -> Path | None:
    """The directory of `lab` under another run root that holds its journal, if any
    (`cwds`: its processes' working directories)."""
    root = Path(os.path.realpath(run_root()))
    default = Path(os.path.realpath(DEFAULT_RUN_ROOT))
    for lab_dir in lab_dirs_elsewhere(lab, cwds, root, default):
        journal = lab_dir / names.JOURNAL
        if journal.is_file() and not journal.is_symlink():
            return lab_dir
    return None


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    node: str
    pid: int
    start_time: int  # /proc/PID/stat field 22: identifies the process beyond its PID


@dataclass
class Owned:
    """What the journal says the lab owns and teardown removes (the result of a replay)."""

    namespaces: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)


def replay(entries: Iterable[dict[str, Any]]) -> Owned:
    """Fold journal entries into what is owned; later 'gone' entries cancel earlier ones.
    Entries of other kinds (links, process intents) are the record of what was done;
    teardown needs nothing from them."""
    namespaces: dict[str, None] = {}
    processes: dict[int, ProcessRecord] = {}
    for e in entries:
        kind, op = e.get("kind"), e.get("op", "create")
        if kind == "netns":
            if op == "gone":
                namespaces.pop(e["name"], None)
            else:
                namespaces[e["name"]] = None
        elif kind == "process":
            if op == "gone":
                processes.pop(e["pid"], None)
            else:
                processes[e["pid"]] = ProcessRecord(e["name"], e["node"], e["pid"],
                                                    e["start_time"])
    return Owned(list(namespaces), list(processes.values()))


class Journal:
    """Append-only record of a lab's kernel objects and processes (see the module's
    docstring for why records are written, not fsynced). Safe to use from several
    threads: records are whole lines, never interleaved."""

    def __init__(self, lab: str, directory: Path | None = None) -> None:
        self.lab = require_lab_name(lab)
        self.dir = directory or lab_dir(lab)
        self.path = self.dir / names.JOURNAL
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return self.path.exists()

    def open(self) -> None:
        if self.dir.parent == run_root():
            ensure_run_root()
        safefs.ensure_private_dir(self.dir)
        os.close(safefs.open_append(self.path))

    def record(self, kind: str, op: str = "create", **fields: Any) -> None:
        """Append one entry: one write, in the page cache when this returns (not fsynced:
        see the module's docstring)."""
        entry = {"t": round(time.time(), 6), "kind": kind, "op": op, **fields}
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
            try:
                with safefs.machine_errors(self.path):
                    size = os.fstat(fd).st_size
                    if size and os.pread(fd, 1, size - 1) != b"\n":
                        # The last line was torn by a crash: end it, so this entry stays
                        # whole.
                        line = b"\n" + line
                    written = os.write(fd, line)
                    if written != len(line):  # a full disk mid-line: say so, as fsync would
                        raise OSError(errno.ENOSPC, "short write to the journal",
                                      str(self.path))
            finally:
                os.close(fd)

    def record_best_effort(self, kind: str, op: str = "create", **fields: Any) -> bool:
        """Record if the disk lets us (teardown must go on when it is full or read-only)."""
        try:
            self.record(kind, op, **fields)
        except (OSError, EnvironmentProblem):
            return False
        return True

    def entries(self) -> list[dict[str, Any]]:
        """All complete entries; a line torn by a crash mid-write is skipped."""
        if not self.path.is_file() or self.path.is_symlink():
            return []
        out = []
        for raw in self.path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def owned(self) -> Owned:
        return replay(self.entries())

    # The lab's phase ("building", "up", "tearing-down"), for `up` and `status`.
    def set_state(self, **state: Any) -> None:
        current = self.state()
        current.update(state)
        safefs.write_json_atomic(self.dir / names.STATE, current)

    def set_state_best_effort(self, **state: Any) -> bool:
        try:
            self.set_state(**state)
        except (OSError, EnvironmentProblem):
            return False
        return True

    def state(self) -> dict[str, Any]:
        try:
            value = json.loads((self.dir / names.STATE).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return value if isinstance(value, dict) else {}
