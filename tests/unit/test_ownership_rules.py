"""What the run directory trusts: lab names in full, private directories, no-follow
writes, the per-lab lock. Pure file-system work in a temporary run root; no root needed."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.host import lock, safefs
from lab.host.journal import Journal, existing_labs, lab_dir, run_root, valid_lab_name
from lab.model.errors import BadInput, EnvironmentProblem


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "run"
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(root))
    return root


@pytest.mark.parametrize("name", ["", "/etc", "../../tmp/x", "a/b", "a.b", "rt-x\n", "A",
                                  "1lab", "-x", "x" * 25, "lab\x00", " lab"])
def test_hostile_lab_names_are_refused(name: str, run_dir: Path) -> None:
    assert not valid_lab_name(name)
    with pytest.raises(BadInput, match="is not a lab name"):
        lab_dir(name)
    with pytest.raises(BadInput):
        Journal(name)


@pytest.mark.parametrize("name", ["default", "it-ab12cd", "a", "x" * 24])
def test_good_lab_names_pass(name: str) -> None:
    assert valid_lab_name(name)


def test_run_dir_must_be_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", "relative/run")
    with pytest.raises(EnvironmentProblem, match="absolute path"):
        run_root()


def test_journal_refuses_a_run_root_writable_by_others(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o777)
    os.chmod(run_dir, 0o777)
    with pytest.raises(EnvironmentProblem, match="writable by other users"):
        Journal("lab1").open()


def test_journal_refuses_a_symlinked_lab_dir(run_dir: Path, tmp_path: Path) -> None:
    run_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "lab1").symlink_to(elsewhere)
    with pytest.raises(EnvironmentProblem, match="symlink"):
        Journal("lab1").open()
    assert list(elsewhere.iterdir()) == []


def test_existing_labs_ignores_strangers_entries(run_dir: Path, tmp_path: Path) -> None:
    Journal("good").open()
    (run_dir / "Bad.Name").mkdir()
    (run_dir / "Bad.Name" / "journal.jsonl").write_text("")
    target = tmp_path / "t"
    target.mkdir()
    (target / "journal.jsonl").write_text("")
    (run_dir / "linked").symlink_to(target)
    loose = run_dir / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    (loose / "journal.jsonl").write_text("")
    assert existing_labs() == ["good"]


def test_atomic_write_replaces_a_planted_symlink_instead_of_following_it(
        tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "state.json"
    target.symlink_to(victim)
    safefs.write_json_atomic(target, {"phase": "up"})
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and '"phase": "up"' in target.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_new_refuses_an_existing_file_or_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "config"
    link.symlink_to(victim)
    with pytest.raises(FileExistsError):
        safefs.write_new(link, "x")
    assert victim.read_text() == "precious"


def test_open_append_does_not_follow_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "log"
    link.symlink_to(victim)
    with pytest.raises(OSError):
        os.close(safefs.open_append(link))
    assert victim.read_text() == "precious"


def test_machine_errors_become_one_sentence() -> None:
    problem = safefs.machine_problem(OSError(28, "No space left on device"), "/run/x")
    assert problem.exit_code == 3
    assert problem.message.startswith("cannot write /run/x: no space left on the device")


def test_lock_is_exclusive_and_names_its_holder(run_dir: Path) -> None:
    # The holder is another process (flock is per open file, so a second process is
    # the honest test of exclusion).
    code = (
        "import sys, time\n"
        "from lab.host import lock\n"
        "with lock.locked('lab1', 'up'):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "ANYCAST_LAB_RUN_DIR": str(run_dir)})
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(lock.LabBusy, match=rf"PID {holder.pid} \(up\)"), \
                lock.locked("lab1", "fail"):
            pass
        seen = lock.holder("lab1")
        assert seen is not None and seen.pid == holder.pid and seen.alive()
        with lock.locked("lab2", "fail"):  # another lab is not affected
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
    # The kernel released it when its holder exited.
    assert lock.holder("lab1") is None
    with lock.locked("lab1", "fail"):
        pass


def test_teardown_lock_is_optional_where_no_lock_can_be_made(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_lab: str) -> int:
        with safefs.machine_errors(run_dir / "lab1.lock", "open"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        raise AssertionError("unreachable")

    monkeypatch.setattr(lock, "_open", refuse)
    with lock.locked("lab1", "down", required=False):
        pass
    with pytest.raises(EnvironmentProblem), lock.locked("lab1", "fail"):
        pass


def test_teardown_lock_is_not_optional_in_a_run_dir_others_can_write(run_dir: Path) -> None:
    """What such a directory holds (a journal naming PIDs to stop) may be forged: `down`
    must refuse it as every other command does, not go on without its lock."""
    run_dir.mkdir(mode=0o700)
    os.chmod(run_dir, 0o777)
    entered = []
    with pytest.raises(EnvironmentProblem, match="writable by other users"), \
            lock.locked("lab1", "down", required=False):
        entered.append(True)
    assert entered == []


def test_failed_run_logs_keep_the_newest_few(run_dir: Path) -> None:
    from lab.ops import lifecycle

    run_dir.mkdir()
    for i, name in enumerate(["a", "b", "c", "d"]):
        path = run_dir / f".failed-{name}"
        path.mkdir()
        os.utime(path, (1000 + i, 1000 + i))
    (run_dir / ".failed-Bad.Name").mkdir()  # not a lab name: never touched
    assert lifecycle.prune_failed(keep=2) == 2
    assert sorted(p.name for p in lifecycle.failed_runs()) == [".failed-c", ".failed-d"]
    assert lifecycle.prune_failed(keep=0) == 2
    assert lifecycle.failed_runs() == []
    assert (run_dir / ".failed-Bad.Name").is_dir()
