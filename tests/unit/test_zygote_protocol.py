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
