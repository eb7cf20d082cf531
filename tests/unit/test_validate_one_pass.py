"""`validate` reports every problem of a file in one run: the semantic checks run on the
file with its structurally broken parts set aside, and say nothing caused by setting them
aside; and a lab prefix overlapping one of this machine's networks is a problem (the pure
`host_overlaps`, and through `load_text`)."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from lab.model import load_text
from lab.model.checks import host_overlaps


def _problems(text: str, **kwargs) -> list[str]:
    report = load_text(textwrap.dedent(text), "<t>", **kwargs)
    assert report.topology is None
    return [f"{p.line}: {p}" for p in report.problems]


def test_structural_and_semantic_problems_come_together() -> None:
    problems = _problems("""\
        name: bad
        bgp: {hold_time: 1, keepalive_time: 1}
        routers:
          r1: {asn: 65001}
          r2: {asn: 65001}
        sites:
          s1: {router: r1, asn: 65100, weight: 2}
          s2: {router: r9, asn: 65100}
        clients:
          c1: {router: r1, expect: s3}
        links:
          - endpoints: [r1, r2]
        """)
    assert problems == [
        "2: bgp.hold_time: Input should be greater than or equal to 3 (got 1)",
        "5: routers.r2.asn: AS 65001 is already used by router 'r1': routers peer over "
        "eBGP, so each needs its own AS",
        "7: sites.s1.weight: unknown key 'weight' (allowed here: router, asn, bfd)",
        "8: sites.s2.router: unknown router 'r9' (known: r1, r2)",
        "10: clients.c1.expect: unknown site 's3' (known: s1, s2)",
    ]


def test_a_broken_part_set_aside_causes_no_problem_of_its_own() -> None:
    problems = _problems("""\
        name: bad
        routers:
          r1: {asn: 65001}
          r2: {asn: sixty-five}
        sites:
          s1: {router: r2, asn: 65100}
        clients:
          c1: {router: r2, expect: s1}
        links:
          - endpoints: [r1, r2, r3]
          - endpoints: [r1, r2]
          - endpoints: [r1, r7]
        """)
    # r2 is set aside (its AS is broken): nothing says "unknown router 'r2'"; links[0] is
    # set aside too, and links[2] keeps its index as the file has it.
    assert problems == [
        "4: routers.r2.asn: Input should be a valid integer (got 'sixty-five')",
        "10: links[0].endpoints: a link has exactly two endpoints (got 3)",
        "12: links[2].endpoints[1]: unknown router 'r7' (known: r1)",
    ]


def test_a_missing_section_is_one_problem() -> None:
    assert _problems("""\
        name: bad
        sites: {s1: {router: r1, asn: 65100}}
        """) == ["None: routers: is required but missing"]


HOST = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "192.0.2.0/24", "fe80::/64",
                                          "2001:db8:99::/64", "10.20.0.0/16")]


def test_host_overlaps_names_each_overlapping_prefix() -> None:
    found = host_overlaps({"pools.links4": "10.20.30.0/24", "pools.links6": "fd00::/48",
                           "anycast.ipv4": "203.0.113.53/32",
                           "anycast.ipv6": "2001:db8:99::53/128"}, HOST)
    assert [path for path, _ in found] == ["pools.links4", "anycast.ipv6"]
    assert "10.20.30.0/24 overlaps 10.20.0.0/16, a network of this machine" in found[0][1]


@pytest.mark.parametrize("prefix", ["127.0.0.0/16", "fe80::/10", "not a prefix"])
def test_host_overlaps_ignores_loopback_link_local_and_unparsable(prefix: str) -> None:
    assert host_overlaps({"pools.links4": prefix}, HOST) == []


def test_an_overlap_and_a_schema_problem_are_reported_together() -> None:
    problems = _problems("""\
        name: bad
        pools: {links4: 10.20.0.0/24}
        routers: {r1: {asn: 65001}}
        sites: {s1: {router: r1, asn: 65100, color: red}}
        """, host_networks=HOST)
    assert problems == [
        "2: pools.links4: 10.20.0.0/24 overlaps 10.20.0.0/16, a network of this machine: "
        "the lab would shadow it (choose another pools prefix)",
        "4: sites.s1.color: unknown key 'color' (allowed here: router, asn, bfd)",
    ]


def test_without_host_networks_an_overlap_is_not_checked() -> None:
    report = load_text("name: ok\npools: {links4: 10.20.0.0/24}\nrouters: {r1: {asn: 65001}}\n"
                       "sites: {s1: {router: r1, asn: 65100}}\n", "<t>")
    assert report.ok, report.problems
