"""Scenarios on real labs: every shipped scenario passes (several on one lab, each
starting and ending with `reset`), a wrong expectation exits 1 naming its step, JUnit
output parses, `scenario run` without --lab brings a lab up and takes it down, and
`reset` returns the lab to normal after each kind of fault."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.host import labs
from lab.host.journal import Journal
from lab.ops import revocations
from lab.ops.faults import fault_names, lookup
from lab.scenario import catalog
from lab.scenario.load import load_file

from .helpers import DEFAULT, LabHandle, lab_cli, unique_name


def shipped_by_topology() -> list[tuple[Path, str]]:
    """Every shipped scenario with its topology file, grouped by topology (default first):
    the labs they need come up one after the other."""
    out = []
    for path in catalog.shipped():
        report = load_file(path)
        assert report.scenario is not None and report.topology_path is not None, path
        out.append((report.topology_path.resolve(), path.stem))
    return sorted(out, key=lambda pair: (pair[0] != DEFAULT.resolve(), str(pair[0]), pair[1]))


@pytest.fixture(scope="module")
def scenario_lab() -> Iterator[labs.Lab]:
    """One default lab the scenarios share (each resets it before and after)."""
    handle = LabHandle(unique_name("sc"), DEFAULT)
    try:
        yield handle.up()
    finally:
        handle.down()


class OtherLabs:
    """A lab for each other topology the shipped scenarios run on, one up at a time (the
    tests come grouped by topology, so each comes up once)."""

    def __init__(self) -> None:
        self.topology: Path | None = None
        self.handle: LabHandle | None = None
        self.lab: labs.Lab | None = None

    def get(self, topology: Path) -> labs.Lab:
        if self.topology != topology or self.lab is None:
            self.close()
            self.topology, self.handle = topology, LabHandle(unique_name("so"), topology)
            self.lab = self.handle.up()
        return self.lab

    def close(self) -> None:
        if self.handle is not None:
            self.handle.down()
        self.topology = self.handle = self.lab = None


@pytest.fixture(scope="module")
def other_labs() -> Iterator[OtherLabs]:
    others = OtherLabs()
    try:
        yield others
    finally:
        others.close()


def run(name: str, lab: str, *extra: str) -> tuple[int, dict[str, Any]]:
    result = lab_cli("scenario", "run", name, "--lab", lab, "--json", *extra, timeout=400)
    try:
        report = json.loads(result.stdout)
    except ValueError as exc:
        raise AssertionError(f"no JSON from scenario run: {result.stderr[-2000:]}") from exc
    return result.returncode, report


def failures(report: dict[str, Any]) -> list[str]:
    return [s.get("message", s["name"]) for s in report.get("steps", []) if not s["ok"]] \
        or [str(report.get("error"))]


@pytest.mark.parametrize(("topology", "name"), shipped_by_topology(),
                         ids=[name for _, name in shipped_by_topology()])
def test_shipped_scenario_passes(request: pytest.FixtureRequest, topology: Path, name: str,
                                 tmp_path: Path) -> None:
    if topology == DEFAULT.resolve():
        lab = request.getfixturevalue("scenario_lab")
    else:
        lab = request.getfixturevalue("other_labs").get(topology)
    junit = tmp_path / "junit.xml"
    code, report = run(name, lab.name, "--junit", str(junit))
    assert code == 0 and report["ok"], failures(report)
    assert report["failed"] == 0 and report["passed"] == len(report["steps"])
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == name
    assert suite.get("failures") == "0" and len(suite.findall("testcase")) == report["passed"]


WRONG = """\
name: wrong-expectation
title: A scenario whose second step expects the wrong site
topology: {topology}
steps:
  - name: all is well
    expect:
      - {{client: c-eu, at: ams}}
  - name: ams fails and c-eu goes to sin
    do: fail ams dns
    within: 3s
    expect:
      - {{site: ams, announced: false}}
      - {{client: c-eu, at: sin}}
  - name: never reached
    do: heal ams
    expect:
      - {{client: c-eu, at: ams}}
