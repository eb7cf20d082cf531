"""Golden tests: every file in tests/topologies/bad/ is rejected with exactly the problems
in its `.expected` file, one per line, rendered as `f"{problem.line}: {problem}"`.

A case with a `NAME.xfail` file documents a known validator bug: its `.expected` holds the
CORRECT output (not what the code prints today), and the `.xfail` file says what is wrong.
The test is a strict xfail, so fixing the bug makes it fail until the `.xfail` is removed.

Maintainers: after an intended message change, regenerate the goldens with
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_bad_topologies.py
then read the diff: a golden is a claim that the output is right, not a snapshot.
Goldens of `.xfail` cases are never rewritten.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from lab.model import Report, load_file

TOPOLOGIES = Path(__file__).resolve().parents[1] / "topologies"
BAD = TOPOLOGIES / "bad"
GOOD = TOPOLOGIES / "good"
MIN_CASES = 30
LINE_RE = re.compile(r"^(None|[1-9]\d*): \S")


def render(report: Report) -> str:
    return "".join(f"{p.line}: {p}\n" for p in report.problems)


def known_bug(case: Path) -> str | None:
    """The reason a case is expected to fail today, or None for a normal case."""
    marker = case.with_suffix(".xfail")
    return marker.read_text().strip() if marker.exists() else None


def check_case(case: Path) -> None:
    """Assert that `case` is rejected with exactly its golden problems.

    With UPDATE_GOLDEN=1 the golden is first rewritten from the validator's output
    (except for known-bug cases), and the assertions still run.
    """
    report = load_file(case)
    actual = render(report)
    golden = case.with_suffix(".expected")
    if os.environ.get("UPDATE_GOLDEN") == "1" and known_bug(case) is None:
        golden.write_text(actual)
    assert golden.exists(), f"{golden.name} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert report.ok is False, f"{case.name} was accepted as a valid topology"
    assert report.problems, f"{case.name}: not ok, but no problem reported"
    assert actual == golden.read_text(), f"{case.name}: problems differ from {golden.name}"


def _params() -> list[object]:
    params: list[object] = []
    for case in sorted(BAD.glob("*.yaml")):
        reason = known_bug(case)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(case, id=case.stem, marks=marks))
    return params


@pytest.mark.timeout(20)  # hostile cases (alias bombs, deep nesting) must end, and quickly
@pytest.mark.parametrize("case", _params())
def test_bad_topology_matches_golden(case: Path) -> None:
    check_case(case)


def test_corpus_is_large_enough() -> None:
    normal = [c for c in BAD.glob("*.yaml") if known_bug(c) is None]
    assert len(normal) >= MIN_CASES


def test_corpus_files_are_paired() -> None:
    cases = {p.stem for p in BAD.glob("*.yaml")}
    goldens = {p.stem for p in BAD.glob("*.expected")}
    markers = {p.stem for p in BAD.glob("*.xfail")}
    known = ({f"{c}.yaml" for c in cases} | {f"{g}.expected" for g in goldens}
             | {f"{m}.xfail" for m in markers})
    others = {p.name for p in BAD.iterdir()} - known
    assert goldens == cases, "every case needs a golden and every golden a case"
    assert markers <= cases, "an .xfail marker without its case"
    assert not others, f"unexpected files in {BAD}: {sorted(others)}"


@pytest.mark.parametrize("golden", sorted(BAD.glob("*.expected")), ids=lambda p: p.stem)
def test_golden_lines_are_well_formed(golden: Path) -> None:
    text = golden.read_text()
    assert text.endswith("\n")
    for line in text.splitlines():
        assert LINE_RE.match(line), f"{golden.name}: {line!r} is not 'LINE: [PATH: ]MESSAGE'"


def test_corpus_base_is_valid() -> None:
    """The cases start from good/minimal.yaml: it must itself be valid."""
    report = load_file(GOOD / "minimal.yaml")
    assert report.ok, render(report)


def _copy_case(tmp_path: Path, name: str, golden_text: str, *, xfail: bool = False) -> Path:
    case = tmp_path / f"{name}.yaml"
    shutil.copy(BAD / f"{name}.yaml", case)
    case.with_suffix(".expected").write_text(golden_text)
    if xfail:
        case.with_suffix(".xfail").write_text("known bug\n")
    return case


def test_normal_mode_compares_and_never_writes(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPDATE_GOLDEN", raising=False)
    case = _copy_case(tmp_path, "self-link", "1: stale golden\n")
    with pytest.raises(AssertionError, match="problems differ"):
        check_case(case)
    assert case.with_suffix(".expected").read_text() == "1: stale golden\n"


def test_update_golden_rewrites_the_golden(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPDATE_GOLDEN", "1")
    case = _copy_case(tmp_path, "self-link", "1: stale golden\n")
    check_case(case)
    assert case.with_suffix(".expected").read_text() == (BAD / "self-link.expected").read_text()
    # A new case without a golden gets one too.
    fresh = tmp_path / "fresh.yaml"
    shutil.copy(BAD / "duplicate-link.yaml", fresh)
    check_case(fresh)
    assert fresh.with_suffix(".expected").read_text() == render(load_file(fresh))


def test_update_golden_still_asserts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Update mode must not turn a valid file into a passing 'bad' case."""
    monkeypatch.setenv("UPDATE_GOLDEN", "1")
    good = tmp_path / "actually-good.yaml"
    shutil.copy(GOOD / "minimal.yaml", good)
    with pytest.raises(AssertionError, match="accepted as a valid topology"):
        check_case(good)


def test_update_golden_keeps_known_bug_goldens(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPDATE_GOLDEN", "1")
    case = _copy_case(tmp_path, "self-link", "1: the correct output\n", xfail=True)
    with pytest.raises(AssertionError):
        check_case(case)
    assert case.with_suffix(".expected").read_text() == "1: the correct output\n"
