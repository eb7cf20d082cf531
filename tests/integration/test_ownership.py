"""Ownership that cannot be forged, teardown that cannot be stopped, one command per lab.

Each test reproduces an attack or an accident on a real lab and proves it fails now:
a stranger's forged marker, a full or read-only run directory, `down` typed in an
`exec` shell, two `up`s at once, `down` during `up`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import netns

from lab.host import labs, procs
from lab.host.fabric import Fabric, NamespaceTaken
from lab.host.journal import Journal
from lab.model.plan import build_plan
from lab.ops import lifecycle

from .helpers import DEFAULT, ROOT, lab_cli, leftovers, nothing_left, unique_name, wait_for

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def stranger(tmp_path: Path) -> Iterator:
    """Start unprivileged processes carrying forged lab markers; all killed afterwards."""
    started: list[subprocess.Popen] = []

    def spawn(marker: str) -> subprocess.Popen:
        proc = subprocess.Popen([*NOBODY, "env", f"ANYCAST_LAB={marker}", "sleep", "60"],
                                cwd="/", stdin=subprocess.DEVNULL)
        started.append(proc)
        # The marker is visible once setpriv has exec'd `env` and `env` exec'd `sleep`.
        wait_for(lambda: _environ_has(proc.pid, f"ANYCAST_LAB={marker}"), 5,
                 message=f"the stranger's marker {marker!r}")
        return proc

    yield spawn
    for proc in started:
        proc.kill()
        proc.wait(timeout=5)


def _environ_has(pid: int, item: str) -> bool:
    try:
        return item.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


@pytest.fixture
def victim() -> Iterator[Path]:
    """A directory and a root-only file a stranger would like root to destroy, in a
    place the stranger can reach (pytest's own tmp_path is private to root)."""
    top = Path(tempfile.mkdtemp(prefix="acl-victim-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)
        base = top / "x"
        target = base / "victim"
        target.mkdir(parents=True)
        (target / "precious").write_text("keep me\n")
        os.chmod(target, 0o777)  # the stranger may plant links next to the victim
        secret = top / "secret"
        secret.write_text("root only\n")
        secret.chmod(0o600)
        yield target
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_forged_markers_are_ignored_and_paths_refused(stranger, victim: Path) -> None:
    secret = victim.parent.parent / "secret"
    # A stranger plants the file `set_state` used to write through.
    planted = victim / "state.json.tmp"
    subprocess.run([*NOBODY, "ln", "-s", str(secret), str(planted)], check=True)
    forged_name = unique_name("forged")
    hostile = [str(victim), f"../..{victim}", "", forged_name, f"{forged_name}\n"]
    sleepers = [stranger(m) for m in hostile]

    # What `down --all` would remove: none of the strangers' names.
    selected = lifecycle.labs_to_tear_down(None, all_labs=True)
    assert not set(selected) & set(hostile)
    assert procs.marked_pids(forged_name) == []
    for bad in (str(victim), f"../..{victim}", "", f"{forged_name}\n"):
        result = lab_cli("down", "--lab", bad)
        assert result.returncode == 2, result.stderr
        assert "is not a lab name" in result.stderr
    # A valid name that only a stranger carries: nothing of ours to tear down.
    result = lab_cli("down", "--lab", forged_name, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["removed"] == []

    assert (victim / "precious").read_text() == "keep me\n"
    assert secret.read_text() == "root only\n"
    assert planted.is_symlink()
    assert all(p.poll() is None for p in sleepers), "down killed a stranger's process"


def test_down_from_an_exec_shell_completes(make_lab) -> None:
    handle = make_lab(DEFAULT, prefix="ex")
    handle.up()
    # The shell `exec` starts carries the lab's marker; `down` must not kill it (nor itself).
    script = f"{sys.executable} -m lab down --lab {handle.name}; echo rc=$?"
    result = lab_cli("exec", "--lab", handle.name, "c-eu", "--", "sh", "-c",
                     f"cd {ROOT} && {script}")
    assert "rc=0" in result.stdout, result.stdout + result.stderr
    assert nothing_left(handle.name, handle.dir), leftovers(handle.name, handle.dir)


def test_two_concurrent_ups_give_one_lab_and_one_clear_refusal(make_lab) -> None:
    handle = make_lab(DEFAULT, prefix="cc")
    argv = [sys.executable, "-m", "lab", "up", str(DEFAULT), "--name", handle.name]
    runs = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outcomes = [(p.wait(timeout=180), p.stderr.read()) for p in runs]
    for p in runs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in outcomes)
    assert codes[0] == 0, outcomes
    assert not any("internal error" in err for _, err in outcomes), outcomes
    refusal = next(err for code, err in outcomes if code == codes[1] and err)
    # Either the second found the lock held, or (it started late) the lab already up.
    assert (codes[1] == 1 and "is being changed by PID" in refusal) or (
        codes[1] == 0 and "already up" in refusal), outcomes
    lab = labs.open_lab(handle.name)
    assert lab.plan is not None
    assert len(leftovers(handle.name, handle.dir)["namespaces"]) == len(lab.plan.nodes)


def test_down_during_up_stops_it_and_leaves_nothing(make_lab) -> None:
    handle = make_lab(DEFAULT, prefix="du")
    up = subprocess.Popen([sys.executable, "-m", "lab", "up", str(DEFAULT), "--name",
                           handle.name], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: leftovers(handle.name, handle.dir)["namespaces"], 60, interval=0.01,
                 message="up to create its first namespace")
        # Frozen there (as by Ctrl-Z), the `up` is surely still in progress when `down`
        # comes: the default lab is up within about a second, less than `down` takes to
        # start. `down` must wake it as well as ask it to stop.
        up.send_signal(signal.SIGSTOP)
        assert Journal(handle.name).state().get("phase") in ("building", "converging")
        result = lab_cli("down", "--lab", handle.name, timeout=120)
        assert result.returncode == 0, result.stderr
        code = up.wait(timeout=60)
        err = up.stderr.read()
    finally:
        with contextlib.suppress(ProcessLookupError):
            up.kill()
        up.wait(timeout=10)
        up.stderr.close()
    assert code == 1, err
    assert "was stopped" in err and "internal error" not in err
    assert nothing_left(handle.name, handle.dir), leftovers(handle.name, handle.dir)


@pytest.fixture
def small_run_dir() -> Iterator:
    """A run directory on a tmpfs of a given size, unmounted afterwards. A short path:
    the lab's unix sockets live under it (108 bytes at most)."""
    mounts: list[Path] = []

    def make(size_kib: int) -> Path:
        point = Path(tempfile.mkdtemp(prefix="acl-", dir="/tmp"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755",
                        "tmpfs", str(point)], check=True)
        mounts.append(point)
        return point / "run"

    yield make
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)
        point.rmdir()


def _cli(run_dir: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANYCAST_LAB_RUN_DIR": str(run_dir)}
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env, check=False)


@pytest.mark.parametrize("size_kib", [4, 64, 160])
def test_up_on_a_full_run_dir_leaves_nothing(small_run_dir, size_kib: int) -> None:
    run_dir = small_run_dir(size_kib)
    name = unique_name("full")
    result = _cli(run_dir, "up", str(DEFAULT), "--name", name)
    # The disk fills while writing the lab's records (exit 3) or while its daemons log.
    assert result.returncode in (1, 3), result.stderr
    assert "internal error" not in result.stderr
    if result.returncode == 3:
        assert "no space left" in result.stderr
    down = _cli(run_dir, "down", "--lab", name)
    assert down.returncode in (0, 3), down.stderr
    assert "internal error" not in down.stderr
    left = leftovers(name, run_dir / name)
    assert not left["namespaces"] and not left["processes"], left


def test_up_leaves_a_lab_of_the_same_name_from_another_run_directory_alone() -> None:
    """Namespace names and markers are the machine's: `up` from a second run directory,
    under a name that is up from the first, is refused and changes nothing there."""
    name = unique_name("twin")
    first, second = (Path(tempfile.mkdtemp(prefix=f"acl-{n}-", dir="/tmp")) for n in "ab")
    try:
        result = _cli(first, "up", str(DEFAULT), "--name", name)
        assert result.returncode == 0, result.stderr
        namespaces = leftovers(name, first / name)["namespaces"]
        daemons = [r for r in Journal(name, first / name).owned().processes
                   if r.name != "launcher"]  # the launcher ends with the `up` command
        assert namespaces and daemons and all(procs.is_running(r) for r in daemons)
        twin = _cli(second, "up", str(DEFAULT), "--name", name)
        assert twin.returncode == 2, twin.stderr
        assert "another run directory" in twin.stderr and str(first) in twin.stderr
        assert "internal error" not in twin.stderr
        assert leftovers(name, first / name)["namespaces"] == namespaces
        assert [r for r in daemons if not procs.is_running(r)] == []
        status = _cli(first, "status", "--lab", name, "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["ok"], status.stdout
        assert not (second / name / "journal.jsonl").exists()
    finally:
        for run_dir in (second, first):
            if Journal(name, run_dir / name).exists():
                lifecycle.teardown(Journal(name, run_dir / name))
    assert nothing_left(name, first / name)
    for run_dir in (first, second):
        shutil.rmtree(run_dir, ignore_errors=True)


def test_a_namespace_taken_while_up_builds_is_left_to_its_owner(tmp_path: Path) -> None:
    """Another `up` of the same name (from another run directory) made one of the lab's
    namespaces after this one looked: the build stops there, the record of that namespace
    is taken back, and the roll-back removes only what this run made."""
    name = unique_name("taken")
    plan = build_plan(lifecycle.validated(DEFAULT, name))
    journal = Journal(name, tmp_path / name)
    journal.open()
    nodes = list(plan.nodes.values())
    taken = nodes[2].netns  # two of ours first, then somebody else's
    subprocess.run(["ip", "netns", "add", taken], check=True)
    try:
        with pytest.raises(NamespaceTaken, match="already exists"):
            Fabric(plan, journal).build()
        owned = journal.owned().namespaces
        assert owned == [nodes[0].netns, nodes[1].netns]
        lifecycle.teardown(journal, sweep=False)  # as the roll-back of this failure does
        present = netns.listnetns()
        assert taken in present
        assert not [n for n in owned if n in present]
    finally:
        subprocess.run(["ip", "netns", "del", taken], check=False)
        lifecycle.teardown(journal)  # whatever a failed assertion above left
    assert not leftovers(name, tmp_path / name)["namespaces"]


def test_down_on_a_read_only_run_dir_removes_the_lab(small_run_dir) -> None:
    run_dir = small_run_dir(8192)
    name = unique_name("ro")
    result = _cli(run_dir, "up", str(DEFAULT), "--name", name)
    assert result.returncode == 0, result.stderr
    # The same run directory seen through a read-only bind mount (a remount of the tmpfs
    # itself is refused while the daemons hold their logs open for writing).
    view = Path(tempfile.mkdtemp(prefix="acl-ro-", dir="/tmp"))
    try:
        subprocess.run(["mount", "--bind", str(run_dir.parent), str(view)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        ro_run = view / run_dir.name
        down = _cli(ro_run, "down", "--lab", name)
        assert down.returncode == 3, down.stderr
        assert "read-only" in down.stderr and "internal error" not in down.stderr
        left = leftovers(name, run_dir / name)
        assert not left["namespaces"] and not left["processes"], left
        again = _cli(ro_run, "up", str(DEFAULT), "--name", unique_name("ro"))
        assert again.returncode == 3 and "read-only" in again.stderr, again.stderr
    finally:
        subprocess.run(["umount", str(view)], check=False)
        view.rmdir()
        if Journal(name, run_dir / name).exists():
            lifecycle.teardown(Journal(name, run_dir / name))
