"""The journal: replay logic, append-only records (one write each, no fsync), torn lines,
state, labs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from lab.host import journal as journal_mod
from lab.host.journal import (
    Journal,
    Owned,
    ProcessRecord,
    existing_labs,
    lab_dir,
    replay,
    run_root,
)
from lab.model.names import JOURNAL, STATE


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "run"
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(root))
    return root


def proc(pid: int, name: str = "bird", node: str = "r1", start: int = 100) -> dict[str, Any]:
    return {"kind": "process", "name": name, "node": node, "pid": pid, "start_time": start}


# --- replay ---------------------------------------------------------------------------

def test_replay_empty() -> None:
    owned = replay([])
    assert (owned.namespaces, owned.processes) == ([], [])


def test_replay_create_then_gone_cancels() -> None:
    owned = replay([
        {"kind": "netns", "op": "create", "name": "acl.x.r1"},
        {"kind": "netns", "name": "acl.x.r2"},  # op defaults to create
        {"kind": "netns", "op": "gone", "name": "acl.x.r1"},
    ])
    assert owned.namespaces == ["acl.x.r2"]


def test_replay_recreated_after_gone() -> None:
    owned = replay([
        {"kind": "netns", "name": "acl.x.r1"},
        {"kind": "netns", "op": "gone", "name": "acl.x.r1"},
        {"kind": "netns", "name": "acl.x.r1"},
    ])
    assert owned.namespaces == ["acl.x.r1"]


def test_replay_gone_without_create_is_harmless() -> None:
    owned = replay([{"kind": "netns", "op": "gone", "name": "acl.x.r9"},
                    {"kind": "process", "op": "gone", "pid": 42},
                    {"kind": "link", "op": "gone", "netns": "acl.x.r1", "ifname": "r2"}])
    assert (owned.namespaces, owned.processes) == ([], [])


def test_replay_keeps_first_seen_order_without_duplicates() -> None:
    owned = replay([{"kind": "netns", "name": n} for n in ("b", "a", "b", "c")])
    assert owned.namespaces == ["b", "a", "c"]


def test_replay_links_go_with_their_namespace() -> None:
    """A link is recorded, but teardown removes its namespace, never the link itself:
    links (even in a namespace the journal does not know) add nothing to what is owned."""
    owned = replay([
        {"kind": "netns", "name": "acl.x.r1"},
        {"kind": "netns", "name": "acl.x.r2"},
        {"kind": "link", "netns": "acl.x.r1", "ifname": "r2"},
        {"kind": "link", "netns": "acl.x.r2", "ifname": "r1"},
        {"kind": "link", "netns": "acl.x.ghost", "ifname": "r1"},
        {"kind": "netns", "op": "gone", "name": "acl.x.r1"},
    ])
    assert owned == Owned(["acl.x.r2"], [])


def test_replay_process_records() -> None:
    owned = replay([
        {"kind": "process-intent", "name": "bird", "node": "r1"},
        proc(10, "bird", "r1", 111),
        proc(11, "exabgp", "s1", 222),
        proc(12, "unbound", "s1", 333),
        {"kind": "process", "op": "gone", "pid": 11},
    ])
    assert owned.processes == [ProcessRecord("bird", "r1", 10, 111),
                               ProcessRecord("unbound", "s1", 12, 333)]


def test_replay_process_pid_reused_keeps_latest_record() -> None:
    owned = replay([proc(10, start=1), proc(10, name="exabgp", start=2)])
    assert owned.processes == [ProcessRecord("exabgp", "r1", 10, 2)]


def test_replay_ignores_unknown_kinds() -> None:
    owned = replay([
        {"kind": "netns", "name": "acl.x.r1"},
        {"kind": "file", "path": "/run/anycast-lab/x/bird-r1.conf"},
        {"kind": "something-new", "name": "ignored"},
        {"t": 1.0},
    ])
    assert owned == Owned(["acl.x.r1"], [])


# --- Journal on disk ------------------------------------------------------------------

def test_run_root_and_lab_dir_follow_env(run_dir: Path) -> None:
    assert run_root() == run_dir
    assert lab_dir("lab1") == run_dir / "lab1"
    j = Journal("lab1")
    assert j.dir == run_dir / "lab1"
    assert j.path == run_dir / "lab1" / JOURNAL


def test_open_creates_an_empty_journal(run_dir: Path) -> None:
    j = Journal("lab1")
    assert not j.exists()
    assert j.entries() == []
    j.open()
    assert j.exists()
    assert j.path.read_text() == ""
    j.open()  # idempotent
    assert j.entries() == []


def test_record_appends_one_json_line_in_one_write_without_fsync(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record is one write() of one whole line, and no fsync: it must survive a crash of
    the tool (the page cache does), not of the machine (which also ends what it names)."""
    synced: list[int] = []
    writes: list[bytes] = []
    real_write = os.write

    def write_spy(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(journal_mod.os, "fsync", synced.append)
    monkeypatch.setattr(journal_mod.os, "write", write_spy)
    j = Journal("lab1")
    j.open()
    j.path.write_text('{"kind": "netns", "name": "earlier", "op": "create"}\n')
    j.record("netns", name="acl.lab1.r1", node="r1")
    assert len(writes) == 1 and writes[0].endswith(b"\n") and writes[0].count(b"\n") == 1
    j.record("process", pid=42, name="bird", node="r1", start_time=7)
    assert len(writes) == 2
    assert synced == []

    raw = j.path.read_text()
    assert raw.endswith("\n")
    lines = raw.splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0])["name"] == "earlier"  # appended, not overwritten
    second = json.loads(lines[1])
    assert second["kind"] == "netns" and second["op"] == "create"
    assert second["name"] == "acl.lab1.r1" and second["node"] == "r1"
    assert isinstance(second["t"], float)
    assert list(second) == sorted(second)
    third = json.loads(lines[2])
    assert (third["kind"], third["pid"], third["start_time"]) == ("process", 42, 7)
    assert j.entries() == [json.loads(line) for line in lines]


