"""What `up` decides and says without building anything: what differs between two
topologies, when wrong answers count as settled, a lab of the same name that is up with
the same or another topology, hints that name --lab when several labs exist, and what
`list` makes of the labs in a run directory. No root: labs here are run directories
only (a journal, its state and the topology copy `up` keeps)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.cli.lab import age_text
from lab.host import journal, labs
from lab.host.journal import Journal
from lab.model import Topology, load_file, load_text
from lab.model.compare import changes, summary, topology_changes
from lab.model.errors import BadInput
from lab.model.names import TOPOLOGY_COPY
from lab.model.plan import build_plan
from lab.observe import inventory
from lab.observe.converge import Steady
from lab.observe.routing import Session
from lab.ops import lifecycle

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "topologies" / "default.yaml"


def topology(name: str = "default", edits: dict[str, Any] | None = None) -> Topology:
    """The default topology, renamed, with fields replaced (dotted paths; None removes),
    validated."""
    data = yaml.safe_load(DEFAULT.read_text())
    data["name"] = name
    for path, value in (edits or {}).items():
        *parents, leaf = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf)
        else:
            node[leaf] = value
    report = load_text(yaml.safe_dump(data, sort_keys=False), "edited.yaml")
    assert report.ok and report.topology is not None, report.problems
    return report.topology


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("ANYCAST_LAB", raising=False)
    return tmp_path / "run"


def running(topo: Topology, phase: str = "up", **state: Any) -> Journal:
    """A run directory as `up` leaves it for a lab: journal, state, topology copy."""
    journal = Journal(topo.name)
    journal.open()
    journal.set_state(phase=phase, **state)
    (journal.dir / TOPOLOGY_COPY).write_text(
        yaml.safe_dump(topo.model_dump(mode="json"), sort_keys=False))
    return journal


# What differs between two topologies.

def test_the_same_topology_has_no_changes() -> None:
    assert topology_changes(topology(), topology()) == []


def test_a_changed_expectation_is_named_by_its_path() -> None:
    new = topology(edits={"clients.c-eu.expect": "sin", "clients.c-ap": None})
    assert topology_changes(topology(), new) == ["clients.c-eu.expect: ams -> sin",
                                                 "clients.c-ap: removed"]


def test_added_sites_links_and_impairments_are_listed() -> None:
    old = yaml.safe_load(DEFAULT.read_text())
    new = yaml.safe_load(DEFAULT.read_text())
    new["sites"]["lis"] = {"router": "r-eu", "asn": 65100}
    new["links"][0]["impair"] = {"delay": "20ms"}
    new["links"].append({"endpoints": ["r-eu", "r-ap"]})
    assert changes(old, new) == ["sites.lis: added", "links[0].impair: added",
                                 "links[3]: added"]


def test_how_up_behaves_is_not_a_different_lab() -> None:
    assert topology_changes(topology(), topology(edits={"up.keep_on_failure": True})) == []


def test_a_long_list_of_changes_is_cut_with_a_count() -> None:
    paths = [f"p{i}" for i in range(20)]
    assert summary(paths, shown=3) == ["p0", "p1", "p2", "and 17 more"]
    assert summary(paths[:3], shown=3) == ["p0", "p1", "p2"]


# When wrong answers count as settled.

def test_the_same_wrong_answers_must_hold_for_the_whole_window() -> None:
    steady = Steady(3.0)
    wrong = frozenset({("c-eu", "v4", "ams")})
    assert not steady.see(wrong, 10.0)
    assert not steady.see(wrong, 12.9)
    assert steady.see(wrong, 13.0)


def test_any_change_or_unsettled_moment_starts_the_window_again() -> None:
    steady = Steady(3.0)
    a, b = frozenset({("c-eu", "v4", "ams")}), frozenset({("c-eu", "v4", "nyc")})
    steady.see(a, 0.0)
    assert not steady.see(b, 3.5)  # another answer: the window starts at 3.5
    assert not steady.see(b, 6.0)
    assert not steady.see(None, 6.4)  # a site not announced, a session down
    assert not steady.see(b, 6.5)
    assert not steady.see(b, 9.4)
    assert steady.see(b, 9.5)
    assert not steady.see(frozenset(), 20.0)  # converged: nothing is wrong


# A lab of the same name that is up.

def test_up_with_the_same_topology_is_already_up(run_dir: Path) -> None:
    topo = topology("same")
    running(topo)
    with pytest.raises(lifecycle.AlreadyUp):
        lifecycle._build(topo, build_plan(topo), lambda _msg: None, 60.0)


def test_up_with_another_topology_is_refused_with_what_differs(run_dir: Path) -> None:
    running(topology("class-1"))
    edited = topology("class-1", {"clients.c-eu.expect": "sin"})
    with pytest.raises(lifecycle.TopologyChanged) as refused:
        lifecycle._build(edited, build_plan(edited), lambda _msg: None, 60.0,
                         source="edited.yaml")
    err = refused.value
    assert err.exit_code == 1
    assert err.message.startswith("lab 'class-1' is up with a different topology (1 change: "
                                  "clients.c-eu.expect: ams -> sin); nothing was changed")
    assert "`anycast-lab up edited.yaml --name class-1 --replace`" in err.message
    assert "`anycast-lab down --lab class-1`" in err.message
    assert err.details == ["clients.c-eu.expect: ams -> sin"]
    assert Journal("class-1").state()["phase"] == "up"  # untouched


def test_several_changes_are_counted_and_listed(run_dir: Path) -> None:
    running(topology("class-2"))
    edited = topology("class-2", {"clients.c-eu.expect": "sin", "bgp.ecmp": True,
                                  "sites.lis": {"router": "r-eu", "asn": 65100}})
    with pytest.raises(lifecycle.TopologyChanged) as refused:
        lifecycle._build(edited, build_plan(edited), lambda _msg: None, 60.0)
    assert "(3 changes: bgp.ecmp: False -> True)" in refused.value.message
    assert "`anycast-lab up FILE --name class-2 --replace`" in refused.value.message
    assert refused.value.details == ["bgp.ecmp: False -> True", "sites.lis: added",
                                     "clients.c-eu.expect: ams -> sin"]


def test_a_lab_whose_topology_record_is_gone_is_not_taken_for_the_same(
        run_dir: Path) -> None:
    topo = topology("lost")
    journal = running(topo)
    (journal.dir / TOPOLOGY_COPY).unlink()
    with pytest.raises(lifecycle.TopologyChanged, match="topology record is missing"):
        lifecycle._build(topo, build_plan(topo), lambda _msg: None, 60.0)


def test_down_topology_names_the_lab_the_file_builds(tmp_path: Path) -> None:
    assert lifecycle.lab_of(DEFAULT) == "default"
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\n")
    with pytest.raises(BadInput) as refused:
        lifecycle.lab_of(broken)
    assert "`anycast-lab down --lab NAME`" in refused.value.details[-1]


# Hints and the default lab.

def test_hints_name_the_lab_only_when_several_exist(run_dir: Path) -> None:
    running(topology("alone"))
    assert labs.command("alone", "status") == "`anycast-lab status`"
    running(topology("second"))
    assert labs.command("alone", "status") == "`anycast-lab status --lab alone`"
    assert labs.command("second", "heal ams") == "`anycast-lab heal ams --lab second`"


def test_opening_without_a_name_among_several_labs_says_how_to_choose(run_dir: Path) -> None:
    running(topology("a"))
    running(topology("b"))
    with pytest.raises(BadInput) as ambiguous:
        labs.open_lab(None)
    assert ambiguous.value.message == ("several labs are up (a, b): choose one with --lab NAME "
                                       "or ANYCAST_LAB=NAME (see `anycast-lab list`)")
    with pytest.raises(BadInput, match="--lab NAME or ANYCAST_LAB=NAME, or use --all"):
        lifecycle.labs_to_tear_down(None, all_labs=False)


def test_down_of_a_lab_that_is_not_up_removes_nothing(run_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    running(topology("a"))
    monkeypatch.setattr(lifecycle, "orphan_labs", lambda: [])
    assert lifecycle.labs_to_tear_down("b", all_labs=False) == []
    assert lifecycle.labs_to_tear_down("a", all_labs=False) == ["a"]


# Labs of another run directory (ANYCAST_LAB_RUN_DIR) are not orphans of this one.

def test_a_lab_dir_elsewhere_is_found_above_its_processes_working_directories() -> None:
    ours, default = Path("/tmp/mine"), Path("/run/anycast-lab")
    found = journal.lab_dirs_elsewhere(
        "bob", ["/srv/labs/bob/nodes/ams", "/tmp/mine/bob", "/old/bob (deleted)", "rel/bob"],
        ours, default)
    assert found == [default / "bob", Path("/srv/labs/bob")]
    # In the default run root itself, only the processes lead elsewhere.
    assert journal.lab_dirs_elsewhere("bob", ["/run/anycast-lab/bob"], default, default) == []


def test_unjournaled_labs_split_into_orphans_and_other_run_dirs() -> None:
    there = {"carol": Path("/srv/labs/carol")}
    orphans, others = journal.split_unjournaled({"alice", "bob", "carol"}, ["alice"],
                                                there.get)
    assert orphans == ["bob"]
    assert others == {"carol": Path("/srv/labs/carol")}


def test_down_all_and_list_leave_another_run_dirs_lab_alone(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(other))
    running(topology("carol"))
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(run_dir))
    running(topology("alice"))
    # carol's daemons run in her lab directory; bob's namespaces have no journal anywhere.
    monkeypatch.setattr(lifecycle.procs, "marked_cwds",
                        lambda: {"alice": {str(run_dir / "alice")},
                                 "carol": {str(other / "carol")}})
    monkeypatch.setattr(lifecycle, "namespace_labs", lambda: {"alice", "bob", "carol"})
    assert lifecycle.unjournaled_labs() == (["bob"], {"carol": other / "carol"})
    assert lifecycle.labs_to_tear_down(None, all_labs=True) == ["alice", "bob"]
    assert lifecycle.labs_to_tear_down("carol", all_labs=False) == []
    entry = inventory.labs(orphans=[], elsewhere={"carol": other / "carol"})[-1]
    assert entry["name"] == "carol" and entry["phase"] == "other-run-dir"
    assert f"not ours: its journal is in {other / 'carol'}" in entry["health"]["summary"]


# What `list` shows.

def test_list_shows_each_lab_with_its_file_phase_age_and_nodes(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory, "sessions", lambda plan, lab_dir: [])
    monkeypatch.setattr(inventory, "site_health", lambda lab, site: {"health": "up"})
    running(topology("a"), started=time.time() - 125, topology_file="/t/a.yaml")
    running(topology("b"), phase="failed", started=time.time(), failure="it failed")
    found = inventory.labs(orphans=["c"])
    assert [e["name"] for e in found] == ["a", "b", "c"]
    a, b, c = found
    assert a["topology"] == "/t/a.yaml" and a["phase"] == "up"
    assert 124 <= a["age_s"] < 200
    assert a["nodes"] == {"routers": 3, "sites": 3, "clients": 3}
    assert b["phase"] == "failed" and b["failure"] == "it failed"
    assert c["phase"] == "orphaned" and "anycast-lab down --lab c" in c["health"]["summary"]


def test_the_health_summary_counts_sites_and_names_the_unhealthy(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    health = {"ams": "down", "nyc": "up", "sin": "up"}
    monkeypatch.setattr(inventory, "site_health", lambda lab, site: {"health": health[site]})
    monkeypatch.setattr(inventory, "sessions", lambda plan, lab_dir: [
        Session("r-eu", "site_ams", "ams", "Established", ""),
        Session("r-eu", "r_r_us_4", "r-us", "Connect", "")])
    running(topology("a"))
    summary_ = inventory.health_summary(labs.open_lab("a"))
    assert summary_["sites"] == {"down": 1, "up": 2}
    assert summary_["unhealthy"] == ["ams"]
    assert summary_["sessions"] == {"established": 1, "total": 2}
    assert summary_["summary"] == "2 up, 1 down (ams); BGP 1/2"


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (59.9, "59 s"), (125, "2m05s"),
                                               (7260, "2h01m"), (2 * 86400 + 3600, "2d01h")])
def test_ages_read_at_a_glance(seconds: float, text: str) -> None:
    assert age_text(seconds) == text


def test_the_topology_default_for_keeping_a_failed_lab_is_off() -> None:
    assert load_file(DEFAULT).topology.up.keep_on_failure is False  # type: ignore[union-attr]
    assert topology(edits={"up.keep_on_failure": True}).up.keep_on_failure is True
    report = load_text(DEFAULT.read_text() + "up: {keep_on_failure: 'yes'}\n", "t.yaml")
    assert not report.ok
    assert [p.path for p in report.problems] == ["up.keep_on_failure"]
