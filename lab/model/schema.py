"""JSON Schema of the topology file, generated from the model (for editors)."""

from __future__ import annotations

from typing import Any

from lab.model.topology import Topology

SCHEMA_ID = "https://anycast-lab.invalid/schema/topology.json"


def topology_schema() -> dict[str, Any]:
    schema = Topology.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "anycast-lab topology"
    return schema
