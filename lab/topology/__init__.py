"""Topology files: the typed model, loading with line numbers, and semantic checks."""

from lab.topology.load import Problem, Report, load_file, load_text
from lab.topology.model import Topology

__all__ = ["Problem", "Report", "Topology", "load_file", "load_text"]
