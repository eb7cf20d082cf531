"""A client's `expect:` and `failover:` name one site or a list of sites (any is correct):
validated like a single name, every problem named once, and a shipped ECMP topology."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab.model import load_file, load_text

ROOT = Path(__file__).resolve().parents[2]
BASE = """name: sets
anycast: {ipv4: 203.0.113.53/32, ipv6: "2001:db8:53::53/128"}
bgp: {ecmp: true, multipath_hash: l4}
routers:
  r1: {asn: 65001}
  r2: {asn: 65002}
sites:
  a1: {router: r1, asn: 65100}
  a2: {router: r1, asn: 65100}
  b1: {router: r2, asn: 65100}
links:
  - endpoints: [r1, r2]
clients:
"""


def problems_of(client: str) -> list[str]:
    report = load_text(BASE + f"  c1: {client}\n", "sets.yaml")
    return [f"{p.path}: {p.message}" for p in report.problems]


def test_a_list_of_sites_is_accepted_and_read_in_order():
    report = load_text(BASE + "  c1: {router: r1, expect: [a2, a1], failover: b1}\n")
    assert report.ok, report.problems
    assert report.topology is not None
    client = report.topology.clients["c1"]
    assert client.expect_sites == ("a2", "a1") and client.failover_sites == ("b1",)


def test_one_site_reads_as_a_one_site_set():
    report = load_text(BASE + "  c1: {router: r1, expect: a1}\n")
    assert report.topology is not None
    client = report.topology.clients["c1"]
    assert client.expect_sites == ("a1",) and client.failover_sites == ()


@pytest.mark.parametrize(("client", "problem"), [
    ("{router: r1, expect: [a1, zz]}", "clients.c1.expect: unknown site 'zz'"),
    ("{router: r1, expect: [a1, a1]}", "clients.c1.expect: a list of sites names a site twice"),
    ("{router: r1, expect: []}", "clients.c1.expect: a list of sites must name at least one"),
    ("{router: r1, expect: [a1, a2], failover: [b1, a2]}",
     "clients.c1.failover: the failover site 'a2' is also an expected site"),
    ("{router: r1, expect: a1, failover: a1}",
     "clients.c1.failover: the failover site must differ from the expected site"),
])
def test_bad_site_sets_are_named(client, problem):
    found = problems_of(client)
    assert any(p.startswith(problem) for p in found), found


def test_a_wrong_type_is_one_problem_not_one_per_reading():
    found = problems_of("{router: r1, expect: a1, failover: no}")
    assert len(found) == 1 and found[0].startswith("clients.c1.failover: YAML reads no as "
                                                   "the boolean false"), found
    found = problems_of("{router: r1, expect: [a1, 3]}")
    assert found == ["clients.c1.expect[1]: Input should be a valid string (got 3)"], found


def test_the_shipped_ecmp_ring_expects_sets_under_ecmp():
    path = ROOT / "topologies" / "ecmp-ring.yaml"
    report = load_file(path)
    assert report.ok, report.problems
    topo = report.topology
    assert topo is not None and topo.bgp.ecmp and topo.bgp.multipath_hash == "l4"
    assert any(len(c.expect_sites) > 1 for c in topo.clients.values())
    assert yaml.safe_load(path.read_text())["bgp"] == {"ecmp": True, "multipath_hash": "l4"}


def test_validate_warns_of_a_single_expected_site_with_an_equal_cost_twin():
    client = "  c1: {router: r1, expect: a1, failover: b1}\n"
    report = load_text(BASE + client, "twin.yaml")
    assert report.ok
    assert [(w.path, w.line) for w in report.warnings] == [("clients.c1.expect", 14)]
    assert "a1 has an equal-cost twin on r1 (a2)" in report.warnings[0].message
    assert report.to_json()["warnings"][0]["path"] == "clients.c1.expect"
    # Naming the set, or ECMP off, or a site without a twin: nothing to warn of.
    assert load_text(BASE + "  c1: {router: r1, expect: [a1, a2]}\n").warnings == []
    assert load_text(BASE.replace("ecmp: true", "ecmp: false") + client).warnings == []
    assert load_text(BASE + "  c1: {router: r2, expect: b1}\n").warnings == []
