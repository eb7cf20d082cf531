"""Replacing a file at once (lab.shared.atomic) and the run directory's wrapper of it."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from lab.host import safefs
from lab.model.errors import EnvironmentProblem
from lab.shared import atomic


def test_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    atomic.write_json_atomic(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert target.read_text().endswith("}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize("umask", [0o077, 0o000])
def test_the_mode_is_exactly_the_one_asked_for(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        atomic.write_atomic(tmp_path / "public", "x", 0o644)
        atomic.write_atomic(tmp_path / "secret", "x", 0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "public").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


def test_a_planted_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    link = tmp_path / "faults.json"
    link.symlink_to(victim)
    atomic.write_atomic(link, "new")
    assert victim.read_text() == "untouched"
    assert not link.is_symlink() and link.read_text() == "new"


def test_a_failed_rename_keeps_the_old_file_and_removes_the_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "revoked.json"
    target.write_text("old")

    def refuse(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError):
        atomic.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["revoked.json"]


@pytest.mark.parametrize(("kwargs", "file_syncs", "dir_syncs"), [
    ({}, 1, 0),
    ({"durable": True}, 1, 1),
    ({"fsync": False}, 0, 0),
])
def test_durability_is_what_the_caller_asks_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                kwargs: dict, file_syncs: int,
                                                dir_syncs: int) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    atomic.write_atomic(tmp_path / "f", "x", **kwargs)
    assert synced.count(False) == file_syncs
    assert synced.count(True) == dir_syncs


def test_the_run_directory_wrapper_reports_a_full_disk_as_the_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", full)
    with pytest.raises(EnvironmentProblem) as err:
        safefs.write_json_atomic(tmp_path / "state.json", {"phase": "up"})
    assert "no space left on the device" in err.value.message
    assert err.value.exit_code == 3
    assert list(tmp_path.iterdir()) == []
