"""Every command of the CLI that reports has --json, and under --json every error is the
contract's JSON object on stdout (`{"ok": false, "error": {...}}`) with the error's exit
code: errors found before root is needed (bad input, usage errors), run in this process
against an empty run directory. Plus the default `--lab` from ANYCAST_LAB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from lab.cli import main as cli
from lab.host import labs, procs

from .helpers import json_error, run_cli

REPO = Path(__file__).resolve().parents[2]
GOOD = REPO / "topologies" / "default.yaml"

# Commands that do not report: they replace themselves with another program.
NOT_REPORTING = {"exec", "birdc"}

# One error per reporting command, each found before root is required.
ERRORS: dict[str, list[str]] = {
    "validate": ["validate", "/nonexistent/topology.yaml"],
    "schema": ["schema", "unexpected-argument"],
    "up": ["up", "/nonexistent/topology.yaml"],
    "down": ["down", "--lab", "Not-A-Lab"],
    "list": ["list", "unexpected-argument"],
    "status": ["status", "--lab", "Not-A-Lab"],
    "catchment": ["catchment", "--lab", "Not-A-Lab"],
    "fail": ["fail", "ams", "dns", "--lab", "Not-A-Lab"],
    "heal": ["heal", "ams", "--lab", "Not-A-Lab"],
    "drain": ["drain", "ams", "--lab", "Not-A-Lab"],
    "undrain": ["undrain", "ams", "--lab", "Not-A-Lab"],
    "impair": ["impair", "ams", "--loss", "30", "--lab", "Not-A-Lab"],
    "measure failover": ["measure", "failover", "--site", "ams", "--fault", "dns",
                         "--plot", "/nonexistent/dir/x.png"],
    "token issue": ["token", "issue", "--client", "c", "--ttl", "0"],
    "token revoke": ["token", "revoke", "a b"],
    "token list": ["token", "list", "--lab", "Not-A-Lab"],
    "export containerlab": ["export", "containerlab", "/nonexistent/topology.yaml",
                            "-o", "/nonexistent/dir/out"],
    "graph": ["graph", "--format", "gif"],
    "watch": ["watch", "--lab", "Not-A-Lab"],
    "audit": ["audit", "--lab", "Not-A-Lab"],
    "contain": ["contain", "ams", "--lab", "Not-A-Lab"],
    "measure exposure": ["measure", "exposure", "--site", "ams", "--lab", "Not-A-Lab"],
    "reset": ["reset", "--lab", "Not-A-Lab"],
    "scenario list": ["scenario", "list", "unexpected-argument"],
    "scenario show": ["scenario", "show", "no-such-scenario"],
    "scenario validate": ["scenario", "validate", "/nonexistent/scenario.yaml"],
    "scenario schema": ["scenario", "schema", "unexpected-argument"],
    "scenario run": ["scenario", "run", "no-such-scenario"],
}


def commands() -> dict[str, Any]:
    """Every visible command of the app, by its full name ('token issue'). (Typer builds
    them with its own copy of click: a group is what has sub-commands.)"""
    cli._register()
    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, cmd in group.commands.items():
            if cmd.hidden:
                continue
            full = f"{prefix}{name}"
            if hasattr(cmd, "commands"):
                walk(cmd, f"{full} ")
            else:
                found[full] = cmd

    walk(typer.main.get_command(cli.app), "")
    return found


def reporting() -> list[str]:
    return sorted(set(commands()) - NOT_REPORTING)


@pytest.fixture
def empty_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("ANYCAST_LAB", raising=False)
    monkeypatch.delenv("ANYCAST_LAB_TOPOLOGY", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "run"


def test_every_command_is_known_to_this_test() -> None:
    assert set(reporting()) == set(ERRORS), (
        "a command was added or removed: give it --json (or list it in NOT_REPORTING) and "
        "an error for this test")


@pytest.mark.parametrize("name", reporting())
def test_every_reporting_command_has_a_json_option(name: str) -> None:
    options = {opt for param in commands()[name].params for opt in param.opts}
    assert "--json" in options, f"`{name}` has no --json"


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_an_error_under_json_is_the_json_object_with_its_exit_code(
        name: str, empty_run_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([*ERRORS[name], "--json"], monkeypatch, capsys)
    error = json_error(code, out, err)
    assert "--json" not in error["message"], error  # --json itself was accepted


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_the_same_error_without_json_is_one_sentence_on_stderr(
        name: str, empty_run_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(ERRORS[name], monkeypatch, capsys)
    assert code in (1, 2, 3)
    assert out == "" and err.startswith("error: "), (out, err)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_a_usage_error_under_json_is_the_json_object(
        name: str, empty_run_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([*name.split(), "--json", "--no-such-option"], monkeypatch, capsys)
    error = json_error(code, out, err)
    assert code == 2
    assert "--no-such-option" in error["message"], error


def test_validate_reports_a_missing_file_as_the_error_object(
        empty_run_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["validate", "/nonexistent/t.yaml", "--json"], monkeypatch, capsys)
    assert json_error(code, out, err)["message"] == "file '/nonexistent/t.yaml' does not exist"


@pytest.mark.parametrize("argv", [["validate", str(GOOD), "--json"], ["schema", "--json"]])
def test_commands_that_need_no_lab_give_json_on_success(
        argv: list[str], empty_run_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_cli(argv, monkeypatch, capsys)
    assert code == 0
    assert isinstance(json.loads(out), dict)


def test_json_after_a_double_dash_belongs_to_the_command_exec_runs() -> None:
    assert cli.json_requested(["status", "--json"])
    assert cli.json_requested(["exec", "--json", "c1", "--", "true"])
    assert not cli.json_requested(["exec", "c1", "--", "jq", "--json"])


def test_a_bad_lab_name_in_the_environment_says_where_it_came_from(
        empty_run_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ANYCAST_LAB", "Not A Lab")
    code, out, err = run_cli(["status", "--json"], monkeypatch, capsys)
    error = json_error(code, out, err)
    assert code == 2
    assert error["message"].startswith("'Not A Lab' (from ANYCAST_LAB) is not a lab name")


def test_the_lab_named_in_the_environment_is_the_default_lab(
        empty_run_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The name reaches the command: `token list` (no root needed) looks for that lab."""
    monkeypatch.setenv("ANYCAST_LAB", "student-7")
    code, out, err = run_cli(["token", "list", "--json"], monkeypatch, capsys)
    error = json_error(code, out, err)
    assert code == 1
    assert error["message"] == "lab 'student-7' (from ANYCAST_LAB) is not up (labs up: none)"
    # --lab on the command line wins over the environment.
    code, out, err = run_cli(["token", "list", "--lab", "other", "--json"], monkeypatch, capsys)
    assert json_error(code, out, err)["message"] == "lab 'other' is not up (labs up: none)"


def test_the_default_lab_variable_is_the_daemons_marker() -> None:
    """One variable: a shell `exec` starts in a node carries it, and commands run there
    default to that node's lab."""
    assert labs.LAB_ENV == procs.MARKER


def test_the_console_script_gives_the_same_json_error(tmp_path: Path) -> None:
    """Through the real entry point in a fresh process, not only main() in this one."""
    environ = {"PATH": "/usr/bin:/bin", "ANYCAST_LAB_RUN_DIR": str(tmp_path / "run")}
    result = subprocess.run([sys.executable, "-m", "lab", "drain", "ams", "--lab", "Bad!",
                             "--json"], capture_output=True, text=True, env=environ,
                            cwd=REPO, timeout=60, check=False)
    error = json_error(result.returncode, result.stdout, result.stderr)
    assert result.returncode == 2 and "is not a lab name" in error["message"]
