"""Read a topology file: YAML (with line numbers) -> typed model -> semantic checks.

`load_text()` never touches the kernel and never raises for bad input. It validates in
three stages; stages 2 and 3 report every problem they find (with the path of the field
it concerns and its line), so a user fixes a whole stage in one go:

1. YAML syntax, read by `safeyaml` (bounded size, depth and node count, no aliases,
   YAML 1.2 numbers). The first syntax error or refusal stops here: there is no
   document to check.
2. Structure: the YAML node tree (duplicate keys, which do not stop validation; sections
   with more entries than a lab may have, which do) and the typed model (types, ranges,
   unknown keys, missing fields, names YAML does not read as strings).
3. Semantics (`checks.py`): names, cross-references, ASNs, addresses. These checks need
   a typed model. When stage 2 found problems, they run on what is left of the file with
   each broken part set aside (`_set_aside`: an unknown key dropped, a broken router,
   site, client or link left out, a broken setting back to its default), and a finding
   about a part set aside, or that setting it aside could cause, is not reported. So one
   run reports the problems of both stages.
4. Optionally (`host_networks`), overlap of the lab's prefixes with this machine's own
   networks, from whatever prefixes of the file parse.

The final report lists the problems sorted by line (stable; problems without a line
last).
"""

from __future__ import annotations

import copy
import io
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lab.model import safeyaml
from lab.model.checks import Network, check_topology, ecmp_warnings, host_overlaps
from lab.model.topology import SECTION_LIMITS, Anycast, Pools, Topology

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
    "Up": "{keep_on_failure: true}",
    "Bfd": "{enabled: true, interval_ms: 100, multiplier: 3}",
    "SiteBfd": "{enabled: true}",
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
        """One line, always: characters that do not print (a newline in a name) are
        shown as escapes."""
        where = f"{self.path}: " if self.path else ""
        return _one_line(f"{where}{self.message}")


