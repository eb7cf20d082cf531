"""The committed JSON Schema (topologies/schema.json, for editors) matches the model."""

import json
from pathlib import Path

from lab.model.schema import topology_schema

SCHEMA = Path(__file__).resolve().parents[2] / "topologies" / "schema.json"


def test_committed_schema_is_current():
    assert json.loads(SCHEMA.read_text()) == topology_schema(), (
        "topologies/schema.json is stale: run `anycast-lab schema > topologies/schema.json`")
