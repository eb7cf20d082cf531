"""`catchment`'s paths: node names, the anycast address at the end replaced by the site that
answered, `?` for silent hops; and the traceroute probe's packets built without a word
from scapy."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.model import load_file
from lab.model.plan import build_plan
from lab.observe.catchment import named_path, path_text

RING = Path(__file__).resolve().parents[2] / "topologies" / "ecmp-ring.yaml"
ANYCAST = "203.0.113.53"


@pytest.fixture(scope="module")
def ring():
    report = load_file(RING)
    assert report.topology is not None, report.problems
    plan = build_plan(report.topology)
    return report.topology, plan.node_by_address()


def _address(names: dict[str, str], node: str) -> str:
    return next(a for a, n in names.items() if n == node and "." in a)


def test_the_anycast_hop_is_the_site_that_answered(ring) -> None:
    topo, names = ring
    hops = [_address(names, "r-d"), _address(names, "r-a"), ANYCAST]
    assert named_path(hops, ANYCAST, names, "a2", topo) == ["r-d", "r-a", "a2"]


def test_a_site_behind_another_router_is_not_named_after_the_last_router(ring) -> None:
    topo, names = ring
    hops = [_address(names, "r-d"), _address(names, "r-c"), ANYCAST]
    # The DNS answer came from a2 (another flow's hash); the echo went via r-c: c1's.
    assert named_path(hops, ANYCAST, names, "a2", topo) == ["r-d", "r-c", "c1"]
    # r-a has two sites: with an answer from elsewhere, the site is not guessed.
    hops = [_address(names, "r-d"), _address(names, "r-a"), ANYCAST]
    assert named_path(hops, ANYCAST, names, "c1", topo) == ["r-d", "r-a", None]


def test_a_path_that_never_reached_keeps_its_silent_hops(ring) -> None:
    topo, names = ring
    hops = [_address(names, "r-d"), None, None]
    path = named_path(hops, ANYCAST, names, None, topo)
    assert path == ["r-d", None, None]
    assert ANYCAST not in path


@pytest.mark.parametrize(("path", "text"), [
    (["r-d", "r-a", "a1"], "r-d > r-a > a1"),
    (["r-d", None, "c1"], "r-d > ? > c1"),
    (["r-d", None], "r-d > ?"),
    (["r-d", None, None, None, None], "r-d > ? (4 silent hops)"),
    ([], "?"),
])
def test_path_text(path: list[str | None], text: str) -> None:
    assert path_text(path) == text


def test_probe_packets_are_built_without_scapy_warnings(capfd: pytest.CaptureFixture[str],
                                                        ) -> None:
    import logging

    from probes import trace  # the probe's own import holds scapy's logger to errors

    scapy_log = logging.getLogger("scapy")
    assert scapy_log.getEffectiveLevel() >= logging.ERROR
    scapy_log.setLevel(logging.WARNING)  # even at warnings, the probe's packets say nothing
    try:
        v6, v4 = trace.echo_request(True, 7, 1), trace.echo_request(False, 7, 1)
    finally:
        scapy_log.setLevel(logging.ERROR)
    assert capfd.readouterr() == ("", "")
    assert v6[:2] == b"\x80\x00" and v4[:1] == b"\x08"  # echo requests, both families
