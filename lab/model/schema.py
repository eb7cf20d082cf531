"""JSON Schema of the topology file, generated from the model (for editors); and how any
of the lab's file models (topology, scenario) becomes its committed schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from lab.model.topology import Topology

SCHEMA_ID = "https://anycast-lab.invalid/schema/topology.json"


def file_schema(model: type[BaseModel], schema_id: str, title: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a file that `model` reads, with its `$id` and
    `title`."""
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = schema_id
    schema["title"] = title
    return schema


def topology_schema() -> dict[str, Any]:
    return file_schema(Topology, SCHEMA_ID, "anycast-lab topology")
