"""`impair`'s input: the topology's rules for loss, rate and delay, which link a name means,
and which mechanism carries each part with and without netem."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.model.errors import BadInput, EnvironmentProblem
from lab.model.plan import AddressPlan
from lab.model.topology import Impairment
from lab.ops.impair import ends, find_link, mechanisms, request

DEFAULT = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"


@pytest.fixture(scope="module")
def plan(default_plan: AddressPlan) -> AddressPlan:
    return default_plan


def test_a_valid_request_is_the_topologys_impairment() -> None:
    assert request(30, None, None, False) == Impairment(loss=30)
    assert request(None, "10mbit", "20ms", False) == Impairment(rate="10mbit", delay="20ms")
    assert request(None, None, None, True) is None


@pytest.mark.parametrize(("loss", "rate", "delay", "words"), [
    (101, None, None, "--loss 101: Input should be less than or equal to 100"),
    (-1, None, None, "--loss -1: Input should be greater than or equal to 0"),
    (float("nan"), None, None, "--loss nan"),
    (None, "10Mbit", None, "not a rate like"),
    (None, "0kbit", None, "must be above zero"),
    (None, "999bit", None, "below 1kbit"),
    (None, None, "20", "not a duration"),
    (None, None, "2m", "not a duration"),
    (None, None, "61s", "longer than 60 s"),
    (0, None, None, "impairs nothing"),
    (None, None, None, "say what to impair"),
])
def test_bad_values_are_refused_with_the_topologys_sentence(loss, rate, delay, words) -> None:
    with pytest.raises(BadInput) as err:
        request(loss, rate, delay, False)
    assert words in err.value.message


def test_clear_takes_no_values() -> None:
    with pytest.raises(BadInput, match="--clear takes no --loss, --rate"):
        request(10, "1mbit", None, True)


def test_links_by_either_name_order_and_sites_by_name(plan: AddressPlan) -> None:
    assert find_link(plan, "r-eu--r-us").name == "r-eu--r-us"
    assert find_link(plan, "r-us--r-eu").name == "r-eu--r-us"
    site = find_link(plan, "ams")
    assert (site.kind, site.name) == ("site", "r-eu--ams")
    assert find_link(plan, "r-eu--ams") == site
    assert [(e.netns, e.ifname) for e in ends(plan, site)] == [
        ("acl.default.r-eu", "ams"), ("acl.default.ams", "r-eu")]


def test_a_client_or_the_issuer_by_name_is_its_access_link(plan: AddressPlan) -> None:
    client = find_link(plan, "c-eu")
    assert (client.kind, client.name) == ("client", "r-eu--c-eu")
    assert find_link(plan, "c-eu--r-eu") == client
    issuer = plan.by_role("issuer")[0].name
    assert find_link(plan, issuer).kind == "issuer"


@pytest.mark.parametrize("name", ["nowhere", "r-eu", "r-eu--c-us", "r-eu--r-eu",
                                  "r-eu--", "--"])
def test_unknown_links_name_the_choices(plan: AddressPlan, name: str) -> None:
    with pytest.raises(BadInput) as err:
        find_link(plan, name)
    assert f"unknown link or node '{name}'" in err.value.message
    assert "r-eu--r-us" in err.value.message and "ams" in err.value.message


def test_mechanisms_with_and_without_netem() -> None:
    both = Impairment(loss=5, rate="1mbit")
    assert mechanisms(both, netem=False) == {"loss": "nftables", "rate": "tbf"}
    assert mechanisms(both, netem=True) == {"loss": "netem", "rate": "netem"}
    assert mechanisms(Impairment(delay="5ms"), netem=True) == {"delay": "netem"}
    with pytest.raises(EnvironmentProblem, match="--delay needs the kernel's netem"):
        mechanisms(Impairment(delay="5ms", loss=1), netem=False)
