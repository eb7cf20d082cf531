"""The launcher's protocol (no namespace: needs no root): requests are pipelined, each
answer names its request's id, a bad request is answered without a fork, and the
launcher exits once its stdin closes and every child has answered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lab.shared.wait import wait_until

# A module that may run as `python -m`: it sleeps a little, then exits.
TARGET = "tests.unit.zygote_target"


def launcher(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lab.host.zygote", f"{TARGET}=json"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path.cwd(),
                            env={**os.environ, "SPT_NOENV": "1"})


def request(rid: object, tmp_path: Path, target: str = TARGET) -> str:
    return json.dumps({"id": rid, "target": target, "skip": 3,
                       "argv": [sys.executable, "-m", target, str(rid)], "netns": None,
                       "log_path": str(tmp_path / f"{rid}.log"),
                       "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                               "PYTHONPATH": str(Path.cwd())},
                       "cwd": str(tmp_path)}) + "\n"


def test_pipelined_requests_are_each_answered_with_their_id(tmp_path: Path) -> None:
    proc = launcher(tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    ids = list(range(1, 13))
    proc.stdin.write("".join(request(i, tmp_path) for i in ids))  # all at once
    proc.stdin.write(request("bad", tmp_path, target="not.preloaded"))
    proc.stdin.close()
    answers = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    by_id = {a["id"]: a for a in answers}
    assert len(answers) == len(ids) + 1 and set(by_id) == {*ids, "bad"}
    assert "not preloaded" in by_id["bad"]["error"] and "pid" not in by_id["bad"]
    pids = [by_id[i]["pid"] for i in ids]
    assert len(set(pids)) == len(ids) and proc.pid not in pids
    for i in ids:  # each child ran the target with its own arguments, into its own log
        assert wait_until(lambda i=i: (tmp_path / f"{i}.log").exists()
                                and f"ran {i}" in (tmp_path / f"{i}.log").read_text(),
                                10, interval_s=0.01)


def test_a_child_that_fails_before_it_starts_is_answered_with_why(tmp_path: Path) -> None:
    proc = launcher(tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    bad = json.loads(request(7, tmp_path))
    bad["cwd"] = str(tmp_path / "no-such-directory")
    proc.stdin.write(json.dumps(bad) + "\n")
    proc.stdin.write(request(8, tmp_path))
    proc.stdin.close()
    by_id = {a["id"]: a for a in map(json.loads, proc.stdout)}
    assert proc.wait(timeout=30) == 0
    assert "failed before it started" in by_id[7]["error"]
    assert "no-such-directory" in by_id[7]["error"]
    assert isinstance(by_id[8]["pid"], int)


def test_a_wait_request_is_answered_with_the_exit_code_once_it_ends(tmp_path: Path) -> None:
    proc = launcher(tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    run = json.loads(request(5, tmp_path))
    run["argv"].append("3")
    run["wait"] = True
    proc.stdin.write(json.dumps(run) + "\n")
    proc.stdin.flush()
    answer = json.loads(proc.stdout.readline())  # only once the program has ended
    assert answer["id"] == 5 and answer["exit"] == 3 and isinstance(answer["pid"], int)
    assert "ran 5" in (tmp_path / "5.log").read_text()
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_run_check_runs_the_labs_own_programs_in_the_launcher(tmp_path: Path) -> None:
    """A config check of one of the lab's Python programs runs in the launcher, with its
    exit code and output as subprocess.run would give them; any other command runs as a
    child of this process."""
    from lab.host import procs
    from lab.host.journal import Journal

    journal = Journal("zygote-check", directory=tmp_path / "lab")
    journal.open()
    bad = tmp_path / "healthd.json"
    bad.write_text("{not json")
    try:
        result = procs.run_check(journal, [sys.executable, "-m", "lab.sites.health",
                                           "--check-config", "--config", str(bad)], None, 60)
        launcher = procs.running(journal, "launcher")
        assert launcher is not None  # it ran there
        assert result.returncode != 0 and str(bad) in result.stdout
        other = procs.run_check(journal, ["sh", "-c", "echo hi; exit 4"], None, 10)
        assert (other.returncode, other.stdout) == (4, "hi\n")
        assert not list((tmp_path / "lab").glob(".check-*"))  # its output file is gone
    finally:
        procs.Launcher.close_all()


def test_a_wait_request_past_its_timeout_is_killed_and_answered(tmp_path: Path) -> None:
    """As subprocess.run would: a config check still running at its limit is stopped,
    and nothing of it is left running."""
    proc = launcher(tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    run = json.loads(request(6, tmp_path))
    run["argv"] += ["0", "60"]  # exit 0, but only after 60 s
    run["wait"], run["timeout_s"] = True, 0.5
    proc.stdin.write(json.dumps(run) + "\n")
    proc.stdin.flush()
    answer = json.loads(proc.stdout.readline())
    assert answer["id"] == 6 and answer["killed"] == "timeout" and answer["exit"] is None
    assert "ran 6" in (tmp_path / "6.log").read_text()  # it did run until then
    from lab.host.procs import start_time

    assert wait_until(lambda: start_time(answer["pid"]) is None, 5, interval_s=0.01)
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_malformed_requests_are_answered_and_the_launcher_goes_on(tmp_path: Path) -> None:
    proc = launcher(tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("[1, 2]\n")  # JSON, but not an object
    proc.stdin.write(json.dumps({"id": "list", "target": ["not", "hashable"]}) + "\n")
    proc.stdin.write("{half\n")
    proc.stdin.write(request(9, tmp_path))  # a good one after them
    proc.stdin.close()
    answers = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    errors = [a for a in answers if "error" in a]
    assert len(errors) == 3 and all("pid" not in a for a in errors)
    assert [a["id"] for a in answers if "pid" in a] == [9]


def test_a_runner_that_stops_reading_does_not_take_starting_children_down(
        tmp_path: Path) -> None:
    """The runner dies while a daemon is starting: the launcher must neither crash on
    its answer nor take that child with it."""
    proc = launcher(tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdout.close()  # nobody reads the answers any more
    proc.stdin.write(request(11, tmp_path))
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    assert wait_until(lambda: "ran 11" in ((tmp_path / "11.log").read_text()
                                           if (tmp_path / "11.log").exists() else ""),
                      10, interval_s=0.01)
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def test_a_daemon_answered_after_its_request_gave_up_is_stopped() -> None:
    """An answer nobody waits for any more (the request timed out) names a daemon that
    runs without a record: the runner stops it if it is its lab's (by marker, run by
    root); nothing else is touched."""
    from lab.host import procs

    def marked(lab: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["sleep", "60"], env={**os.environ, procs.MARKER: lab})

    ours, theirs, done = marked("zyg-a"), marked("zyg-b"), marked("zyg-a")
    try:
        assert wait_until(lambda: all(procs.marker_of(p.pid) is not None
                                      for p in (ours, theirs, done)), 5, interval_s=0.01)
        launcher = object.__new__(procs.Launcher)
        launcher.lab = "zyg-a"
        launcher._stop_unrecorded({"id": 1, "pid": ours.pid})
        launcher._stop_unrecorded({"id": 2, "pid": theirs.pid})
        launcher._stop_unrecorded({"id": 3, "pid": done.pid, "exit": 0})  # a check's
        as_root = os.geteuid() == 0  # only root's processes can be the lab's
        assert (ours.wait(timeout=5) == -9) if as_root else ours.poll() is None
        assert theirs.poll() is None and done.poll() is None
    finally:
        for p in (ours, theirs, done):
            p.kill()
            p.wait()
