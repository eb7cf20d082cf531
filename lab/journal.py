"""The lab's journal: what the lab owns, written down *before* it is created.

One directory per lab under the run root (default `/run/anycast-lab/<lab>/`, override
with ANYCAST_LAB_RUN_DIR). `journal.jsonl` is append-only and fsynced: each line is an
intent ("netns", "link", "process-intent") or a fact learned after creation ("process"
with its PID and start time). Replaying it gives the set of things teardown must remove,
so `down` works after a crash, without the topology file, and twice in a row.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_RUN_ROOT = "/run/anycast-lab"
JOURNAL = "journal.jsonl"
STATE = "state.json"


def run_root() -> Path:
    return Path(os.environ.get("ANYCAST_LAB_RUN_DIR", DEFAULT_RUN_ROOT))


def lab_dir(lab: str) -> Path:
    return run_root() / lab


def existing_labs() -> list[str]:
    root = run_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / JOURNAL).exists())


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    node: str
    pid: int
    start_time: int  # /proc/PID/stat field 22: identifies the process beyond its PID


@dataclass
class Owned:
    """What the journal says the lab owns (the result of a replay)."""

    namespaces: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (netns, ifname)
    processes: list[ProcessRecord] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def replay(entries: Iterable[dict[str, Any]]) -> Owned:
    """Fold journal entries into what is owned; later 'gone' entries cancel earlier ones."""
    namespaces: dict[str, None] = {}
    links: dict[tuple[str, str], None] = {}
    processes: dict[int, ProcessRecord] = {}
    files: dict[str, None] = {}
    for e in entries:
        kind, op = e.get("kind"), e.get("op", "create")
        if kind == "netns":
            if op == "gone":
                namespaces.pop(e["name"], None)
            else:
                namespaces[e["name"]] = None
        elif kind == "link":
            key = (e["netns"], e["ifname"])
            if op == "gone":
                links.pop(key, None)
            else:
                links[key] = None
        elif kind == "process":
            if op == "gone":
                processes.pop(e["pid"], None)
            else:
                processes[e["pid"]] = ProcessRecord(e["name"], e["node"], e["pid"],
                                                    e["start_time"])
        elif kind == "file":
            if op == "gone":
                files.pop(e["path"], None)
            else:
                files[e["path"]] = None
    # A link lives in its namespace: it goes when the namespace goes.
    live_links = [ln for ln in links if ln[0] in namespaces]
    return Owned(list(namespaces), live_links, list(processes.values()), list(files))


class Journal:
    """Append-only, fsynced record of a lab's kernel objects and processes."""

    def __init__(self, lab: str, directory: Path | None = None) -> None:
        self.lab = lab
        self.dir = directory or lab_dir(lab)
        self.path = self.dir / JOURNAL

    def exists(self) -> bool:
        return self.path.exists()

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.path.touch(exist_ok=True)

    def record(self, kind: str, op: str = "create", **fields: Any) -> None:
        entry = {"t": round(time.time(), 6), "kind": kind, "op": op, **fields}
        line = json.dumps(entry, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # The last line was torn by a crash: end it, so this entry stays whole.
                line = "\n" + line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        """All complete entries; a line torn by a crash mid-write is skipped."""
        if not self.path.exists():
            return []
        out = []
        for raw in self.path.read_text().splitlines():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return out

    def owned(self) -> Owned:
        return replay(self.entries())

    # The lab's phase ("building", "up", "tearing-down"), for `up` and `status`.
    def set_state(self, **state: Any) -> None:
        current = self.state()
        current.update(state)
        tmp = self.dir / (STATE + ".tmp")
        tmp.write_text(json.dumps(current, indent=2, sort_keys=True))
        os.replace(tmp, self.dir / STATE)

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / STATE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
