"""The shipped scenarios (the repository's `scenarios/` directory) and finding one by
name or path."""

from __future__ import annotations

from pathlib import Path

from lab.model.errors import BadInput
from lab.scenario.load import ScenarioReport, load_file

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def shipped() -> list[Path]:
    """Every shipped scenario file, by name."""
    return sorted(p for p in SCENARIOS.glob("*.yaml"))


def find(spec: str) -> Path:
    """A shipped scenario's name, or a path to a scenario file (BadInput when neither)."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or "/" in spec:
        if not path.is_file():
            raise BadInput(f"scenario file '{spec}' does not exist")
        return path
    named = SCENARIOS / f"{spec}.yaml"
    if named.is_file():
        return named
    known = ", ".join(p.stem for p in shipped()) or "none"
    raise BadInput(f"no scenario named '{spec}' (shipped: {known}; or give a file path)")


def load_or_raise(path: Path) -> ScenarioReport:
    """A valid scenario's report; BadInput naming the first problem (the others as
    details) otherwise."""
    report = load_file(path)
    if report.ok:
        return report
    first = report.problems[0]
    where = f"{report.source}:{first.line}: " if first.line else f"{report.source}: "
    more = len(report.problems) - 1
    raise BadInput(f"{where}{first}" + (f" (and {more} more problem{'s' if more > 1 else ''})"
                                        if more else ""),
                   details=[f"{report.source}:{p.line or '?'}: {p}"
                            for p in report.problems[1:]])
