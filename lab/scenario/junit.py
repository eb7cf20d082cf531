"""A scenario run as JUnit XML, the shape CI systems (GitLab, Jenkins, GitHub's test
reporters) read: one <testsuite> per scenario, one <testcase> per step, a <failure> for
a step whose expectation did not hold, <skipped> for steps not run after a stop."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def _case_text(step: dict[str, Any]) -> str:
    lines = []
    action = step.get("action")
    if action:
        lines.append(f"do: {step.get('do')}: {action['said']}")
    for v in step.get("expect", []):
        lines.append(f"{'ok' if v['ok'] else 'FAILED'}: expected {v['expected']}; observed "
                     f"{v['observed']}")
    if step.get("explain"):
        lines.append(f"explain: {step['explain']}")
    return "\n".join(lines)


def _cases(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps, and the closing reset as one more case when it failed."""
    steps = list(report.get("steps", []))
    after = report.get("reset_after")
    if after and not after.get("ok", True):
        problems = after.get("problems") or ["the lab did not return to normal"]
        steps.append({"index": len(steps) + 1, "name": "reset after the last step",
                      "ok": False, "elapsed_s": after.get("elapsed_s", 0), "expect": [],
                      "message": f"reset: {problems[0]}", "explain": ""})
    return steps


def junit_tree(report: dict[str, Any]) -> ET.ElementTree:
    steps = _cases(report)
    skipped = sum(1 for s in steps if s.get("skipped"))
    failed = sum(1 for s in steps if not s["ok"] and not s.get("skipped"))
    counts = {"tests": str(len(steps)), "failures": str(failed), "errors": "0",
              "skipped": str(skipped), "time": f"{report.get('elapsed_s', 0):.3f}"}
    root = ET.Element("testsuites", {"name": "anycast-lab scenarios", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": report["scenario"], **counts})
    props = ET.SubElement(suite, "properties")
    for name, value in (("title", report.get("title", "")), ("lab", report.get("lab", ""))):
        ET.SubElement(props, "property", {"name": name, "value": str(value)})
    for step in steps:
        case = ET.SubElement(suite, "testcase", {
            "classname": f"scenario.{report['scenario']}",
            "name": f"{step['index']:02d} {step['name']}",
            "time": f"{step.get('elapsed_s', 0):.3f}"})
        if step.get("skipped"):
            ET.SubElement(case, "skipped", {"message": "not run: an earlier step failed and "
                                                       "the scenario stops on error"})
        elif not step["ok"]:
            failure = ET.SubElement(case, "failure", {"message": step.get("message", "failed"),
                                                      "type": "NotAsExpected"})
            failure.text = _case_text(step)
        out = _case_text(step)
        if out:
            ET.SubElement(case, "system-out").text = out
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report: dict[str, Any], path: Path) -> None:
    junit_tree(report).write(path, encoding="utf-8", xml_declaration=True)
