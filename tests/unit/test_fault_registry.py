"""The fault registry: a fault is one object, and registering it is all the CLI's help,
its error message, `inject`, `heal` and `measure failover` need. No root: the faults
here are throwaway objects that break nothing."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lab.cli.main import _register, app
from lab.host.journal import Journal
from lab.host.labs import Lab
from lab.measure.failover import fault_actions
from lab.model import load_file
from lab.model.errors import BadInput
from lab.model.plan import NodePlan, build_plan
from lab.ops import faults
from lab.render.base import Readiness

DEFAULT = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"
BUILT_IN = ["dns", "dns-hang", "introspect", "introspect-hang", "healthd", "healthd-hang",
            "speaker", "speaker-hang", "link", "blackhole", "bfd",
            "stale", "issuer", "wrong-key", "expired-cert", "contain"]


@dataclass(frozen=True)
class Throwaway(faults.Fault):
    """Records what it was asked to do, and does nothing."""

    calls: list[tuple[Any, ...]] = field(default_factory=list, compare=False)
    group: str = ""
    rank: int = 0
    ready: bool = True

    def inject(self, lab: Lab, site: NodePlan) -> dict[str, Any]:
        self.calls.append(("inject", site.name))
        return {"token": 42, "t_mono": 1.0, "t": 2.0}

    def heal(self, lab: Lab, site: NodePlan, records: list[dict[str, Any]],
             timeout_s: float) -> Readiness:
        self.calls.append(("heal", site.name, sorted(r["fault"] for r in records)))
        return Readiness(self.ready, f"{self.name} undone" if self.ready else "still broken")

    @property
    def heal_group(self) -> str:
        return self.group or self.name

    @property
    def heal_rank(self) -> int:
        return self.rank


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    report = load_file(DEFAULT)
    assert report.topology is not None
    return Lab(Journal("unit", tmp_path), report.topology, build_plan(report.topology))


def register(monkeypatch: pytest.MonkeyPatch, *added: faults.Fault) -> None:
    for fault in added:
        monkeypatch.setitem(faults.REGISTRY, fault.name, fault)


def test_the_built_in_faults_in_their_order() -> None:
    assert faults.fault_names() == BUILT_IN
    assert all(f.description for f in faults.REGISTRY.values())
    assert {f.name for f in faults.REGISTRY.values()
            if isinstance(f, faults.ProcessFault) and f.sig == signal.SIGSTOP} == {
        n for n in BUILT_IN if n.endswith("-hang")} | {"bfd"}


def test_a_registered_fault_is_in_fail_help(monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, Throwaway("wobble", "shake the site a little (throwaway)"))
    _register()
    result = CliRunner().invoke(app, ["fail", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"{BUILT_IN[-1]}, wobble" in result.output  # the argument's list
    assert "wobble" in result.output and "shake the site a little (throwaway)" in result.output
    for name, fault in faults.REGISTRY.items():
        assert name in result.output and fault.description in result.output


def test_an_unknown_fault_is_refused_listing_the_registry(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, Throwaway("wobble", "throwaway"))
    for call in (lambda: faults.inject(lab, "ams", "nosuch"),
                 lambda: faults.heal(lab, "ams", "nosuch")):
        with pytest.raises(BadInput) as err:
            call()
        assert err.value.message == (f"unknown fault 'nosuch' (faults: "
                                     f"{', '.join(BUILT_IN)}, wobble)")
    with pytest.raises(BadInput, match=r"\(faults: .*, wobble, drain\)"):
        fault_actions(lab, "ams", "nosuch")


def test_inject_and_heal_dispatch_to_the_registered_object(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    wobble = Throwaway("wobble", "throwaway")
    register(monkeypatch, wobble)
    entry = faults.inject(lab, "ams", "wobble")
    assert entry == {"site": "ams", "fault": "wobble", "token": 42, "t_mono": 1.0, "t": 2.0}
    assert faults.active(lab) == {"ams:wobble": entry}
    with pytest.raises(Exception, match="already active"):
        faults.inject(lab, "ams", "wobble")
    healed = faults.heal(lab, "ams")
    assert wobble.calls == [("inject", "ams"), ("heal", "ams", ["wobble"])]
    assert [(h["fault"], h["ready"], h["detail"]) for h in healed] == [
        ("wobble", True, "wobble undone")]
    assert faults.active(lab) == {}


def test_measure_failover_takes_a_registered_fault(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    wobble = Throwaway("wobble", "throwaway")
    register(monkeypatch, wobble)
    inject, heal = fault_actions(lab, "ams", "wobble")
    inject()
    heal()
    assert [c[0] for c in wobble.calls] == ["inject", "heal"]


def test_heal_undoes_a_group_once_in_rank_order_and_keeps_what_failed(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    late = Throwaway("late", "x", calls, rank=5)
    kill = Throwaway("kill", "x", calls, group="daemon", rank=2)
    freeze = Throwaway("freeze", "x", calls, group="daemon", rank=2)
    stuck = Throwaway("stuck", "x", calls, rank=1, ready=False)
    register(monkeypatch, late, kill, freeze, stuck)
    for name in ("late", "kill", "freeze", "stuck"):
        faults.inject(lab, "ams", name)
    faults.inject(lab, "nyc", "kill")  # another site: not healed
    del calls[:]
    healed = faults.heal(lab, "ams")
    assert calls == [("heal", "ams", ["stuck"]), ("heal", "ams", ["freeze", "kill"]),
                     ("heal", "ams", ["late"])]
    assert [(h["fault"], h["ready"]) for h in healed] == [
        ("stuck", False), ("kill", True), ("freeze", True), ("late", True)]
    left = faults.active(lab)
    assert list(left) == ["ams:stuck", "nyc:kill"]
    assert left["ams:stuck"]["heal_failed"] == "still broken"
