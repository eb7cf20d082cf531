"""JSON Schema of the scenario file, generated from the model (committed as
scenarios/schema.json, for editors)."""

from __future__ import annotations

from typing import Any

from lab.scenario.model import Scenario

SCHEMA_ID = "https://anycast-lab.invalid/schema/scenario.json"


def scenario_schema() -> dict[str, Any]:
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "anycast-lab scenario"
    return schema
