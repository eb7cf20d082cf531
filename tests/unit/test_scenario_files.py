"""The shipped scenarios validate, the committed schema is current, and the model's
action parsing takes the faults from the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.model.errors import BadInput
from lab.ops.faults import fault_names
from lab.scenario import catalog
from lab.scenario.load import load_file
from lab.scenario.model import VERBS, parse_action
from lab.scenario.schema import scenario_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "scenarios" / "schema.json"
MIN_SHIPPED = 10


def test_committed_schema_is_current() -> None:
    assert json.loads(SCHEMA.read_text()) == scenario_schema(), (
        "scenarios/schema.json is stale: run "
        "`anycast-lab scenario schema > scenarios/schema.json`")


@pytest.mark.parametrize("path", catalog.shipped(), ids=lambda p: p.stem)
def test_shipped_scenario_validates(path: Path) -> None:
    report = load_file(path)
    assert report.ok, [str(p) for p in report.problems]
    assert report.scenario is not None and report.scenario.name == path.stem
    assert report.scenario.narrative.strip(), "a shipped scenario has a narrative to teach"
    assert path.read_text().startswith("# yaml-language-server: $schema=schema.json")


def test_enough_scenarios_are_shipped() -> None:
    assert len(catalog.shipped()) >= MIN_SHIPPED


@pytest.mark.parametrize("fault", fault_names())
def test_every_registered_fault_is_an_action(fault: str) -> None:
    action = parse_action(f"fail ams {fault}")
    assert (action.verb, action.args) == ("fail", ("ams", fault))
    assert str(parse_action(f"heal ams {fault}")) == f"heal ams {fault}"


def test_exec_keeps_the_rest_of_the_line() -> None:
    action = parse_action("exec c-eu dig @203.0.113.53 'id.server' CH TXT")
    assert action.args == ("c-eu", "dig", "@203.0.113.53", "id.server", "CH", "TXT")
    assert set(VERBS) >= {"fail", "heal", "drain", "undrain", "issue", "revoke", "exec",
                          "wait", "reset"}


def test_find_by_name_or_path() -> None:
    assert catalog.find("catchment-basics").name == "catchment-basics.yaml"
    with pytest.raises(BadInput, match="no scenario named 'nope'"):
        catalog.find("nope")
    with pytest.raises(BadInput, match="does not exist"):
        catalog.find("/nowhere/x.yaml")


def test_load_or_raise_names_the_first_problem_and_counts_the_rest() -> None:
    bad = ROOT / "tests" / "scenarios" / "bad" / "many-problems.yaml"
    with pytest.raises(BadInput) as caught:
        catalog.load_or_raise(bad)
    assert caught.value.message.endswith("(and 3 more problems)")
    assert len(caught.value.details) == 3


def test_impair_is_an_action_checked_like_the_command() -> None:
    action = parse_action("impair r-eu--r-us --loss 20")
    assert (action.verb, action.args) == ("impair", ("r-eu--r-us", "--loss", "20"))
    from lab.scenario.model import impair_request

    assert impair_request(("ams", "--loss", "20%", "--rate", "10mbit")) == (
        "ams", {"loss": 20.0, "rate": "10mbit", "delay": None})
    assert impair_request(("ams", "--clear")) == ("ams", None)
    for bad, words in [("impair ams", "write it as"), ("impair ams --loss", "--loss PCT"),
                       ("impair ams --loss x", "a percentage"),
                       ("impair ams --loss 0", "impairs nothing"),
                       ("impair ams --loss 1 --loss 2", "given twice"),
                       ("impair ams --clear --loss 2", "--clear")]:
        with pytest.raises(ValueError, match=words):
            parse_action(bad)


def test_probe_kinds_and_their_names_are_checked_against_the_scenario() -> None:
    from lab.scenario.load import load_text

    text = """name: t
title: t
topology: default
probe: {kinds: [dns, tcp], tcp_clients: [c-eu, c-nope]}
steps:
  - name: s
    do: impair r-eu--r-nope --loss 10
    expect:
      - {measured: c-eu, probe: https, settles_at: ams}
      - {measured: c-us, probe: tcp, settles_at: nyc}
"""
    report = load_text(text, base=ROOT / "scenarios")
    found = {p.path: p.message for p in report.problems}
    assert "unknown client 'c-nope'" in found["probe.tcp_clients[1]"]
    assert "unknown link or" in found["steps[0].do"]
    assert "add it to probe.kinds" in found["steps[0].expect[0].probe"]
    assert "add it to probe.tcp_clients" in found["steps[0].expect[1].measured"]
