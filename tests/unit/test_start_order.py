"""The order `up` starts daemons in: routers, then the issuer, then the sites, each wave
after the one before; within a wave nodes side by side, one node's daemons one after
another; the first failure stops further starts and is raised."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from lab.host.journal import ProcessRecord
from lab.render import launch
from lab.render.base import DaemonSpec
from lab.render.launch import start_all, start_waves

ROLES = {"r1": "router", "r2": "router", "issuer": "issuer", "a": "site", "b": "site",
         "c": "site"}


def spec(name: str, node: str) -> DaemonSpec:
    return DaemonSpec(name=name, node=node, netns=f"acl.x.{node}",
                      config_path=Path(f"/nonexistent/{node}/{name}.conf"), config="",
                      check_argv=["true"], argv=[name], log_path=Path(f"/nonexistent/{name}"))


def lab_specs() -> list[DaemonSpec]:
    specs = [spec("bird", "r1"), spec("bird", "r2"), spec("issuer", "issuer")]
    for site in "abc":
        specs += [spec(d, site) for d in ("unbound", "introspect", "exabgp", "healthd")]
    return specs


def labels(chains: list[list[DaemonSpec]]) -> list[list[str]]:
    return [[s.label for s in chain] for chain in chains]


def test_waves_are_routers_then_issuer_then_sites_one_chain_per_node() -> None:
    waves = start_waves(lab_specs(), ROLES)
    assert [labels(w) for w in waves] == [
        [["bird@r1"], ["bird@r2"]],
        [["issuer@issuer"]],
        [[f"{d}@{s}" for d in ("unbound", "introspect", "exabgp", "healthd")]
         for s in "abc"],
    ]


def test_a_wave_follows_its_role_not_where_the_spec_is_listed() -> None:
    specs = [spec("unbound", "a"), spec("bird", "r1"), spec("exabgp", "a"),
             spec("x", "elsewhere")]
    waves = start_waves(specs, ROLES)
    assert [labels(w) for w in waves] == [[["bird@r1"]], [["unbound@a", "exabgp@a"]],
                                          [["x@elsewhere"]]]


def test_without_roles_every_node_is_in_one_wave() -> None:
    waves = start_waves(lab_specs(), {})
    assert len(waves) == 1 and len(waves[0]) == 6


class FakeStarts:
    """Stands in for the process runner: records when each start began and ended."""

    def __init__(self, fail: str | None = None, delay_s: float = 0.02) -> None:
        self.fail, self.delay_s = fail, delay_s
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []  # ("begin" | "end", label)
        self.running = 0
        self.most_at_once = 0

    def __call__(self, _journal: object, s: DaemonSpec) -> ProcessRecord:
        with self.lock:
            self.events.append(("begin", s.label))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.delay_s)  # a start takes a while; the test waits on nothing
        with self.lock:
            self.running -= 1
            self.events.append(("end", s.label))
        if s.label == self.fail:
            raise RuntimeError(f"{s.label} could not start")
        return ProcessRecord(s.label, s.node, 1000 + len(self.events), 1)

    def order(self, kind: str) -> list[str]:
        return [label for k, label in self.events if k == kind]


def test_start_all_keeps_each_nodes_order_and_the_waves(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStarts()
    monkeypatch.setattr(launch, "_start", fake)
    specs = lab_specs()
    records = start_all(None, specs, ROLES, workers=3)  # type: ignore[arg-type]
    assert [r.name for r in records] == [s.label for s in specs]  # in spec order
    ends = fake.order("end")
    begins = fake.order("begin")
    for site in "abc":
        chain = [f"{d}@{site}" for d in ("unbound", "introspect", "exabgp", "healthd")]
        assert [x for x in begins if x.endswith(f"@{site}")] == chain
        for earlier, later in itertools.pairwise(chain):
            assert ends.index(earlier) < begins.index(later)  # one after another
    last_router = max(ends.index("bird@r1"), ends.index("bird@r2"))
    assert begins.index("issuer@issuer") > last_router
    first_site = min(begins.index(f"unbound@{s}") for s in "abc")
    assert first_site > ends.index("issuer@issuer")
    assert fake.most_at_once == 3  # the sites' chains ran side by side, bounded


def test_the_first_failure_stops_further_starts_and_is_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStarts(fail="introspect@a")
    monkeypatch.setattr(launch, "_start", fake)
    with pytest.raises(RuntimeError, match="introspect@a could not start"):
        start_all(None, lab_specs(), ROLES, workers=1)  # type: ignore[arg-type]
    begins = fake.order("begin")
    assert begins[-1] == "introspect@a"  # nothing was started after it
    assert not [b for b in begins if b.endswith(("@b", "@c"))]
    assert fake.order("end") == begins  # every start that began has ended


def test_a_failure_lets_the_other_nodes_starts_under_way_finish(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStarts(fail="unbound@a")
    monkeypatch.setattr(launch, "_start", fake)
    with pytest.raises(RuntimeError):
        start_all(None, lab_specs(), ROLES, workers=3)  # type: ignore[arg-type]
    assert fake.running == 0
    assert sorted(fake.order("end")) == sorted(fake.order("begin"))  # none left half-way
    assert [b for b in fake.order("begin") if b.endswith("@a")] == ["unbound@a"]
    assert len(fake.order("begin")) < len(lab_specs())
