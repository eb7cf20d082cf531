"""Read a scenario file: YAML (with line numbers) -> typed model -> names checked against
its topology. Never raises for bad input; every problem comes with its path and line,
as topology files do (the same reader, `lab.model.safeyaml`, and the same report).

Stages, like `lab.model.load`: 1. YAML syntax (the first error stops); 2. structure
(duplicate keys and every typed-model problem); 3. the scenario's topology is read, and
every name a step uses (sites, clients, routers, nodes, tokens, BGP sessions) is checked
against it. Stage 3 runs only when stages 1 and 2 found nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lab.model import Topology, safeyaml
from lab.model import load_file as load_topology_file
from lab.model.load import (
    NodeTree,
    Problem,
    compose,
    format_path,
    line_for,
    pydantic_problems,
    read_bounded,
    record_lines,
    shorten,
    yaml_problem,
)
from lab.model.topology import quoted
from lab.ops.faults import REGISTRY
from lab.scenario import model as m

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
NEEDS = "a scenario needs at least 'name', 'title', 'topology' and 'steps'"
BRANCHES = ("str", "list[str]")  # pydantic's names for the two readings of a site-or-sites

MODELS: dict[str, type] = {"": m.Scenario, "probe": m.Probe, "steps": m.Step, **m.SUBJECTS}


@dataclass
class ScenarioReport:
    """The outcome: a scenario (and its topology) when `ok`, otherwise the problems."""

    source: str
    scenario: m.Scenario | None = None
    topology: Topology | None = None
    topology_path: Path | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.scenario is not None and not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "file": self.source,
                "errors": [{"path": p.path, "message": p.message, "line": p.line}
                           for p in self.problems]}


def topology_path(spec: str, base: Path) -> Path:
    """A shipped topology's name ('default') or a path relative to the scenario file."""
    if "/" not in spec and not spec.endswith((".yaml", ".yml")):
        return TOPOLOGIES / f"{spec}.yaml"
    path = Path(spec)
    return path if path.is_absolute() else base / path


def load_text(text: str, source: str = "<text>", base: Path | None = None) -> ScenarioReport:
    report = ScenarioReport(source)
    report.problems = _problems(text, report, base or Path.cwd())
    report.problems.sort(key=lambda p: (p.line is None, p.line or 0))
    return report


def load_file(path: str | Path) -> ScenarioReport:
    p = Path(path)
    text = read_bounded(p, f"larger than {safeyaml.MAX_FILE_BYTES // 1024} KiB", "a scenario file")
    if isinstance(text, Problem):
        return ScenarioReport(str(p), problems=[text])
    return load_text(text, str(p), p.resolve().parent)


def _problems(text: str, report: ScenarioReport, base: Path) -> list[Problem]:
    if len(text.encode("utf-8", "replace")) > safeyaml.MAX_FILE_BYTES:
        return [Problem("", f"the scenario is larger than "
                            f"{safeyaml.MAX_FILE_BYTES // 1024} KiB")]
    root, refused = compose(text)
    if refused is not None:
        return [refused]
    if root is None:
        return [Problem("", f"the file holds no YAML document: {NEEDS}", 1)]
    if not isinstance(root, yaml.MappingNode):
        return [Problem("", f"the file must be a YAML mapping: {NEEDS}", 1)]
    problems: list[Problem] = []
    lines: dict[str, int] = {}
    record_lines(root, (), lines, problems)
    try:
        data = safeyaml.construct(root)
    except yaml.YAMLError as exc:
        return [yaml_problem(exc, text)]
    try:
        scenario = m.Scenario.model_validate(data)
    except ValidationError as exc:
        tree = NodeTree(root)
        return problems + pydantic_problems(_one_branch(exc.errors(include_url=False)),
                                            lambda err: _describe(err, tree), lines)
    if problems:
        return problems
    path = topology_path(scenario.topology, base)
    topo_report = load_topology_file(path)
    if not topo_report.ok or topo_report.topology is None:
        first = topo_report.problems[0] if topo_report.problems else None
        if first is not None and not first.path and first.line is None and \
                not path.exists():
            first = Problem("", f"no such file {_shown(path)}")
        why = f": {first}" if first else ""
        return [Problem("topology", f"topology {quoted(scenario.topology)} cannot be used"
                                    f"{why}", lines.get("topology"))]
    for where, message in check_names(scenario, topo_report.topology):
        problems.append(Problem(where, message, line_for(where, lines)))
    if not problems:
        report.scenario, report.topology, report.topology_path = \
            scenario, topo_report.topology, path
    return problems


