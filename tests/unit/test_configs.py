"""Daemon configs rendered from topologies/default.yaml match the committed golden files
(tests/unit/golden/), so any change to a template or to the plan shows up as a diff in
review. Rewrite the goldens after an intended change with:

    UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/test_configs.py

Also checks what the configs must say whatever the templates look like (import filters,
ECMP, BGP timers) and runs each daemon's own dry run on the rendered configs (no root
needed; without the daemons a skip, on CI a failure: tests/prerequisites.py).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.model import Topology, load_file, load_text
from lab.model.names import node_dir
from lab.model.plan import AddressPlan, build_plan
from lab.render import credentials
from lab.render.base import DaemonSpec
from lab.render.bird import bird_spec
from lab.render.exabgp import SPEAKER_RUN, exabgp_spec
from lab.render.introspect import introspect_spec
from lab.render.unbound import unbound_spec

from ..prerequisites import need_tools

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "topologies" / "default.yaml"
IMPAIRED = REPO / "tests" / "topologies" / "good" / "impaired.yaml"
GOLDEN = Path(__file__).resolve().parent / "golden"
# A fixed lab directory: the configs embed paths below it.
LAB_DIR = Path("/run/anycast-lab/golden")
PYTHON = "<python>"  # stands for sys.executable in the exabgp run line
CHECKOUT = "<checkout>"  # stands for the checkout holding lab/ (the API process's start file)
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _valid(report: Any) -> Topology:
    assert report.topology is not None, report.problems
    return report.topology


def _default() -> Topology:
    return _valid(load_file(DEFAULT))


def _variant(**bgp: Any) -> Topology:
    """The default topology with its `bgp:` block replaced (validated like a file)."""
    data = yaml.safe_load(DEFAULT.read_text())
    data["bgp"] = bgp
    return _valid(load_text(yaml.safe_dump(data, sort_keys=False), "<variant>"))


def render_all(topo: Topology, lab_dir: Path = LAB_DIR) -> dict[str, DaemonSpec]:
    """Every daemon spec of a lab, keyed by its golden file's name."""
    plan = build_plan(topo)
    specs: dict[str, DaemonSpec] = {}
    for router in plan.by_role("router"):
        specs[f"bird-{router.name}.conf"] = bird_spec(
            topo, plan, router, node_dir(lab_dir, router.name), "bird")
    pki = credentials.paths(lab_dir)
    for site in plan.by_role("site"):
        d = node_dir(lab_dir, site.name)
        specs[f"exabgp-{site.name}.conf"] = exabgp_spec(topo, plan, site, d, "exabgp")
        specs[f"unbound-{site.name}.conf"] = unbound_spec(plan, site, d, "unbound",
                                                          "unbound-checkconf")
        specs[f"introspect-{site.name}.json"] = introspect_spec(plan, site, d, pki)
    return specs


def machine_independent(text: str) -> str:
    return (text.replace(sys.executable, PYTHON)
            .replace(str(SPEAKER_RUN.parents[3]), CHECKOUT))


DEFAULT_SPECS = render_all(_default())


def test_every_daemon_of_the_default_lab_has_a_golden_file():
    plan = build_plan(_default())
    names = set(DEFAULT_SPECS)
    assert {f"bird-{r.name}.conf" for r in plan.by_role("router")} <= names
    for site in plan.by_role("site"):
        assert {f"exabgp-{site.name}.conf", f"unbound-{site.name}.conf",
                f"introspect-{site.name}.json"} <= names
    if not UPDATE:
        stale = sorted(p.name for p in GOLDEN.glob("*") if p.name not in names)
        assert not stale, f"golden files no daemon renders any more: {stale}"


@pytest.mark.parametrize("golden", sorted(DEFAULT_SPECS))
def test_config_matches_golden(golden: str):
    rendered = machine_independent(DEFAULT_SPECS[golden].config)
    path = GOLDEN / golden
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(rendered)
        return
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1 to create it"
    expected = path.read_text()
    if rendered != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), rendered.splitlines(keepends=True),
            f"golden/{golden}", "rendered"))
        pytest.fail(f"{golden} differs from its golden file (UPDATE_GOLDEN=1 rewrites it "
                    f"after an intended change):\n{diff}", pytrace=False)


def test_goldens_are_machine_independent():
    for golden, spec in DEFAULT_SPECS.items():
        text = machine_independent(spec.config)
        assert sys.executable not in text
        if golden.startswith("exabgp-"):
            assert str(SPEAKER_RUN.parents[3]) not in text
            assert f"run {PYTHON} -I -S {CHECKOUT}/lab/sites/speaker/run.py" in text


