"""Read a topology file: YAML (with line numbers) -> typed model -> semantic checks.

`load_text()` never touches the kernel and never raises for bad input. It validates in
three stages; stages 2 and 3 report every problem they find (with the path of the field
it concerns and its line), so a user fixes a whole stage in one go:

1. YAML syntax. The first syntax error stops here: there is no document to check.
2. Structure: the YAML node tree (duplicate keys, which do not stop validation) and the
   typed model (types, ranges, unknown keys, missing fields, names YAML does not read
   as strings). A structural problem stops here too.
3. Semantics (`checks.py`): names, cross-references, ASNs, addresses. These checks need
   a structurally valid model, so they only run once stages 1 and 2 found nothing that
   stops validation; their problems show in the next round.

The final report lists the problems sorted by line (stable; problems without a line
last).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lab.topology.checks import check_topology
from lab.topology.model import Topology

_STR_TAG = "tag:yaml.org,2002:str"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_NULL_TAG = "tag:yaml.org,2002:null"
NEEDS = "a topology needs at least 'name', 'routers' and 'sites'"

# Examples shown when a section's item is not a mapping.
MAPPING_EXAMPLES = {
    "Router": "{asn: 65001}",
    "Site": "{router: r1, asn: 65100}",
    "Client": "{router: r1, expect: s1}",
    "Impairment": "{delay: 20ms}",
    "Link": "{endpoints: [r1, r2]}",
    "Anycast": "{ipv4: 203.0.113.53/32, ipv6: '2001:db8:53::53/128'}",
    "Pools": "{links4: 100.64.0.0/16, links6: 'fd00:a11c:ab::/48'}",
    "Bgp": "{hold_time: 9, keepalive_time: 3}",
}
SECTION_EXAMPLES = {
    "routers": "router names to routers, such as {r1: {asn: 65001}}",
    "sites": "site names to sites, such as {s1: {router: r1, asn: 65100}}",
    "clients": "client names to clients, such as {c1: {router: r1, expect: s1}}",
}
# Fields whose value is a node name (besides link endpoints).
NAME_FIELDS = frozenset({"name", "router", "expect", "failover"})


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
        """Each error has "path", "message" and "line" (null when unknown)."""
        return {
            "ok": self.ok,
            "file": self.source,
            "errors": [asdict(p) for p in self.problems],
        }


def format_path(loc: tuple[Any, ...]) -> str:
    """('links', 0, 'endpoints') -> 'links[0].endpoints'."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _key_text(node: yaml.Node) -> str:
    """A mapping key as written in the file (scalars), or a short stand-in."""
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    return "<complex key>"


def _drop_under(lines: dict[str, int], path: str) -> None:
    """Forget the lines recorded for `path` and everything below it."""
    for known in [p for p in lines if p == path or p.startswith((f"{path}.", f"{path}["))]:
        del lines[known]


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: dict[str, int],
          problems: list[Problem]) -> None:
    """Record the line of every path, and report duplicate mapping keys.

    Paths use the keys as written. For a duplicate key YAML keeps the LAST definition,
    so its line and its value's lines are the ones recorded.
    """
    lines.setdefault(format_path(path), node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            key = _key_text(key_node)
            line = key_node.start_mark.line + 1
            child = format_path((*path, key))
            ident = (key_node.tag, key)
            if ident in seen:
                problems.append(Problem(child, f"duplicate key '{key}' (first defined on "
                                               f"line {seen[ident]})", line))
                _drop_under(lines, child)
            seen[ident] = line
            lines[child] = line
            _walk(value_node, (*path, key), lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, problems)


class _Tree:
    """Maps pydantic's error locations back to the YAML nodes they came from."""

    def __init__(self, root: yaml.Node) -> None:
        self.root = root
        self._constructor = yaml.SafeLoader("")

    def _value(self, node: yaml.Node) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, TypeError, ValueError):  # such a key just never matches
            return _NO_MATCH

    def find_key(self, mapping: yaml.Node | None, part: Any,
                 *, exact: bool = False) -> tuple[yaml.Node, yaml.Node] | None:
        """The (key, value) nodes of `mapping` for a loc part; the last one wins."""
        if not isinstance(mapping, yaml.MappingNode):
            return None
        typed = loose = None
        for key_node, value_node in mapping.value:
            value = self._value(key_node)
            if type(value) is type(part) and value == part:
                typed = (key_node, value_node)
            elif not exact and _loc_form(value) == part and type(_loc_form(value)) is type(
                    part):
                loose = (key_node, value_node)
        return typed or loose

    def resolve(self, loc: tuple[Any, ...]) -> tuple[list[Any], yaml.Node | None]:
        """The path parts (keys as written) and the node of a loc (None if absent)."""
        parts: list[Any] = []
        node: yaml.Node | None = self.root
        for part in loc:
            if isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                    and not isinstance(part, bool) and 0 <= part < len(node.value):
                parts.append(part)
                node = node.value[part]
                continue
            found = self.find_key(node, part)
            if found is not None:
                parts.append(_key_text(found[0]))
                node = found[1]
            else:
                parts.append(part if isinstance(part, int) and not isinstance(part, bool)
                             else str(part))
                node = None
        return parts, node


