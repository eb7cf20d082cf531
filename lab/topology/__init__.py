"""Topology files: the typed model, loading with line numbers, and semantic checks."""

from lab.topology.load import Problem, Report, load_file, load_text
from lab.topology.model import Topology, valid_lab_name

__all__ = ["Problem", "Report", "Topology", "load_file", "load_text", "valid_lab_name"]
