"""JSON Schema of the scenario file, generated from the model (committed as
scenarios/schema.json, for editors)."""

from __future__ import annotations

from typing import Any

from lab.model.schema import file_schema
from lab.scenario.model import Scenario

SCHEMA_ID = "https://anycast-lab.invalid/schema/scenario.json"


def scenario_schema() -> dict[str, Any]:
    return file_schema(Scenario, SCHEMA_ID, "anycast-lab scenario")