def test_specs_use_the_tools_they_are_given():
    for golden, spec in DEFAULT_SPECS.items():
        tool = {"bird": "bird", "exabgp": "exabgp", "unbound": "unbound-checkconf",
                "introspect": sys.executable}[spec.name]
        assert spec.check_argv[0] == tool, golden
        assert str(spec.config_path).startswith(str(LAB_DIR / "nodes" / spec.node)), golden


# -- what BIRD must say, whatever the template looks like ---------------------------------

def _block(config: str, header: str) -> str:
    """The text of a top-level `header { ... }` block (braces balanced)."""
    start = config.index(header + " {")
    depth = 0
    for i in range(start, len(config)):
        depth += {"{": 1, "}": -1}.get(config[i], 0)
        if depth == 0 and config[i] == "}":
            return config[start:i + 1]
    raise AssertionError(f"unbalanced block {header}")


def _bird_configs(topo: Topology) -> dict[str, str]:
    plan = build_plan(topo)
    return {r.name: bird_spec(topo, plan, r, node_dir(LAB_DIR, r.name), "bird").config
            for r in plan.by_role("router")}


@pytest.mark.parametrize("path", [DEFAULT, IMPAIRED], ids=["default", "impaired"])
def test_routers_import_from_sites_only_the_anycast_prefixes_at_exact_length(path: Path):
    topo = _valid(load_file(path))
    plan: AddressPlan = build_plan(topo)
    for router, config in _bird_configs(topo).items():
        lines = config.splitlines()
        # A prefix set without {a,b}, + or - matches exactly that prefix, nothing longer.
        assert f"define ANYCAST4 = [ {topo.anycast.ipv4} ];" in lines, router
        assert f"define ANYCAST6 = [ {topo.anycast.ipv6} ];" in lines, router
        for family in ("4", "6"):
            body = _block(config, f"filter from_site{family}")
            accepting = [ln.strip() for ln in body.splitlines() if "accept" in ln]
            assert accepting, body
            assert all(ln.startswith(f"if net ~ ANYCAST{family} then") for ln in accepting), \
                body
            assert body.rstrip("}").rstrip().endswith("reject;"), body
        sites = [n for n in plan.by_role("site") if n.router == router]
        for site in sites:
            proto = _block(config, f"protocol bgp site_{site.name.replace('-', '_')} "
                                   "from lab_peer")
            assert "ipv4 { import filter from_site4; export none; };" in proto
            assert "ipv6 { import filter from_site6; export none; };" in proto


def test_ecmp_adds_merge_paths_to_both_kernel_protocols():
    for router, config in _bird_configs(_default()).items():
        assert "merge paths" not in config, router
    for router, config in _bird_configs(_variant(ecmp=True)).items():
        for kernel in ("protocol kernel kernel4", "protocol kernel kernel6"):
            assert re.search(r"^\s*merge paths on( limit \d+)?;$", _block(config, kernel),
                             re.MULTILINE), (router, kernel)


@pytest.mark.parametrize(("hold", "keepalive"), [(3, 1), (9, 3), (240, 80)])
def test_bgp_timers_come_from_the_topology(hold: int, keepalive: int):
    topo = _variant(hold_time=hold, keepalive_time=keepalive)
    for router, config in _bird_configs(topo).items():
        template = _block(config, "template bgp lab_peer")
        assert f"  hold time {hold};" in template.splitlines(), router
        assert f"  keepalive time {keepalive};" in template.splitlines(), router
        assert config.count("from lab_peer") >= 1
    for golden, spec in render_all(topo).items():
        if golden.startswith("exabgp-"):
            assert f"  hold-time {hold};" in spec.config.splitlines(), golden


# -- the daemons' own dry runs --------------------------------------------------------------

DAEMON_TOOLS = {"bird": "bird", "unbound": "unbound-checkconf", "exabgp": "exabgp"}


@pytest.mark.parametrize("variant", ["default", "ecmp-timers"])
def test_daemons_accept_the_rendered_configs(variant: str, tmp_path: Path):
    topo = _default() if variant == "default" else _variant(ecmp=True, hold_time=9,
                                                              keepalive_time=3)
    paths = need_tools(DAEMON_TOOLS.values())  # a skip here, a failure on CI
    tools = {name: paths[tool] for name, tool in DAEMON_TOOLS.items()}
    plan = build_plan(topo)
    specs: list[DaemonSpec] = []
    for router in plan.by_role("router"):
        specs.append(bird_spec(topo, plan, router, node_dir(tmp_path, router.name),
                               str(tools["bird"])))
    for site in plan.by_role("site"):
        d = node_dir(tmp_path, site.name)
        specs.append(unbound_spec(plan, site, d, "unbound", str(tools["unbound"])))
        specs.append(exabgp_spec(topo, plan, site, d, str(tools["exabgp"])))
    for spec in specs:
        spec.write()
        spec.check()  # raises LabError with the daemon's own words