"""


def test_a_wrong_expectation_exits_1_and_names_the_step(scenario_lab: labs.Lab,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "wrong.yaml"
    path.write_text(WRONG.format(topology=DEFAULT) + "stop_on_error: true\n")
    junit = tmp_path / "junit.xml"
    code, report = run(str(path), scenario_lab.name, "--junit", str(junit))
    assert code == 1 and report["ok"] is False
    first, second, third = report["steps"]
    assert first["ok"] and not second["ok"] and third.get("skipped")
    assert second["message"].startswith("step 2 'ams fails and c-eu goes to sin': expected "
                                        "c-eu answered by sin (v4, v6); observed v4 nyc")
    assert second["timed_out"]
    assert [v["ok"] for v in second["expect"]] == [True, False]
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("failures"), suite.get("skipped")) == ("1", "1")
    human = lab_cli("scenario", "run", str(path), "--lab", scenario_lab.name, timeout=300)
    assert human.returncode == 1
    assert "step 2 'ams fails and c-eu goes to sin'" in human.stdout
    # The run ended with a reset: the lab is normal again.
    assert lab_cli("reset", "--lab", scenario_lab.name).returncode == 0
    assert not json.loads(lab_cli("status", "--lab", scenario_lab.name, "--json").stdout
                          )["faults"]


def test_a_bad_scenario_exits_2_before_touching_the_lab(scenario_lab: labs.Lab,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(WRONG.format(topology=DEFAULT).replace("fail ams dns", "fail ams dnz"))
    result = lab_cli("scenario", "run", str(path), "--lab", scenario_lab.name, "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert "steps[1].do: unknown fault 'dnz'" in error["message"]
    two = lab_cli("scenario", "run", "ecmp-hash", "--lab", scenario_lab.name)
    assert two.returncode == 2 and "does not run this scenario's topology" in two.stderr


def test_run_without_a_lab_brings_one_up_and_takes_it_down() -> None:
    name = unique_name("sn")
    handle = LabHandle(name, DEFAULT)
    try:
        result = lab_cli("scenario", "run", "catchment-basics", "--name", name, "--json",
                         timeout=400)
        report = json.loads(result.stdout)
        assert result.returncode == 0 and report["ok"], failures(report)
        assert report["lab"] == name and report["kept"] is False
        assert not Journal(name).exists()
    finally:
        handle.down()


def normal(lab: str) -> dict[str, Any]:
    """The lab's status, asserted normal: no fault, no drain, every client at its site,
    every site's revocation list at one version."""
    report = json.loads(lab_cli("status", "--lab", lab, "--json").stdout)
    assert report["ok"], report["problems"]
    assert report["faults"] == []
    assert all(c["as_expected"] == "expected" for c in report["clients"].values()), \
        report["clients"]
    assert all(s["announced"] and not s["drained"] and s["health"] == "up"
               for s in report["sites"].values())
    assert report["impairments"] == {}
    versions = {v for v, _ in revocations.lists(labs.open_lab(lab)).values()}
    assert len(versions) == 1, versions
    return report


def reset(lab: str) -> dict[str, Any]:
    result = lab_cli("reset", "--lab", lab, "--json", timeout=120)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], report.get("problems")
    return report


# Every fault this lab can have: the default topology runs no BFD responder (test_bfd.py
# fails and heals that one on a lab with BFD on).
@pytest.mark.parametrize("fault", [f for f in fault_names() if f != "bfd"])
def test_reset_after_each_fault(scenario_lab: labs.Lab, fault: str) -> None:
    name = scenario_lab.name
    issuer = scenario_lab.plan.issuer
    at = issuer.name if lookup(fault).at_issuer and issuer is not None else "nyc"
    failed = lab_cli("fail", at, fault, "--lab", name)
    assert failed.returncode == 0, failed.stderr
    report = reset(name)
    assert [h["fault"] for h in report["healed"]] == [fault]
    normal(name)


def test_reset_after_drain_impairment_and_a_stale_list(scenario_lab: labs.Lab) -> None:
    name = scenario_lab.name
    assert lab_cli("drain", "sin", "--lab", name).returncode == 0
    assert lab_cli("impair", "r-eu--r-us", "--loss", "5", "--lab", name).returncode == 0
    revocations.forget(labs.open_lab(name), "ams")
    assert lab_cli("fail", "ams", "dns-hang", "--lab", name).returncode == 0
    hash_policy = ["exec", "r-eu", "--lab", name, "--", "sysctl", "-n",
                   "net.ipv4.fib_multipath_hash_policy"]
    assert lab_cli("exec", "r-eu", "--lab", name, "--", "sysctl", "-qw",
                   "net.ipv4.fib_multipath_hash_policy=1").returncode == 0
    report = reset(name)
    assert lab_cli(*hash_policy).stdout.strip() == "0"  # the topology's L3 hash again
    assert report["undrained"] == ["sin"]
    assert report["impairments_cleared"] == ["r-eu--r-us"]
    assert len(set(report["revocation_versions"].values())) == 1
    normal(name)
    again = reset(name)  # a lab that is normal: nothing to undo, the lists left alone
    assert again["healed"] == [] and again["undrained"] == []
    assert again["revocation_versions"] == report["revocation_versions"]
