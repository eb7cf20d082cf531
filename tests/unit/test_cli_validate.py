"""`anycast-lab validate` in a subprocess: exit codes, JSON shape, readable errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..prerequisites import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
GOOD = REPO / "topologies" / "default.yaml"
BAD = REPO / "tests" / "topologies" / "bad" / "several-problems.yaml"
BAD_GOLDEN = BAD.with_suffix(".expected")

def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ANYCAST_LAB_TOPOLOGY", None)
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return env


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True,
                          text=True, cwd=REPO, env=_env(), timeout=120, check=False)


def run_console(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("anycast-lab")
    found = str(exe) if exe.exists() else shutil.which("anycast-lab")
    if found is None:
        skip_or_fail("the anycast-lab console script is not installed")
    return subprocess.run([found, *args], capture_output=True, text=True, cwd=REPO,
                          env=_env(), timeout=120, check=False)


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def test_good_file_json() -> None:
    result = run_module("validate", str(GOOD), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == {"ok": True, "file": str(GOOD), "errors": []}
    _no_traceback(result)


def test_good_file_human() -> None:
    result = run_module("validate", str(GOOD))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")
    assert "lab 'default'" in result.stdout
    _no_traceback(result)


def test_bad_file_json_shape() -> None:
    result = run_module("validate", str(BAD), "--json")
    _no_traceback(result)
    data = json.loads(result.stdout)
    assert set(data) == {"ok", "file", "errors"}
    assert data["ok"] is False
    assert data["file"] == str(BAD)
    golden = BAD_GOLDEN.read_text().splitlines()
    assert len(data["errors"]) == len(golden) >= 2
    for err, expected in zip(data["errors"], golden, strict=True):
        assert set(err) == {"path", "message", "line"}
        assert f"{err['line']}: {err['path']}: {err['message']}" == expected


def test_bad_file_human_output() -> None:
    result = run_module("validate", str(BAD))
    _no_traceback(result)
    assert result.stdout == ""
    err = result.stderr
    assert f"{BAD}: {len(BAD_GOLDEN.read_text().splitlines())} problem(s)" in err
    for expected in BAD_GOLDEN.read_text().splitlines():
        line, rest = expected.split(": ", 1)
        assert f"{BAD}:{line}: {rest}" in err, expected
    assert "routers.r2.asn" in err and "anycast.ipv4" in err


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["human", "json"])
def test_bad_file_exits_2(json_flag: list[str]) -> None:
    result = run_module("validate", str(BAD), *json_flag)
    assert result.returncode == 2


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_console("validate", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2


def test_missing_file_no_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = run_console("validate", str(missing))
    _no_traceback(result)
    assert result.stdout == ""
    assert f"file '{missing}' does not exist" in result.stderr


def test_missing_file_is_one_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = run_console("validate", str(missing))
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert str(missing) in lines[0] and "does not exist" in lines[0]


def test_validate_reports_a_schema_problem_and_a_host_overlap_together(tmp_path: Path) -> None:
    from lab.host.env import host_networks_or_none

    nets = [n for n in host_networks_or_none() or []
            if not (n.is_loopback or n.is_link_local)]
    if not nets:
        pytest.skip("this machine has no network besides loopback and link-local")
    net = nets[0]
    pool = "links4" if net.version == 4 else "links6"
    bad = tmp_path / "overlap.yaml"
    bad.write_text(f"name: bad\npools: {{{pool}: '{net}'}}\nrouters: {{r1: {{asn: 65001}}}}\n"
                   "sites: {s1: {router: r1, asn: 65100, colour: red}}\n")
    result = run_module("validate", str(bad), "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    errors = {(e["path"], e["line"]): e["message"] for e in json.loads(result.stdout)["errors"]}
    assert "a network of this machine" in errors[(f"pools.{pool}", 2)]
    assert "unknown key 'colour'" in errors[("sites.s1.colour", 4)]
    human = run_module("validate", str(bad))
    assert human.returncode == 2
    assert f"{bad}:2: pools.{pool}: " in human.stderr and f"{bad}:4: sites.s1" in human.stderr
