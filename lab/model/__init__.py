"""What a lab is before anything exists (pure): the typed topology, loading with line numbers,
semantic checks, JSON Schema, generator, the address plan, the errors every layer raises."""

from lab.model.load import Problem, Report, load_file, load_text
from lab.model.topology import Topology, valid_lab_name

__all__ = ["Problem", "Report", "Topology", "load_file", "load_text", "valid_lab_name"]