def test_record_gone_and_owned(run_dir: Path) -> None:
    j = Journal("lab1")
    j.open()
    j.record("netns", name="acl.lab1.r1")
    j.record("netns", name="acl.lab1.r2")
    j.record("link", netns="acl.lab1.r1", ifname="r2")
    j.record("netns", "gone", name="acl.lab1.r1")
    owned = j.owned()
    assert owned == replay(j.entries())
    assert owned.namespaces == ["acl.lab1.r2"]


def test_torn_last_line_is_skipped(run_dir: Path) -> None:
    j = Journal("lab1")
    j.open()
    j.record("netns", name="acl.lab1.r1")
    j.record("netns", name="acl.lab1.r2")
    full = j.path.read_text()
    # A crash in the middle of writing the third entry.
    j.path.write_text(full + '{"kind": "netns", "name": "acl.lab1.r3", "o')
    entries = j.entries()
    assert [e["name"] for e in entries] == ["acl.lab1.r1", "acl.lab1.r2"]
    assert j.owned().namespaces == ["acl.lab1.r1", "acl.lab1.r2"]


def test_entry_after_torn_line_is_kept(run_dir: Path) -> None:
    j = Journal("lab1")
    j.open()
    j.record("netns", name="acl.lab1.r1")
    with j.path.open("a") as f:
        f.write('{"kind": "netns", "name": "acl.lab1.r2", "o')  # torn by a crash
    j.record("netns", name="acl.lab1.r3")  # the next `up` or `down` goes on
    assert j.owned().namespaces == ["acl.lab1.r1", "acl.lab1.r3"]
    lines = j.path.read_text().splitlines()
    assert len(lines) == 3 and lines[1].endswith('"o')  # the torn line stays on its own


def test_a_tail_of_nul_bytes_left_by_a_machine_crash_is_skipped(run_dir: Path) -> None:
    """After a machine crash a file may end in NUL bytes (its size was written, its data
    not): those read as a line that is no entry, and the next record starts anew."""
    j = Journal("lab1")
    j.open()
    j.record("netns", name="acl.lab1.r1")
    with j.path.open("ab") as f:
        f.write(b"\0" * 300)
    assert j.owned().namespaces == ["acl.lab1.r1"]
    j.record("netns", name="acl.lab1.r2")
    assert j.owned().namespaces == ["acl.lab1.r1", "acl.lab1.r2"]


def test_records_from_many_threads_are_whole_lines(run_dir: Path) -> None:
    import threading

    j = Journal("lab1")
    j.open()

    def many(k: int) -> None:
        for i in range(50):
            j.record("process", name=f"d{k}", node="n", pid=k * 1000 + i, start_time=i,
                     pad="x" * 500)

    threads = [threading.Thread(target=many, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = j.path.read_text().splitlines()
    assert len(lines) == 400
    assert len(j.entries()) == 400
    assert len(j.owned().processes) == 400


def test_record_adds_no_blank_lines(run_dir: Path) -> None:
    j = Journal("lab1")
    j.open()  # an empty file: no leading newline for the first entry
    j.record("netns", name="acl.lab1.r1")
    j.record("netns", name="acl.lab1.r2")
    text = j.path.read_text()
    assert text.endswith("\n") and "\n\n" not in text and not text.startswith("\n")
    assert len(text.splitlines()) == 2


def test_state_round_trip(run_dir: Path) -> None:
    j = Journal("lab1")
    assert j.state() == {}
    j.open()
    j.set_state(phase="building", topology="/x/default.yaml")
    assert j.state() == {"phase": "building", "topology": "/x/default.yaml"}
    j.set_state(phase="up", nodes=9)
    assert j.state() == {"phase": "up", "topology": "/x/default.yaml", "nodes": 9}
    assert Journal("lab1").state() == j.state()  # read back from disk
    assert sorted(p.name for p in j.dir.iterdir()) == [JOURNAL, STATE]  # no tmp left


def test_corrupt_state_reads_as_empty(run_dir: Path) -> None:
    j = Journal("lab1")
    j.open()
    (j.dir / STATE).write_text('{"phase": "up"')
    assert j.state() == {}
    j.set_state(phase="tearing-down")
    assert j.state() == {"phase": "tearing-down"}


def test_existing_labs(run_dir: Path) -> None:
    assert existing_labs() == []  # the run root does not exist yet
    for lab in ("zeta", "alpha"):
        Journal(lab).open()
    (run_dir / "no-journal").mkdir()
    (run_dir / "stray-file").write_text("x")
    assert existing_labs() == ["alpha", "zeta"]


def test_explicit_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(tmp_path / "elsewhere"))
    j = Journal("lab1", directory=tmp_path / "custom")
    j.open()
    j.record("netns", name="acl.lab1.r1")
    assert (tmp_path / "custom" / JOURNAL).exists()
    assert not (tmp_path / "elsewhere").exists()
    assert j.owned().namespaces == ["acl.lab1.r1"]
