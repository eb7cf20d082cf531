"""JUnit XML of a scenario run, checked against the shape CI systems read (the Jenkins /
Ant JUnit schema most readers follow): <testsuites> of <testsuite> of <testcase>, counts
that add up, times as decimal seconds, and a <failure> or <skipped> where due."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from lab.scenario.junit import junit_tree, write_junit

SUITE_ATTRS = {"name", "tests", "failures", "errors", "skipped", "time"}
CASE_ATTRS = {"classname", "name", "time"}
CASE_CHILDREN = {"failure", "error", "skipped", "system-out", "system-err"}


def report() -> dict[str, Any]:
    ok_step = {"index": 1, "name": "every client at its site", "do": None, "ok": True,
               "elapsed_s": 0.02, "explain": "shortest AS path",
               "expect": [{"ok": True, "expected": "c-eu answered by ams (v4, v6)",
                           "observed": "v4 ams, v6 ams", "values": {}}]}
    bad_step = {"index": 2, "name": "ams's DNS hangs <&> \"quoted\"", "do": "fail ams dns-hang",
                "ok": False, "elapsed_s": 5.01, "timed_out": True, "explain": "",
                "action": {"ok": True, "said": "ams: freeze", "details": {}},
                "message": "step 2 'ams's DNS hangs': expected c-eu answered by sin (v4, v6); "
                           "observed v4 nyc, v6 nyc (not within 5s)",
                "expect": [{"ok": False, "expected": "c-eu answered by sin (v4, v6)",
                            "observed": "v4 nyc, v6 nyc", "values": {}}]}
    skipped = {"index": 3, "name": "heal", "do": "heal ams", "ok": False, "skipped": True,
               "expect": [], "elapsed_s": 0.0, "explain": ""}
    return {"scenario": "demo", "title": "Demo", "lab": "l1", "ok": False, "passed": 1,
            "failed": 1, "skipped": 1, "elapsed_s": 5.2, "steps": [ok_step, bad_step, skipped]}


def check_shape(root: ET.Element) -> None:
    assert root.tag == "testsuites"
    for suite in root:
        assert suite.tag == "testsuite"
        assert set(suite.attrib) >= SUITE_ATTRS
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(cases)
        assert int(suite.get("failures", "-1")) == sum(1 for c in cases
                                                       if c.find("failure") is not None)
        assert int(suite.get("skipped", "-1")) == sum(1 for c in cases
                                                      if c.find("skipped") is not None)
        float(suite.get("time", "x"))
        assert {child.tag for child in suite} <= {"properties", "testcase"}
        for case in cases:
            assert set(case.attrib) >= CASE_ATTRS
            float(case.get("time", "x"))
            assert {child.tag for child in case} <= CASE_CHILDREN
            failure = case.find("failure")
            if failure is not None:
                assert failure.get("message")


def test_junit_has_the_shape_ci_systems_read(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    write_junit(report(), path)
    assert path.read_bytes().startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = ET.parse(path).getroot()
    check_shape(root)
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["01 every client at its site",
                                              "02 ams's DNS hangs <&> \"quoted\"", "03 heal"]
    failure = cases[1].find("failure")
    assert failure is not None and "observed v4 nyc" in (failure.get("message") or "")
    assert "FAILED: expected c-eu answered by sin" in (failure.text or "")
    assert cases[2].find("skipped") is not None
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None


def test_a_passing_run_has_no_failure() -> None:
    passing = report()
    passing["steps"] = passing["steps"][:1]
    passing.update(failed=0, skipped=0, ok=True)
    root = junit_tree(passing).getroot()
    check_shape(root)
    assert root.find(".//failure") is None and root.get("failures") == "0"


def test_a_failed_closing_reset_is_a_failed_case() -> None:
    passing = report()
    passing["steps"] = passing["steps"][:1]
    passing["reset_after"] = {"ok": False, "elapsed_s": 60.0,
                              "problems": ["site nyc is not announced"]}
    root = junit_tree(passing).getroot()
    check_shape(root)
    cases = root.findall("./testsuite/testcase")
    assert cases[-1].get("name") == "02 reset after the last step"
    failure = cases[-1].find("failure")
    assert failure is not None and failure.get("message") == "reset: site nyc is not announced"
