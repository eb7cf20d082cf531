"""The scenario commands' answers that need no lab: a bad file exits 2 before anything
is touched (its problems with lines, or the contract's JSON error), `show` and `list`
read the shipped files, `schema` prints the committed schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lab.ops.faults import fault_names

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "scenarios" / "bad"


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *argv], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_validate_lists_every_problem_with_its_line() -> None:
    result = cli("scenario", "validate", str(BAD / "many-problems.yaml"))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].endswith("many-problems.yaml: 4 problem(s)")
    assert lines[1].strip().endswith("many-problems.yaml:6: steps[0].do: 'fail': write it as "
                                     "'fail SITE FAULT'")


def test_run_of_a_bad_file_is_a_json_error_with_exit_2() -> None:
    result = cli("scenario", "run", str(BAD / "unknown-fault.yaml"), "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == 2
    assert error["message"].endswith("unknown-fault.yaml:6: steps[0].do: unknown fault "
                                     f"'dns-crash' (faults: {', '.join(fault_names())})")


def test_an_unknown_name_and_a_bad_junit_path_exit_2() -> None:
    unknown = cli("scenario", "run", "no-such-lesson")
    assert unknown.returncode == 2 and "no scenario named 'no-such-lesson'" in unknown.stderr
    junit = cli("scenario", "run", "catchment-basics", "--junit", "/nonexistent/dir/r.xml")
    assert junit.returncode == 2 and "/nonexistent/dir does not exist" in junit.stderr


def test_show_list_and_schema() -> None:
    shown = cli("scenario", "show", "drain-vs-withdraw")
    assert shown.returncode == 0
    assert "GRACEFUL_SHUTDOWN" in shown.stdout and "1. ams is drained" in shown.stdout
    listed = json.loads(cli("scenario", "list", "--json").stdout)
    assert listed["ok"] and len(listed["scenarios"]) >= 10
    schema = json.loads(cli("scenario", "schema").stdout)
    assert schema == json.loads((ROOT / "scenarios" / "schema.json").read_text())
