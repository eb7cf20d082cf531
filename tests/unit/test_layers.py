"""The import directions of `lab/` and `probes/`, read from every module's import statements.

The orchestrator's layers, lowest first; each may import only from itself and the layers
before it:

    lab.model -> lab.host -> lab.render -> lab.export -> lab.observe -> lab.ops
    -> lab.draw -> lab.measure -> lab.scenario -> lab.cli

Besides them:
- `lab.shared` is what everyone may import; it imports nothing else from `lab/` or
  `probes/`;
- `probes` import only `lab.shared`; the orchestrator may use them from `lab.observe` up;
- each program under `lab.sites` (health, speaker, introspect, issuer) imports only itself
  and `lab.shared`, and nothing outside `lab.sites` imports it (the orchestrator starts
  them with `python -m`, it never imports them); the one exception: the issuer is served
  by the introspection service's server (listeners, connection guard, TLS);
- `lab` itself (`python -m lab`) imports only `lab.cli`.

Imports inside functions count as much as those at the top. `bench/` and `tests/` may
import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ORCHESTRATOR = ["lab.model", "lab.host", "lab.render", "lab.export", "lab.observe", "lab.ops",
                "lab.draw", "lab.measure", "lab.scenario", "lab.cli"]
SHARED = "lab.shared"
SITES = "lab.sites"
PROBES = "probes"
PROBES_FROM = "lab.observe"  # the lowest layer that may use the probes


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("lab", "probes"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """The modules of ours that `module` imports (a package's name when a name is taken
    from its __init__)."""
    out = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                out.add(full if full in MODULES else source)
    return {m for m in out if m.split(".")[0] in ("lab", "probes")}


def _package(module: str) -> str | None:
    """The unit a module belongs to: a layer, lab.shared, one site program, probes."""
    if module in ("lab", "lab.__main__"):
        return "lab"
    if module == SITES:
        return SITES
    if module.startswith(SITES + "."):
        return ".".join(module.split(".")[:3])
    for unit in [*ORCHESTRATOR, SHARED, PROBES]:
        if module == unit or module.startswith(unit + "."):
            return unit
    return None


def _is_site(unit: str | None) -> bool:
    return unit is not None and (unit == SITES or unit.startswith(SITES + "."))


EDGES = sorted({(m, target) for m, path in MODULES.items() for target in _imports(m, path)
                if target != m})


# The issuer is served by the introspection service's server and guard.
SITE_REUSE = {("lab.sites.issuer", "lab.sites.introspect")}


def _allowed(source: str, target: str) -> bool:
    src, dst = _package(source), _package(target)
    if src == dst or dst == SHARED or (src, dst) in SITE_REUSE:
        return True
    if src == SHARED:
        return False
    if src == PROBES or _is_site(src) or _is_site(dst):
        return False
    if src == "lab":
        return dst == "lab.cli"
    if dst == PROBES:
        return ORCHESTRATOR.index(src) >= ORCHESTRATOR.index(PROBES_FROM)
    return ORCHESTRATOR.index(dst) <= ORCHESTRATOR.index(src)


def test_the_modules_are_found() -> None:
    assert "lab.model.topology" in MODULES and "probes.dns" in MODULES
    assert ("lab.observe.routing", "lab.shared.dnsid") in EDGES  # a `from X import Y`
    assert ("lab.ops.lifecycle", "lab.render.launch") in EDGES  # `from lab.render import Y`
    assert ("lab.scenario.model", "lab.ops.faults") in EDGES  # scenarios use the fault registry


def test_every_module_lives_in_a_layer() -> None:
    homeless = [m for m in MODULES if _package(m) is None]
    assert not homeless, f"modules outside every layer (see this file's docstring): {homeless}"


def test_the_site_programs_and_the_orchestrator_do_not_import_each_other() -> None:
    crossing = [f"{a} imports {b}" for a, b in EDGES
                if _is_site(_package(a)) != _is_site(_package(b)) and _package(b) != SHARED]
    assert not crossing, crossing


def test_shared_and_probes_import_nothing_else_of_ours() -> None:
    wrong = [f"{a} imports {b}" for a, b in EDGES
             if _package(a) in (SHARED, PROBES) and _package(b) not in (SHARED, _package(a))]
    assert not wrong, wrong


def test_layers_import_only_downwards() -> None:
    upward = [f"{a} imports {b}" for a, b in EDGES if not _allowed(a, b)]
    assert not upward, upward


def test_no_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for a, b in EDGES:
        pa, pb = _package(a), _package(b)
        if pa and pb and pa != pb:
            graph.setdefault(pa, set()).add(pb)
    cycles = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in done:
                walk(nxt, [*path, nxt])
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            walk(start, [start])
    assert not cycles, cycles