def _one_line(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass
class Report:
    """The outcome of validation: a model when `ok`, otherwise the problems."""

    source: str
    topology: Topology | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # worth knowing, not wrong

    @property
    def ok(self) -> bool:
        return self.topology is not None and not self.problems

    def to_json(self) -> dict[str, Any]:
        """Each error has "path", "message" and "line" (null when unknown); "warnings"
        (the same shape) only when there are any."""
        doc: dict[str, Any] = {
            "ok": self.ok,
            "file": self.source,
            "errors": [asdict(p) for p in self.problems],
        }
        if self.warnings:
            doc["warnings"] = [asdict(p) for p in self.warnings]
        return doc


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


def record_lines(node: yaml.Node, path: tuple[Any, ...], lines: dict[str, int],
          problems: list[Problem]) -> None:
    """Record the line of every path below `node` in `lines` (paths as `format_path`
    writes them), and append a problem to `problems` for each duplicate mapping key.

    Paths use the keys as written. For a duplicate key YAML keeps the LAST definition,
    so its line and its value's lines are the ones recorded (an earlier definition is
    still walked, for the duplicates inside it, but its lines are not kept).
    """
    lines.setdefault(format_path(path), node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        idents = [(key_node.tag, _key_text(key_node)) for key_node, _ in node.value]
        last = {ident: index for index, ident in enumerate(idents)}
        seen: dict[tuple[str, str], int] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            ident = idents[index]
            key = ident[1]
            line = key_node.start_mark.line + 1
            child = format_path((*path, key))
            if ident in seen:
                problems.append(Problem(child, f"duplicate key '{key}' (first defined on "
                                               f"line {seen[ident]})", line))
            seen[ident] = line
            if last[ident] == index:
                lines[child] = line
                record_lines(value_node, (*path, key), lines, problems)
            else:
                record_lines(value_node, (*path, key), {}, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            record_lines(item, (*path, index), lines, problems)


def _too_many(root: yaml.MappingNode) -> list[Problem]:
    """Sections with more entries than a lab may have (model.SECTION_LIMITS)."""
    problems = []
    for key_node, value_node in root.value:
        key = _key_text(key_node)
        if key in SECTION_LIMITS and isinstance(value_node, yaml.MappingNode
                                                | yaml.SequenceNode):
            limit, why = SECTION_LIMITS[key]
            if len(value_node.value) > limit:
                problems.append(Problem(key, f"{len(value_node.value)} {key}: a lab holds at "
                                             f"most {limit} ({why})",
                                        key_node.start_mark.line + 1))
    return problems


class NodeTree:
    """Maps pydantic's error locations back to the YAML nodes they came from (`resolve`:
    a location's path as the file writes it, and its node), for any model read from a
    YAML tree."""

    def __init__(self, root: yaml.Node) -> None:
        self.root = root
        self._constructor = safeyaml.TopologyLoader("")
        # Per mapping node: its (key, value) nodes by (type, value) of the key as read,
        # and by (type, form) of the key as pydantic writes it in a location.
        self._index: dict[int, tuple[dict[Any, Any], dict[Any, Any]]] = {}

    def _value(self, node: yaml.Node) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, TypeError, ValueError):  # such a key just never matches
            return _NO_MATCH

    def _keys(self, mapping: yaml.MappingNode) -> tuple[dict[Any, Any], dict[Any, Any]]:
        found = self._index.get(id(mapping))
        if found is None:
            typed: dict[Any, Any] = {}
            loose: dict[Any, Any] = {}
            for key_node, value_node in mapping.value:  # the last one wins
                value = self._value(key_node)
                form = _loc_form(value)
                try:
                    typed[(type(value), value)] = (key_node, value_node)
                    loose[(type(form), form)] = (key_node, value_node)
                except TypeError:  # an unhashable key (YAML refused it already)
                    continue
            found = self._index[id(mapping)] = (typed, loose)
        return found

    def find_key(self, mapping: yaml.Node | None, part: Any,
                 *, exact: bool = False) -> tuple[yaml.Node, yaml.Node] | None:
        """The (key, value) nodes of `mapping` for a loc part; the last one wins."""
        if not isinstance(mapping, yaml.MappingNode):
            return None
        typed, loose = self._keys(mapping)
        try:
            found = typed.get((type(part), part))
            if found is None and not exact:
                found = loose.get((type(part), part))
        except TypeError:
            return None
        return found

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


def pydantic_problems(errors: Iterable[Any], describe: Callable[[Any], tuple[str, str]],
                      lines: dict[str, int]) -> list[Problem]:
    """One problem per pydantic error, at the line of its path (`describe`: an error's
    path and message); an error described like an earlier one is left out."""
    problems: list[Problem] = []
    done: set[tuple[str, str]] = set()
    for err in errors:
        path, message = describe(err)
        if (path, message) in done:
            continue
        done.add((path, message))
        problems.append(Problem(path, message, line_for(path, lines)))
    return problems


SITE_OR_SITES = ("expect", "failover")  # a client's site: one name, or a list of them


def _one_branch(errors: list[Any]) -> list[Any]:
    """A client's `expect:`/`failover:` is a site or a list of sites; of pydantic's errors
    for both readings keep the one the value was written as (a list: the list's), with
    the branch left out of the location, so it reads like any other field's."""
    out = []
    for err in errors:
        loc = tuple(err["loc"])
        if len(loc) >= 4 and loc[0] == "clients" and loc[2] in SITE_OR_SITES \
                and loc[3] in ("str", "list[str]"):
            written_as_list = isinstance(err.get("input"), list) or len(loc) > 4
            if (loc[3] == "list[str]") != written_as_list:
                continue
            err = {**err, "loc": (*loc[:3], *loc[4:])}
        out.append(err)
    return out


def _describe(err: Any, tree: NodeTree) -> tuple[str, str]:
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
            message += f" (got {shorten(repr(value))})"
    return path, message


def shorten(text: str, limit: int = 60) -> str:
    """`text` for a message, cut to `limit` characters with '...' when longer."""
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys a model accepts at a location, for 'unknown key' hints."""
    from pydantic import BaseModel

    from lab.model import topology as m

    section_models = {"anycast": m.Anycast, "pools": m.Pools, "bgp": m.Bgp, "health": m.Health,
                      "routers": m.Router, "sites": m.Site, "clients": m.Client,
                      "links": m.Link, "up": m.Up}
    if not loc:
        return list(m.Topology.model_fields)
    if len(loc) >= 3 and loc[0] == "links" and loc[2] == "impair":
        return list(m.Impairment.model_fields)
    if loc == ("bgp", "bfd"):
        return list(m.Bfd.model_fields)
    if len(loc) == 3 and loc[0] == "sites" and loc[2] == "bfd":
        return list(m.SiteBfd.model_fields)
    cls = section_models.get(loc[0])
    if cls is m.Health:  # nested sections: follow the fields down
        for part in loc[1:]:
            info = cls.model_fields.get(str(part))
            sub = info.annotation if info is not None else None
            if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
                return []
            cls = sub
    return list(cls.model_fields) if cls else []


def line_for(path: str, lines: dict[str, int]) -> int | None:
    """The line of a path, or of its nearest ancestor present in the file."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    """A YAML syntax error as a problem with its line and PyYAML's context ('while
    parsing a flow mapping ...'); never raises."""
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


def load_text(text: str, source: str = "<text>", host_networks: list[Network] | None = None,
              ) -> Report:
    """Validate topology YAML text completely; never raises for bad input. With
    `host_networks` (this machine's own), a lab prefix overlapping one is a problem too."""
    report = Report(source)
    report.problems = _problems(text, report, host_networks)
    report.problems.sort(key=lambda p: (p.line is None, p.line or 0))
    return report


TOO_LARGE = (f"larger than {safeyaml.MAX_FILE_BYTES // 1024} KiB, the most a topology file "
             "may hold (the largest lab allowed needs about 100 KiB)")


def _problems(text: str, report: Report,
              host_networks: list[Network] | None = None) -> list[Problem]:
    """Run the stages (see the module docstring); sets report.topology when valid."""
    if len(text) > safeyaml.MAX_FILE_BYTES or \
            len(text.encode("utf-8", "replace")) > safeyaml.MAX_FILE_BYTES:
        return [Problem("", f"the topology is {TOO_LARGE}")]
    problems: list[Problem] = []
    # Stage 1: YAML syntax (and what the reader refuses: see safeyaml).
    root, refused = compose(text)  # checks for unprintable characters already
    if refused is not None:
        return [refused]
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
    record_lines(root, (), lines, problems)
    too_many = _too_many(root)
    if too_many:
        return problems + too_many
    try:
        data = safeyaml.construct(root)
    except yaml.YAMLError as exc:
        return [yaml_problem(exc, text)]
    if host_networks is not None:
        problems += [Problem(path, message, line_for(path, lines))
                     for path, message in host_overlaps(_prefixes(data), host_networks)]
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        tree = NodeTree(root)
        structural = pydantic_problems(_one_branch(exc.errors(include_url=False)),
                                       lambda err: _describe(err, tree), lines)
        return problems + structural + _semantics_of_the_rest(data, exc, lines)
    # Stage 3: semantics.
    for path, message in check_topology(topology):
        problems.append(Problem(path, message, line_for(path, lines)))
    if not problems:
        report.topology = topology
        report.warnings = [Problem(path, message, line_for(path, lines))
                           for path, message in ecmp_warnings(topology)]
    return problems


def _prefixes(data: Any) -> dict[str, str]:
    """The file's anycast prefixes and pools by path, defaults where not given (values
    that are not text are left out: stage 2 reports them)."""
    out = {}
    for section, model in (("anycast", Anycast), ("pools", Pools)):
        given = data.get(section) if isinstance(data, dict) else None
        for key, info in model.model_fields.items():
            value = given.get(key, info.default) if isinstance(given, dict) else info.default
            if isinstance(value, str):
                out[f"{section}.{key}"] = value
    return out


SECTIONS_OF_NODES = ("routers", "sites", "clients")
MAX_REPAIRS = 5  # rounds of setting aside; each removes at least one broken part


def _semantics_of_the_rest(data: Any, exc: ValidationError,
                           lines: dict[str, int]) -> list[Problem]:
    """Stage 3 on the file with its broken parts set aside (see the module docstring);
    [] when what is left still does not make a model."""
    if not isinstance(data, dict):
        return []
    rest = copy.deepcopy(data)
    aside: list[str] = []  # paths set aside, as the file writes them
    links = list(range(len(rest["links"]))) if isinstance(rest.get("links"), list) else []
    for _ in range(MAX_REPAIRS):
        for err in exc.errors(include_url=False):
            _set_aside(rest, tuple(err["loc"]), err["type"], aside, links)
        if isinstance(rest.get("links"), list):
            kept = [i for i, item in enumerate(rest["links"]) if item is not _ASIDE]
            links = [links[i] for i in kept]
            rest["links"] = [item for item in rest["links"] if item is not _ASIDE]
        try:
            topology = Topology.model_validate(rest)
            break
        except ValidationError as again:
            exc = again
    else:
        return []
    names = {p.split(".")[1] for p in aside
             if p.split(".")[0] in SECTIONS_OF_NODES and p.count(".") == 1}
    graph_changed = any(p.startswith(("routers.", "links")) for p in aside)
    out = []
    for path, message in check_topology(topology):
        path = _old_link_index(path, links)
        if graph_changed and ("connected" in message or "cannot reach" in message):
            continue  # a router or link set aside changes the graph
        if any(_related(path, p) for p in aside) or any(f"'{n}'" in message for n in names):
            continue
        if any(message.startswith(f"unknown {kind} ") for kind, section in
               (("router", "routers"), ("site", "sites")) if section in aside):
            continue  # the whole section is set aside: every name in it is unknown
        out.append(Problem(path, message, line_for(path, lines)))
    return out


_ASIDE = object()  # a link set aside (removed after each round, keeping the indexes)


def _set_aside(data: dict[str, Any], loc: tuple[Any, ...], kind: str, aside: list[str],
               links: list[int]) -> None:
    """Set aside the part of `data` the error at `loc` is about (see the module
    docstring); records its path in `aside`."""
    if not loc:
        return
    head = loc[0]
    if kind == "extra_forbidden":  # an unknown key: drop just that key
        parent = _at(data, loc[:-1])
        if isinstance(parent, dict) and loc[-1] in parent:
            del parent[loc[-1]]
            aside.append(format_path(_file_loc(loc, links)))
        return
    if head in SECTIONS_OF_NODES and len(loc) >= 2 and isinstance(data.get(head), dict):
        data[head].pop(loc[1], None)
        aside.append(f"{head}.{loc[1]}")
        return
    if head == "links" and len(loc) >= 2 and isinstance(loc[1], int) \
            and isinstance(data.get("links"), list) and loc[1] < len(data["links"]):
        data["links"][loc[1]] = _ASIDE
        aside.append(f"links[{links[loc[1]]}]")
        return
    if head == "name":
        data["name"] = "lab"  # a stand-in: stage 2 reported the name
        aside.append("name")
        return
    # A setting (anycast, pools, bgp, health, up) or a whole section: back to its
    # default, by dropping the deepest key the error names.
    for cut in range(len(loc), 0, -1):
        parent = _at(data, loc[:cut - 1])
        if isinstance(parent, dict) and loc[cut - 1] in parent:
            del parent[loc[cut - 1]]
            aside.append(format_path(loc[:cut]))
            return
    if head in ("routers", "sites"):  # missing: an empty one, whose emptiness is known
        data[head] = {}
        aside.append(head)


def _at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_list or (isinstance(data, dict) and part in data):
            data = data[part]
        else:
            return None
    return data


def _file_loc(loc: tuple[Any, ...], links: list[int]) -> tuple[Any, ...]:
    """A location with a link's index as the file has it."""
    if len(loc) >= 2 and loc[0] == "links" and isinstance(loc[1], int) and loc[1] < len(links):
        return ("links", links[loc[1]], *loc[2:])
    return loc


def _old_link_index(path: str, links: list[int]) -> str:
    """'links[1].endpoints' of the rest -> the same link's path in the file."""
    m = re.match(r"links\[(\d+)\]", path)
    if m is None or int(m.group(1)) >= len(links):
        return path
    return f"links[{links[int(m.group(1))]}]{path[m.end():]}"


def _related(path: str, aside: str) -> bool:
    """`path` is `aside`, inside it, or a section that holds it."""
    for inner, outer in ((path, aside), (aside, path)):
        if inner == outer or inner.startswith((f"{outer}.", f"{outer}[")):
            return True
    return False


def compose(text: str) -> tuple[yaml.Node | None, Problem | None]:
    """Stage 1: the YAML node tree of `text` by `safeyaml` (None for a file with no
    document), or the syntax error or refusal that stops reading it as a problem."""
    try:
        return safeyaml.compose(text), None
    except safeyaml.Refused as exc:
        return None, Problem(format_path(exc.path), exc.message, exc.line)
    except yaml.YAMLError as exc:
        return None, yaml_problem(exc, text)


def read_bounded(path: Path, too_large: str, what: str = "a topology file") -> str | Problem:
    """The text of a file of at most MAX_FILE_BYTES (reading at most one byte more,
    whatever the file is), or the problem that it is missing, unreadable, not UTF-8 or
    larger (`too_large`: the end of "file 'F' is ...")."""
    try:
        # Non-blocking: opening a FIFO for reading would wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return Problem("", f"file '{path}' does not exist")
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        return Problem("", f"cannot read '{path}': {getattr(exc, 'strerror', None) or exc}"
                           f": give the path of {what}")
    kind = os.fstat(fd).st_mode
    if not (stat.S_ISREG(kind) or stat.S_ISCHR(kind)):  # /dev/zero is bounded below
        os.close(fd)
        kind_of = "a directory" if stat.S_ISDIR(kind) else "not a regular file"
        return Problem("", f"'{path}' is {kind_of}: give the path of {what}")
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(safeyaml.MAX_FILE_BYTES + 1)
        except OSError as exc:
            return Problem("", f"cannot read '{path}': {exc.strerror or exc}")
    if len(raw) > safeyaml.MAX_FILE_BYTES:
        return Problem("", f"file '{path}' is {too_large}")
    try:
        # Text mode's universal newlines, as Path.read_text reads.
        return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8").read()
    except UnicodeDecodeError as exc:
        return Problem("", f"'{path}' is not UTF-8 text (byte {exc.start}): save it as "
                           "UTF-8")


def load_file(path: str | Path, host_networks: list[Network] | None = None) -> Report:
    """Validate a topology file; a missing, unreadable or oversized file is a problem,
    not a crash. `host_networks`: as for `load_text`."""
    p = Path(path)
    text = read_bounded(p, TOO_LARGE)
    if isinstance(text, Problem):
        return Report(str(p), problems=[text])
    return load_text(text, str(p), host_networks)
