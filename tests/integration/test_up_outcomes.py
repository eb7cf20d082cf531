"""What `up` does when the lab is not what the file says: a wrong `expect:` fails fast
(well inside the convergence deadline) naming the client, what answered it and its
router's path, and is rolled back or, on request, kept for `status`; a running lab of the
same name with another topology is refused with what differs, and `--replace` rebuilds
it. Real labs, unique names, always torn down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from lab.host import labs
from lab.host.journal import Journal, lab_dir
from lab.render.launch import node_dir

from .helpers import DEFAULT, ROOT, lab_cli, leftovers, nothing_left

CONVERGE_DEADLINE_S = 60  # lifecycle.up's default


def copy(directory: Path, name: str, **sections: Any) -> Path:
    """The default topology named `name`, with top-level sections merged in."""
    data = yaml.safe_load(DEFAULT.read_text())
    data["name"] = name
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# c-eu is answered by ams (its own region); this file claims nyc.
WRONG = {"clients": {"c-eu": {"router": "r-eu", "expect": "nyc", "failover": "ams"},
                     "c-us": {"router": "r-us", "expect": "nyc", "failover": "ams"},
                     "c-ap": {"router": "r-ap", "expect": "sin", "failover": "ams"}}}


def up_json(path: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = lab_cli("up", str(path), "--json", *flags, timeout=CONVERGE_DEADLINE_S * 3)
    return result, time.monotonic() - started


def settled_wrong_error(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == 1
    assert error["message"].startswith("routing settled, but not as the topology expects")
    assert "c-eu (v4) by ams, expected nyc" in error["message"], error
    assert "c-eu (v6) by ams, expected nyc" in error["message"], error
    assert "c-us" not in error["message"] and "c-ap" not in error["message"], error
    paths = [d for d in error["details"] if "'s path:" in d]
    assert paths == [
        "client c-eu (v4) is answered by ams, expected nyc; r-eu's path: r-eu > ams "
        "(AS path 65100)",
        "client c-eu (v6) is answered by ams, expected nyc; r-eu's path: r-eu > ams "
        "(AS path 65100)"], error
    return error


def test_a_wrong_expect_fails_fast_and_is_rolled_back(make_lab, tmp_path) -> None:
    """With the topology's default to keep, --no-keep-on-failure still rolls back."""
    handle = make_lab(DEFAULT, prefix="wr")
    path = copy(tmp_path, handle.name, up={"keep_on_failure": True}, **WRONG)
    result, elapsed = up_json(path, "--no-keep-on-failure")
    error = settled_wrong_error(result)
    assert elapsed < CONVERGE_DEADLINE_S / 2, f"up took {elapsed:.1f} s"
    assert any("--keep-on-failure" in d for d in error["details"]), error
    assert nothing_left(handle.name, handle.dir), leftovers(handle.name, handle.dir)


def test_keep_on_failure_leaves_the_lab_for_status(make_lab, tmp_path) -> None:
    handle = make_lab(DEFAULT, prefix="wk")
    path = copy(tmp_path, handle.name, **WRONG)
    result, elapsed = up_json(path, "--keep-on-failure")
    error = settled_wrong_error(result)
    assert elapsed < CONVERGE_DEADLINE_S / 2, f"up took {elapsed:.1f} s"
    assert any(d.startswith(f"lab '{handle.name}' is left up for inspection")
               for d in error["details"]), error

    status = lab_cli("status", "--lab", handle.name, "--json")
    assert status.returncode == 1, status.stderr
    report = json.loads(status.stdout)
    assert report["phase"] == "failed"
    assert report["clients"]["c-eu"]["site"] == "ams"
    assert "client c-eu (v4) is answered by ams, expected nyc" in report["problems"]
    listed = {e["name"]: e for e in json.loads(lab_cli("list", "--json").stdout)["labs"]}
    assert listed[handle.name]["phase"] == "failed"
    assert listed[handle.name]["failure"] == error["message"]

    # A corrected file under the same name rebuilds the kept lab.
    fixed = copy(tmp_path, handle.name)
    again = lab_cli("up", str(fixed), timeout=CONVERGE_DEADLINE_S * 3)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "kept after a failed `up`: removing it to build again" in again.stderr
    assert Journal(handle.name).state()["phase"] == "up"


def test_the_topology_default_keeps_the_lab_and_make_lab_down_removes_it(
        make_lab, tmp_path) -> None:
    handle = make_lab(DEFAULT, prefix="wd")
    path = copy(tmp_path, handle.name, up={"keep_on_failure": True}, **WRONG)
    result, _ = up_json(path)
    settled_wrong_error(result)
    assert Journal(handle.name).state()["phase"] == "failed"
    assert leftovers(handle.name, handle.dir)["namespaces"], "the lab was not kept"

    venv = Path(sys.executable).parent.parent
    down = subprocess.run(["make", "--no-print-directory", "lab-down", f"VENV={venv}",
                           f"TOPOLOGY={path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ))
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"lab '{handle.name}' down:" in down.stdout
    assert nothing_left(handle.name, handle.dir), leftovers(handle.name, handle.dir)


def test_up_of_another_topology_refuses_and_replace_rebuilds(make_lab, tmp_path) -> None:
    handle = make_lab(DEFAULT, prefix="rp")
    handle.up()
    before = Journal(handle.name).state()
    edited = copy(tmp_path, handle.name, bgp={"hold_time": 6, "keepalive_time": 2})

    refused = lab_cli("up", str(edited))
    assert refused.returncode == 1, refused.stderr
    assert refused.stdout == ""
    message = refused.stderr.replace("\n", " ")
    assert f"lab '{handle.name}' is up with a different topology (2 changes: " \
           "bgp.hold_time: 3 -> 6)" in message, message
    assert "bgp.keepalive_time: 1 -> 2" in message, message
    assert f"--name {handle.name} --replace" in message, message
    assert f"anycast-lab down --lab {handle.name}" in message, message
    assert labs.open_lab(handle.name).topology.bgp.hold_time == 3  # untouched

    replaced = lab_cli("up", str(edited), "--replace", timeout=180)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert "--replace: tearing down the running lab" in replaced.stderr
    rebuilt = labs.open_lab(handle.name)
    assert rebuilt.topology.bgp.hold_time == 6
    assert rebuilt.state["started"] > before["started"]
    conf = (node_dir(lab_dir(handle.name), "r-eu") / "bird.conf").read_text()
    assert "hold time 6" in conf

    same = lab_cli("up", str(edited), "--json")
    assert same.returncode == 0 and "already up with this topology" in same.stderr