_NO_MATCH = object()


def _loc_form(value: Any) -> Any:
    """How pydantic writes a dict key in an error location (True -> 1, 1.5 -> '1.5')."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | str):
        return value
    return str(value)


def _plain_scalar(node: yaml.Node | None) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.style is None


def _not_a_string(node: yaml.Node, value: Any, *, name: bool) -> str | None:
    """Why an unquoted scalar that YAML read as a non-string is not a name, or None."""
    if not _plain_scalar(node) or node.tag == _STR_TAG:
        return None
    text = node.value
    if node.tag == _BOOL_TAG:
        what = "the name" if name else "it"
        return (f"YAML reads {text} as the boolean {str(bool(value)).lower()}: "
                f"quote {what} ('{text}')")
    if not name:
        return None
    if node.tag == _NULL_TAG:
        return f"YAML reads {text or 'an empty value'} as null: write a name"
    return f"names must be strings: quote it ('{text}')"


def _pydantic_problems(exc: ValidationError, tree: _Tree,
                       lines: dict[str, int]) -> list[Problem]:
    problems: list[Problem] = []
    done: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        path, message = _describe(err, tree)
        if (path, message) in done:
            continue
        done.add((path, message))
        problems.append(Problem(path, message, _line_for(path, lines)))
    return problems


def _describe(err: Any, tree: _Tree) -> tuple[str, str]:
    """The path and message of one pydantic error."""
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if "[key]" in loc or kind == "invalid_key":
        # A mapping key that is not a string: ('sites', False, '[key]') or ('bgp', 0).
        cut = loc.index("[key]") - 1 if "[key]" in loc else len(loc) - 1
        parts, parent = tree.resolve(loc[:cut])
        found = tree.find_key(parent, value, exact=True) or tree.find_key(parent, loc[cut])
        if found is not None:
            key_node = found[0]
            path = format_path((*parts, _key_text(key_node)))
            message = _not_a_string(key_node, value, name=True)
            if message is None:
                message = f"names must be strings: quote it ('{_key_text(key_node)}')"
            return path, message
        return format_path((*parts, str(value))), "keys must be strings"
    parts, node = tree.resolve(loc)
    path = format_path(tuple(parts))
    endpoints = len(loc) >= 3 and loc[0] == "links" and loc[2] == "endpoints"
    if endpoints:
        ends_path = format_path(tuple(parts[:3]))
        if kind in ("too_long", "too_short") or (kind == "missing" and len(loc) == 4):
            count = ctx.get("actual_length", len(value) if isinstance(value, list) else "?")
            return ends_path, f"a link has exactly two endpoints (got {count})"
        if kind in ("tuple_type", "list_type") and len(loc) == 3:
            return ends_path, f"expected the two routers of the link, such as [r1, r2] " \
                              f"(got {value!r})"
    if kind == "extra_forbidden":
        message = f"unknown key '{parts[-1]}'"
        allowed = _allowed_keys(loc[:-1])
        if allowed:
            message += f" (allowed here: {', '.join(allowed)})"
        return path, message
    if kind == "missing":
        return path, "is required but missing"
    if kind == "string_type" and node is not None:
        name = (isinstance(loc[-1], str) and loc[-1] in NAME_FIELDS) or endpoints
        hint = _not_a_string(node, value, name=name)
        if hint:
            return path, hint
    if kind == "model_type" and ctx.get("class_name") in MAPPING_EXAMPLES:
        message = f"expected a mapping such as {MAPPING_EXAMPLES[ctx['class_name']]}"
    elif kind == "dict_type" and len(loc) == 1 and loc[0] in SECTION_EXAMPLES:
        message = f"expected a mapping of {SECTION_EXAMPLES[loc[0]]}"
    else:
        message = err["msg"]
        if kind == "value_error":
            # Our own validators' messages already quote the value.
            return path, message.removeprefix("Value error, ")
    if "input" in err and not isinstance(value, dict | list):
        if isinstance(value, bool) and node is not None and _plain_scalar(node) \
                and node.tag == _BOOL_TAG:
            message += (f" (got {node.value}, which YAML reads as the boolean "
                        f"{str(value).lower()})")
        elif isinstance(value, str) and kind.startswith("int") and value.strip().isdigit():
            message += f" (got the string {value!r}: write the number without quotes)"
        else:
            message += f" (got {value!r})"
    return path, message


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys a model accepts at a location, for 'unknown key' hints."""
    from lab.topology import model as m

    section_models = {"anycast": m.Anycast, "pools": m.Pools, "bgp": m.Bgp, "health": m.Health,
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


def _yaml_error(exc: yaml.YAMLError, text: str) -> Problem:
    """A YAML syntax error with PyYAML's context ('while parsing a flow mapping ...')."""
    if isinstance(exc, yaml.reader.ReaderError):
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return Problem("", f"YAML syntax error: {exc.reason} (character #x{code:04x})",
                       text[:exc.position].count("\n") + 1)
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if not problem:
        message = str(exc)
    elif context and context.startswith("while "):
        message = problem
        if context_mark is not None:
            message += f" ({context} that starts on line {context_mark.line + 1})"
    elif context:
        message = f"{context}, {problem}"
    else:
        message = problem
    if mark is None:
        mark = context_mark
    return Problem("", f"YAML syntax error: {message}", mark.line + 1 if mark else None)


def load_text(text: str, source: str = "<text>") -> Report:
    """Validate topology YAML text completely; never raises for bad input."""
    report = Report(source)
    report.problems = _problems(text, report)
    report.problems.sort(key=lambda p: (p.line is None, p.line or 0))
    return report


def _problems(text: str, report: Report) -> list[Problem]:
    """Run the stages (see the module docstring); sets report.topology when valid."""
    problems: list[Problem] = []
    # Stage 1: YAML syntax.
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters already
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        return [_yaml_error(exc, text)]
    if root is None:
        rest = [ln for ln in text.splitlines() if ln.strip()]
        what = ("is empty" if not rest else
                "holds only comments" if all(ln.lstrip().startswith("#") for ln in rest)
                else "holds no YAML document")
        return [Problem("", f"the file {what}: {NEEDS}", 1)]
    if not isinstance(root, yaml.MappingNode):
        return [Problem("", "the file must be a YAML mapping with at least 'name', "
                            "'routers' and 'sites'", 1)]
    # Stage 2: structure.
    lines: dict[str, int] = {}
    _walk(root, (), lines, problems)
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        return problems + _pydantic_problems(exc, _Tree(root), lines)
    # Stage 3: semantics.
    for path, message in check_topology(topology):
        problems.append(Problem(path, message, _line_for(path, lines)))
    if not problems:
        report.topology = topology
    return problems


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
