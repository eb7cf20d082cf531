"""Read a topology file: YAML (with line numbers) -> typed model -> semantic checks.

`load()` never touches the kernel. It returns every problem found, each with the
path of the field it concerns, so a user fixes them all in one go.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lab.topology.checks import check_topology
from lab.topology.model import Topology


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a topology: where, and what."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.message}"


@dataclass
class Report:
    """The outcome of validation: a model when `ok`, otherwise the problems."""

    source: str
    topology: Topology | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.topology is not None and not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "file": self.source,
            "errors": [{k: v for k, v in asdict(p).items() if v is not None}
                       for p in self.problems],
        }


def format_path(loc: tuple[Any, ...]) -> str:
    """('links', 0, 'endpoints') -> 'links[0].endpoints'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: dict[str, int],
          problems: list[Problem]) -> None:
    """Record the line of every path, and report duplicate mapping keys."""
    lines.setdefault(format_path(path), node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(Problem(format_path((*path, key)),
                                        f"duplicate key '{key}' (first defined on line "
                                        f"{seen[key]})", line))
                continue
            seen[key] = line
            lines[format_path((*path, key))] = line
            _walk(value_node, (*path, key), lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, problems)


def _pydantic_problems(exc: ValidationError, lines: dict[str, int]) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # A failing tuple item gives ('links', 0, 'endpoints', 1): keep it.
        path = format_path(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            message = f"unknown key '{loc[-1]}'"
            parent = format_path(loc[:-1])
            allowed = _allowed_keys(loc[:-1])
            if allowed:
                message += f" (allowed here: {', '.join(allowed)})"
            path = parent + (f".{loc[-1]}" if parent else str(loc[-1]))
        elif kind == "missing":
            message = "is required but missing"
        else:
            message = err["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, "):]
            if "input" in err and not isinstance(err["input"], dict | list):
                message += f" (got {err['input']!r})"
        problems.append(Problem(path, message, _line_for(path, lines)))
    return problems


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys a model accepts at a location, for 'unknown key' hints."""
    from lab.topology import model as m

    section_models = {"anycast": m.Anycast, "pools": m.Pools, "bgp": m.Bgp,
                      "routers": m.Router, "sites": m.Site, "clients": m.Client,
                      "links": m.Link}
    if not loc:
        return list(m.Topology.model_fields)
    if len(loc) >= 3 and loc[0] == "links" and loc[2] == "impair":
        return list(m.Impairment.model_fields)
    cls = section_models.get(loc[0])
    return list(cls.model_fields) if cls else []


def _line_for(path: str, lines: dict[str, int]) -> int | None:
    """The line of a path, or of its nearest ancestor present in the file."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def load_text(text: str, source: str = "<text>") -> Report:
    """Validate topology YAML text completely; never raises for bad input."""
    report = Report(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        report.problems.append(Problem("", f"YAML syntax error: {problem}", line))
        return report
    if root is None or not isinstance(root, yaml.MappingNode):
        report.problems.append(Problem("", "the file must be a YAML mapping with at least "
                                           "'name', 'routers' and 'sites'", 1))
        return report
    lines: dict[str, int] = {}
    _walk(root, (), lines, report.problems)
    data = yaml.safe_load(text)
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        report.problems.extend(_pydantic_problems(exc, lines))
        return report
    for path, message in check_topology(topology):
        report.problems.append(Problem(path, message, _line_for(path, lines)))
    if not report.problems:
        report.topology = topology
    return report


def load_file(path: str | Path) -> Report:
    """Validate a topology file; a missing or unreadable file is a problem, not a crash."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Report(str(p), problems=[Problem("", f"file '{p}' does not exist")])
    except (OSError, UnicodeDecodeError) as exc:
        return Report(str(p), problems=[Problem("", f"cannot read '{p}': {exc}")])
    return load_text(text, str(p))
