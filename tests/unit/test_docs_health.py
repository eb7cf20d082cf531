"""docs/topologies.md documents every field of a topology's `health` section, each with
the default the model gives it (for the per-check pace: every check's default)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from lab.model.topology import CHECK_DEFAULTS, CheckTiming, ExabgpHealthcheck, Health

DOC = Path(__file__).resolve().parents[2] / "docs" / "topologies.md"


def _fields() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for name, info in Health.model_fields.items():
        if isinstance(info.default, BaseModel):
            continue
        found.append((name, info.default))
    for name, info in ExabgpHealthcheck.model_fields.items():
        found.append((f"exabgp_healthcheck.{name}", info.default))
    return found


def _shown(value: object) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`"
    return str(value)


@pytest.mark.parametrize(("field", "default"), _fields(), ids=lambda v: str(v))
def test_every_health_field_has_a_row_with_its_default(field: str, default: object) -> None:
    rows = [line for line in DOC.read_text().splitlines() if line.startswith(f"| `{field}` |")]
    assert rows, f"docs/topologies.md has no row for health.{field}"
    assert rows[0].split("|")[2].strip() == _shown(default), rows[0]


def _pace_shown(check: str, field: str) -> str:
    value = getattr(CHECK_DEFAULTS[check], field if field in ("rise", "fall") else
                    f"{field}_ms")
    return str(value) if field in ("rise", "fall") else f"`{value}ms`"


@pytest.mark.parametrize("field", list(CheckTiming.model_fields))
def test_every_check_pace_field_has_a_row_with_each_checks_default(field: str) -> None:
    rows = [line for line in DOC.read_text().splitlines()
            if line.startswith(f"| `checks.<check>.{field}` |")]
    assert rows, f"docs/topologies.md has no row for health.checks.<check>.{field}"
    shown = rows[0].split("|")[2].strip()
    assert shown.startswith(" / ".join(_pace_shown(c, field) for c in CHECK_DEFAULTS)), rows[0]
