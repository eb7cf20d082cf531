"""Golden tests: every file in tests/scenarios/bad/ is rejected with exactly the problems
in its `.expected` file, one per line, rendered as `f"{problem.line}: {problem}"`.

After an intended message change, regenerate with
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_bad_scenarios.py
and read the diff: a golden is a claim that the output is right, not a snapshot.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab.scenario.load import ScenarioReport, load_file

BAD = Path(__file__).resolve().parents[1] / "scenarios" / "bad"
MIN_CASES = 20


def render(report: ScenarioReport) -> str:
    return "".join(f"{p.line}: {p}\n" for p in report.problems)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", sorted(BAD.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_scenario_matches_golden(case: Path) -> None:
    report = load_file(case)
    actual = render(report)
    golden = case.with_suffix(".expected")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(actual)
    assert golden.exists(), f"{golden.name} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert not report.ok and report.problems, f"{case.name} was accepted"
    assert actual == golden.read_text(), f"{case.name}: problems differ from {golden.name}"


def test_corpus_is_large_enough_and_paired() -> None:
    cases = {p.stem for p in BAD.glob("*.yaml")}
    goldens = {p.stem for p in BAD.glob("*.expected")}
    assert len(cases) >= MIN_CASES
    assert cases == goldens


def test_every_problem_has_a_line() -> None:
    """Every problem points at a line, but a top-level key that is missing: it has none."""
    for case in sorted(BAD.glob("*.yaml")):
        for p in load_file(case).problems:
            missing_at_top = "." not in p.path and p.message == "is required but missing"
            assert p.line or missing_at_top, f"{case.name}: {p}"
