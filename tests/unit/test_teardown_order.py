"""Teardown stops the routers' BIRD last (the services' connections still close over the
lab's routes): which journaled processes count as router daemons, for every daemon a lab
with BFD responders and an issuer starts."""

from __future__ import annotations

from pathlib import Path

from lab.export.paths import IMAGE_RUNTIME
from lab.model import load_file
from lab.model.plan import build_plan
from lab.ops.lifecycle import is_router_daemon
from lab.render import launch

BFD = Path(__file__).resolve().parents[2] / "topologies" / "bfd.yaml"


def test_only_the_routers_bird_counts_as_a_router_daemon() -> None:
    report = load_file(BFD)
    assert report.topology is not None, report.problems
    plan = build_plan(report.topology)
    specs = launch.specs_for(report.topology, plan, Path("/lab"), IMAGE_RUNTIME.tools,
                             IMAGE_RUNTIME.python)
    routers = {n.name for n in plan.by_role("router")}
    chosen = {s.node for s in specs if is_router_daemon(s.label)}
    assert chosen == routers
    # The sites' BFD responders are BIRD too, but they are a site's, not the lab's routing.
    assert any(s.node not in routers and "bird" in s.argv[0] for s in specs)
