"""The names module is the one place both sides of a name ask: the namespace parse undoes
the namespace name, the BIRD protocols the renderer writes are the ones observe asks
about, and the files the renderers give the daemons are those the readers look for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.model import load_file, names
from lab.model.plan import build_plan
from lab.observe.routing import session_protocols
from lab.render import credentials, health, introspect
from lab.render.bird import bird_spec, render_bird
from lab.render.exabgp import api_argv
from lab.render.unbound import render_unbound

ROOT = Path(__file__).resolve().parents[2]
LAB_DIR = Path("/run/anycast-lab/names")


@pytest.fixture(scope="module")
def topo():
    report = load_file(ROOT / "topologies" / "default.yaml")
    assert report.topology is not None
    return report.topology


def test_the_lab_of_a_namespace_is_the_lab_it_was_named_for() -> None:
    assert names.lab_of_netns(names.netns_name("edge-1", "r-eu")) == "edge-1"
    assert names.netns_name("edge-1", "r-eu").startswith(names.lab_netns_prefix("edge-1"))
    for other in ("acl", "acl.", "acl..r1", "acl.lab", "other.lab.r1", "aclx.lab.r1"):
        assert names.lab_of_netns(other) is None, other


def test_bird_is_configured_with_the_sessions_observe_asks_about(topo) -> None:
    plan = build_plan(topo)
    for router in plan.by_role("router"):
        config = render_bird(topo, plan, router)
        configured = set(re.findall(r"^protocol bgp (\S+) from lab_peer", config, re.M))
        assert configured == {p for p, _peer in session_protocols(plan, router.name)}
        assert configured >= {names.site_protocol(s.name) for s in plan.by_role("site")
                              if s.router == router.name}
        for protocol in names.KERNEL_PROTOCOLS.values():
            assert f"protocol kernel {protocol} {{" in config


def test_protocol_names_are_bird_identifiers() -> None:
    assert names.site_protocol("site-a") == "site_site_a"
    assert names.router_protocol("r-us", 6) == "r_r_us_6"


def test_daemons_are_given_the_paths_the_lab_reads(topo) -> None:
    plan = build_plan(topo)
    router, site = plan.nodes["r-eu"], plan.nodes["ams"]
    d_router, d_site = names.node_dir(LAB_DIR, "r-eu"), names.node_dir(LAB_DIR, "ams")
    argv = bird_spec(topo, plan, router, d_router).argv
    assert Path(argv[argv.index("-s") + 1]) == names.bird_socket(LAB_DIR, "r-eu")
    shim = api_argv(plan, site, d_site, "python", 300)
    assert Path(shim[shim.index("--control") + 1]) == names.speaker_socket(LAB_DIR, "ams")
    config = health.health_config(topo, plan, site, d_site, credentials.paths(LAB_DIR))
    assert Path(config["shim_socket"]) == names.speaker_socket(LAB_DIR, "ams")
    assert Path(config["state_file"]) == health.state_file(d_site)
    assert health.state_file(d_site).name == names.HEALTH_STATE
    assert Path(config["drain_file"]).name == names.DRAIN
    service = introspect.introspect_config(plan, site, d_site, credentials.paths(LAB_DIR))
    assert Path(service["revocation_path"]) == d_site / names.REVOCATION
    assert credentials.paths(LAB_DIR).root == LAB_DIR / names.PKI


def test_the_health_check_asks_the_name_unbound_answers(topo) -> None:
    plan = build_plan(topo)
    site = plan.nodes["ams"]
    d_site = names.node_dir(LAB_DIR, "ams")
    dns = health.health_config(topo, plan, site, d_site, credentials.paths(LAB_DIR))["checks"][0]
    assert dns["qname"] == names.HEALTH_QNAME
    assert f'local-data: "{names.HEALTH_QNAME} 0 IN A ' in render_unbound(plan, site, d_site)