def _untagged(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The location without the expectation kind pydantic inserts after its index
    (('steps', 0, 'expect', 1, 'client', 'at') -> ('steps', 0, 'expect', 1, 'at'))."""
    if len(loc) >= 5 and loc[0] == "steps" and loc[2] == "expect" and loc[4] in m.SUBJECTS:
        return (*loc[:4], *loc[5:])
    return loc


def _kind_at(loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 5 and loc[0] == "steps" and loc[2] == "expect" and loc[4] in m.SUBJECTS:
        return loc[4]
    return None


def _one_branch(errors: list[Any]) -> list[Any]:
    """A site-or-sites field has two readings; keep the errors of the one it was written
    as (a list, or anything else as one site), without the branch in the location."""
    out = []
    for err in errors:
        loc = tuple(err["loc"])
        branch = next((i for i, part in enumerate(loc) if part in BRANCHES), None)
        if branch is not None:
            as_list = isinstance(err.get("input"), list) or len(loc) > branch + 1
            if (loc[branch] == "list[str]") != as_list:
                continue
            err = {**err, "loc": (*loc[:branch], *loc[branch + 1:])}
            if not as_list and err["type"] == "string_type":
                err = {**err, "msg": "expected a site name or a list of site names"}
        out.append(err)
    return out


def _model_at(loc: tuple[Any, ...]) -> type | None:
    """The model whose fields a location's last part is one of."""
    kind = _kind_at(loc)
    if kind is not None:
        return m.SUBJECTS[kind]
    parts = [p for p in loc[:-1] if not isinstance(p, int)]
    key = parts[-1] if parts else ""
    return MODELS.get(key)  # type: ignore[arg-type]


def _describe(err: Any, tree: NodeTree) -> tuple[str, str]:
    raw = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    loc = _untagged(raw)
    parts, node = tree.resolve(loc)
    path = format_path(tuple(parts))
    if kind == "extra_forbidden":
        cls = _model_at(raw)
        message = f"unknown key '{parts[-1]}'"
        if cls is not None:
            message += f" (allowed here: {', '.join(_keys(cls))})"
        return path, message
    if kind == "missing":
        return path, "is required but missing"
    if kind == "expectation_kind":
        return path, err["msg"] + (f" (got {shorten(repr(value))})" if not isinstance(value, dict)
                                   else " (as in {client: c-eu, at: ams})")
    message = err["msg"]
    if kind == "value_error":
        return path, message.removeprefix("Value error, ")
    if kind == "model_type" or kind == "dict_type":
        return path, f"expected a mapping (got {shorten(repr(value))})"
    if kind == "list_type":
        return path, f"expected a list (got {shorten(repr(value))})"
    if "input" in err and not isinstance(value, dict | list):
        if isinstance(value, bool) and isinstance(node, yaml.ScalarNode) and node.style is None:
            message += f" (got {node.value}, which YAML reads as the boolean " \
                       f"{str(value).lower()})"
        else:
            message += f" (got {shorten(repr(value))})"
    return path, message


def _keys(cls: type) -> list[str]:
    fields = cls.model_fields  # type: ignore[attr-defined]
    return [f.alias or name for name, f in fields.items()]


def _shown(path: Path) -> str:
    """A path as a reader of this repository would type it."""
    try:
        return str(path.resolve().relative_to(TOPOLOGIES.parent))
    except ValueError:
        return str(path)


def check_names(scenario: m.Scenario, topo: Topology) -> list[tuple[str, str]]:
    """Every name a step uses, checked against the topology: (path, message) pairs."""
    out: list[tuple[str, str]] = []
    sites, clients, routers = set(topo.sites), set(topo.clients), set(topo.routers)
    nodes = sites | clients | routers
    issued: set[str] = set()

    def known(value: str, pool: set[str], what: str, where: str,
              extra: tuple[str, ...] = ()) -> None:
        if value not in pool and value not in extra:
            listed = ", ".join(sorted(pool)) or "none"
            out.append((where, f"unknown {what} {quoted(value)} in topology "
                               f"'{topo.name}' (known: {listed})"))

    for k, client in enumerate(scenario.probe.tcp_clients or ()):
        known(client, clients, "client", f"probe.tcp_clients[{k}]")
    for i, step in enumerate(scenario.steps):
        base = f"steps[{i}]"
        action = step.action
        if action is not None:
            where = f"{base}.do"
            verb, args = action.verb, action.args
            if verb in ("fail", "heal"):
                out += _fault_target(topo, verb, args, where)
            elif verb in ("drain", "undrain", "forget-revocations"):
                known(args[0], sites, "site", where)
            if verb in ("drain", "undrain") and not topo.health.enabled:
                out.append((where, f"topology '{topo.name}' runs without health daemons, "
                                   f"and {verb} is their job"))
            if verb == "exec":
                known(args[0], nodes, "node", where)
            if verb == "impair":
                problem = _impair_target(topo, args[0])
                if problem:
                    out.append((where, problem))
            if verb == "issue":
                if args[0] in issued or args[0] in m.CANARIES:
                    out.append((where, f"token {quoted(args[0])} is already issued by an "
                                       "earlier step: give this one another name"))
                issued.add(args[0])
            if verb == "revoke" and args[0] not in issued and args[0] not in m.CANARIES:
                out.append((where, f"token {quoted(args[0])} is not issued by an earlier step "
                                   f"(write 'issue {args[0]}' first)"))
        for j, exp in enumerate(step.expect):
            where = f"{base}.expect[{j}]"
            if isinstance(exp, m.ClientExpect):
                known(exp.client, clients, "client", f"{where}.client")
                for s in m.site_list(exp.at):
                    known(s, sites, "site", f"{where}.at", (m.NONE_SITE,))
            elif isinstance(exp, m.SpreadExpect):
                known(exp.spread, clients, "client", f"{where}.spread")
                if not topo.bgp.ecmp:
                    out.append((f"{where}.spread", f"topology '{topo.name}' has no bgp.ecmp: "
                                                   "a client's answers cannot spread"))
            elif isinstance(exp, m.SiteExpect):
                known(exp.site, sites, "site", f"{where}.site")
                if not topo.health.enabled and (exp.health or exp.check or exp.drained):
                    out.append((where, f"topology '{topo.name}' runs without health "
                                       "daemons: expect only 'announced' of a site"))
            elif isinstance(exp, m.RouterExpect):
                known(exp.router, routers, "router", f"{where}.router")
                for s in m.site_list(exp.best) if exp.best is not None else ():
                    known(s, sites, "site", f"{where}.best", (m.NONE_SITE,))
            elif isinstance(exp, m.SessionExpect):
                router, peer = exp.session
                known(router, routers, "router", f"{where}.session")
                if router in routers and not _adjacent(topo, router, peer):
                    out.append((f"{where}.session", f"router {quoted(router)} has no BGP "
                                                    f"session with {quoted(peer)}"))
            elif isinstance(exp, m.TokenExpect):
                if exp.token not in issued and exp.token not in m.CANARIES:
                    out.append((f"{where}.token", f"token {quoted(exp.token)} is not issued "
                                                  "by an earlier step (nor a canary: "
                                                  f"{', '.join(m.CANARIES)})"))
                if exp.at is not None:
                    known(exp.at, sites, "site", f"{where}.at")
                if exp.via is not None:
                    known(exp.via, clients, "client", f"{where}.via")
            elif isinstance(exp, m.MeasuredExpect):
                known(exp.measured, clients, "client", f"{where}.measured")
                for s in m.site_list(exp.settles_at):
                    known(s, sites, "site", f"{where}.settles_at")
                for s in m.site_list(exp.broken_from or []):
                    known(s, sites, "site", f"{where}.broken_from")
                tcp_clients = scenario.probe.tcp_clients
                if exp.probe == "tcp" and tcp_clients and exp.measured not in tcp_clients:
                    out.append((f"{where}.measured", f"client {quoted(exp.measured)} holds no "
                                                     "TCP connections: add it to "
                                                     "probe.tcp_clients"))
                if exp.probe not in scenario.probe.kinds:
                    out.append((f"{where}.probe", f"probe {quoted(exp.probe)} does not run in "
                                                  "this scenario: add it to probe.kinds "
                                                  f"(now: {', '.join(scenario.probe.kinds)})"))
            elif isinstance(exp, m.AuditExpect):
                known(exp.audit, sites, "site", f"{where}.audit")
            elif isinstance(exp, m.IdentityExpect):
                known(exp.identity, sites, "site", f"{where}.identity")
                if topo.issuer is None:
                    out.append((where, f"topology '{topo.name}' has no issuer: its sites "
                                       "replicate no identity state"))
            if isinstance(exp, m.SiteExpect) and exp.check == "identity" and \
                    (topo.issuer is None or not topo.identity.coupling):
                out.append((f"{where}.check", f"topology '{topo.name}' runs no identity "
                                              "check (it needs an issuer and "
                                              "identity.coupling)"))
    return out


def _fault_target(topo: Topology, verb: str, args: tuple[str, ...],
                  where: str) -> list[tuple[str, str]]:
    """`fail`/`heal`'s first argument: a site, or the issuer node for a fault made there
    (`fail issuer issuer`; `heal issuer` heals it)."""
    issuer = topo.issuer.name if topo.issuer is not None else None
    fault = REGISTRY.get(args[1]) if len(args) > 1 else None
    if fault is not None and fault.at_issuer:
        if issuer is None:
            return [(where, f"fault '{args[1]}' is made at the issuer, and topology "
                            f"'{topo.name}' has none")]
        if args[0] != issuer:
            return [(where, f"fault '{args[1]}' is made at the issuer node: write "
                            f"'{verb} {issuer} {args[1]}'")]
        return []
    if args[0] in topo.sites or (args[0] == issuer and fault is None):
        return []  # a site; or `heal issuer`: every fault at the issuer
    listed = ", ".join(sorted(topo.sites))
    if issuer is not None and fault is None:
        listed += f"; or the issuer, {issuer}"
    return [(where, f"unknown site {quoted(args[0])} in topology '{topo.name}' "
                    f"(known: {listed})")]


def _impair_target(topo: Topology, target: str) -> str | None:
    """Why `impair TARGET` cannot be done in this topology (None: it can), in the words
    of `anycast-lab impair` itself."""
    from lab.model.errors import BadInput
    from lab.model.plan import build_plan, find_link

    try:
        find_link(build_plan(topo), target)
    except BadInput as exc:
        return exc.message
    return None


def _adjacent(topo: Topology, router: str, peer: str) -> bool:
    if peer in topo.sites:
        return topo.sites[peer].router == router
    return any(set(link.endpoints) == {router, peer} for link in topo.links)
