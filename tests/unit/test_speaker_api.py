"""The speaker API process's own small parts: its JSON writer, its argument parser, and
its start file (what ExaBGP runs: isolated, no site-packages, few imports)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.render.exabgp import SPEAKER_RUN
from lab.sites.speaker.api import parse_args, to_json

from .helpers import ROOT

# Modules whose import would multiply the API process's private memory.
HEAVY = {"json", "argparse", "socket", "selectors", "dataclasses", "typing", "pathlib",
         "enum", "re", "contextlib", "inspect"}


@pytest.mark.parametrize("value", [
    {"ok": True, "state": "withdrawn", "since": 1764633600.123456, "watchdog_ms": None},
    {"ok": False, "detail": "unknown command 'b\\u00e9 \"x\"\\n'", "attempts": 3},
    {"routes": {"203.0.113.53/32": {"gshut": False, "as_path": [65010, 65100]}},
     "detail": ["done", "error", "timeout"], "session": "up"},
    {"empty": {}, "none": [], "é": "ü\t\x01"},
])
def test_json_writer_reads_back_as_the_same_value(value) -> None:
    assert json.loads(to_json(value)) == value


def test_json_writer_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError):
        to_json({"x": object()})


def test_arguments_as_the_renderer_writes_them() -> None:
    args = parse_args(["--control", "/run/x/speaker.sock", "--route", "203.0.113.53/32",
                       "100.64.0.7", "--route", "2001:db8:53::53/128", "fd00::2",
                       "--backup-route", "203.0.113.0/24", "100.64.0.7", "--watchdog-ms",
                       "300"])
    assert args.control == "/run/x/speaker.sock" and args.watchdog_ms == 300
    assert [(r.prefix, r.next_hop) for r in args.routes] == [
        ("203.0.113.53/32", "100.64.0.7"), ("2001:db8:53::53/128", "fd00::2")]
    assert [(r.prefix, r.next_hop) for r in args.backup] == [("203.0.113.0/24", "100.64.0.7")]
    static = parse_args(["--control", "s", "--announce-at-start"])
    assert static.announce_at_start and static.watchdog_ms is None


@pytest.mark.parametrize(("argv", "message"), [
    ([], "--control is required"),
    (["--control", "s", "--route", "203.0.113.53/32"], "--route takes PREFIX NEXTHOP"),
    (["--control", "s", "--watchdog-ms", "abc"], "--watchdog-ms takes a whole number"),
    (["--control", "s", "--watchdog-ms", "10"], "--watchdog-ms must be between"),
    (["--control", "s", "--watchdog-ms", "300", "--announce-at-start"], "exclude each other"),
    (["--control", "s", "--bogus"], "unrecognised argument '--bogus'"),
])
def test_bad_arguments_are_a_usage_error(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_start_file_runs_isolated_without_site_packages(tmp_path) -> None:
    """ExaBGP's run line (no PYTHONPATH, any working directory): the shim starts, and
    refuses a bad argument with the usage error."""
    assert SPEAKER_RUN.parents[3] == ROOT
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(SPEAKER_RUN), "--control", str(tmp_path / "s"),
         "--watchdog-ms", "5"], capture_output=True, text=True, cwd="/", timeout=30,
        check=False, env={})
    assert result.returncode == 2, result.stderr
    assert "--watchdog-ms must be between" in result.stderr


def test_the_api_process_imports_none_of_the_heavy_modules() -> None:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import lab.sites.speaker.api; "
            "print(' '.join(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(ROOT)],
                            capture_output=True, text=True, timeout=30, check=True)
    loaded = set(result.stdout.split())
    assert "lab.sites.speaker.api" in loaded
    assert not loaded & HEAVY, sorted(loaded & HEAVY)
