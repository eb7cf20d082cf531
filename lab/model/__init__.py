"""What a lab is before anything exists (pure): the typed topology, loading with line numbers,
semantic checks, JSON Schema, generator, the address plan, the errors every layer raises.

Importing the package (or a light module of it, such as `lab.model.errors` or
`lab.model.names`) loads nothing else: the topology model and its loader (pydantic) are
imported when one of the names below is first used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.model.load import Problem, Report, load_file, load_text
    from lab.model.topology import Topology, valid_lab_name

_EXPORTS = {"Problem": "lab.model.load", "Report": "lab.model.load",
            "load_file": "lab.model.load", "load_text": "lab.model.load",
            "Topology": "lab.model.topology", "valid_lab_name": "lab.model.names"}

__all__ = ["Problem", "Report", "Topology", "load_file", "load_text", "valid_lab_name"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lab.model' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
