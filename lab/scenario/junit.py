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


def junit_tree(report: dict[str, Any]) -> ET.ElementTree:
    steps = report.get("steps", [])
    root = ET.Element("testsuites", {
        "name": "anycast-lab scenarios", "tests": str(len(steps)),
        "failures": str(report.get("failed", 0)), "errors": "0",
        "skipped": str(report.get("skipped", 0)), "time": f"{report.get('elapsed_s', 0):.3f}"})
    suite = ET.SubElement(root, "testsuite", {
        "name": report["scenario"], "tests": str(len(steps)),
        "failures": str(report.get("failed", 0)), "errors": "0",
        "skipped": str(report.get("skipped", 0)), "time": f"{report.get('elapsed_s', 0):.3f}"})
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
