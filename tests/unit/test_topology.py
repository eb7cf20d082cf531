"""Valid topologies validate; the report's JSON and the JSON Schema have their shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.model import Report, Topology, load_file, load_text
from lab.model.generate import generate_topology
from lab.model.schema import SCHEMA_ID, topology_schema

from ..prerequisites import need_module

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "topologies").glob("*.yaml"))
TEST_GOOD = sorted((REPO / "tests" / "topologies" / "good").glob("*.yaml"))
DEFAULT = REPO / "topologies" / "default.yaml"


def problems(report: Report) -> str:
    return "\n".join(f"{p.line}: {p}" for p in report.problems)


def test_shipped_topologies_found() -> None:
    assert DEFAULT in SHIPPED


@pytest.mark.parametrize("path", SHIPPED + TEST_GOOD, ids=lambda p: p.name)
def test_valid_topology_files(path: Path) -> None:
    report = load_file(path)
    assert report.ok, problems(report)
    assert report.problems == []
    assert isinstance(report.topology, Topology)
    assert report.source == str(path)


def test_default_topology_content() -> None:
    topo = load_file(DEFAULT).topology
    assert topo is not None
    assert topo.name == "default"
    assert len(topo.routers) >= 2 and len(topo.sites) >= 2
    for client in topo.clients.values():
        assert client.router in topo.routers
        assert set(client.expect_sites) <= set(topo.sites)
        assert set(client.failover_sites) <= set(topo.sites)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_client_names_an_expect_and_a_failover(path: Path) -> None:
    """The shipped topologies state their whole catchment: the integration tests read each
    client's `expect` and `failover` from the file."""
    data = yaml.safe_load(path.read_text())
    assert data["clients"], path.name
    for name, c in data["clients"].items():
        expect, failover = sites_of(c.get("expect")), sites_of(c.get("failover"))
        assert expect and expect <= set(data["sites"]), name
        assert failover <= set(data["sites"]) and not failover & expect, name
        # A failover site is named unless every site is already expected.
        assert failover or expect == set(data["sites"]), name


def sites_of(value: str | list[str] | None) -> set[str]:
    """`expect:`/`failover:` (one site or a list) as a set."""
    if value is None:
        return set()
    return {value} if isinstance(value, str) else set(value)


@pytest.mark.parametrize(("sites", "routers"), [(50, 5), (1, 1), (1, 2), (3, 3), (120, 4)])
def test_generated_topology_validates(sites: int, routers: int) -> None:
    data = generate_topology("gen", sites, routers)
    report = load_text(yaml.safe_dump(data, sort_keys=False), "<generated>")
    assert report.ok, problems(report)
    topo = report.topology
    assert topo is not None
    assert (len(topo.sites), len(topo.routers)) == (sites, routers)
    assert len(topo.clients) == min(sites, routers)
    expected_links = {1: 0, 2: 1}.get(routers, routers)  # a ring from 3 routers on
    assert len(topo.links) == expected_links


def test_a_generated_topology_has_an_issuer_on_its_first_router_unless_asked() -> None:
    with_issuer = load_text(yaml.safe_dump(generate_topology("gen", 10, 3)), "<generated>")
    assert with_issuer.ok and with_issuer.topology is not None
    assert with_issuer.topology.issuer is not None
    assert with_issuer.topology.issuer.router == "r1"
    without = load_text(yaml.safe_dump(generate_topology("gen", 10, 3, issuer=False)),
                        "<generated>")
    assert without.ok and without.topology is not None and without.topology.issuer is None


def test_generated_topology_is_deterministic() -> None:
    assert generate_topology("gen", 50, 5) == generate_topology("gen", 50, 5)


@pytest.mark.parametrize(("sites", "routers"), [(0, 5), (5, 0)])
def test_generate_rejects_empty(sites: int, routers: int) -> None:
    with pytest.raises(ValueError, match="at least one"):
        generate_topology("gen", sites, routers)


def _check_error_entries(errors: list[dict[str, Any]]) -> None:
    for err in errors:
        assert set(err) == {"path", "message", "line"}, err  # "line" is null when unknown
        assert isinstance(err["path"], str)
        assert isinstance(err["message"], str) and err["message"]
        if err["line"] is not None:
            assert isinstance(err["line"], int) and err["line"] >= 1


def test_to_json_shape_ok() -> None:
    data = load_file(DEFAULT).to_json()
    assert data["ok"] is True
    assert data["errors"] == []
    assert data["file"] == str(DEFAULT)
    assert json.loads(json.dumps(data)) == data


def test_to_json_shape_bad() -> None:
    text = DEFAULT.read_text().replace("r-us: {asn: 65020", "r-us: {asn: 65010", 1)
    report = load_text(text, "edited.yaml")
    data = report.to_json()
    assert set(data) == {"ok", "file", "errors"}
    assert data["ok"] is False
    assert data["file"] == "edited.yaml"
    assert len(data["errors"]) == len(report.problems) == 1
    _check_error_entries(data["errors"])
    err = data["errors"][0]
    assert err["path"] == "routers.r-us.asn"
    assert "65010" in err["message"]
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith("r-us:"))
    assert err["line"] == line
    assert json.loads(json.dumps(data)) == data


def test_to_json_problem_without_line() -> None:
    report = load_text("name: x\nsites: {}\n", "no-routers.yaml")
    data = report.to_json()
    assert data["ok"] is False
    _check_error_entries(data["errors"])
    assert {"path": "routers", "message": "is required but missing",
            "line": None} in data["errors"]
    assert data["errors"][-1]["line"] is None  # problems without a line come last


def test_to_json_always_has_line() -> None:
    report = load_text("routers: {r1: {asn: 1, color: red}}\nsites: {}\n", "two.yaml")
    errors = report.to_json()["errors"]
    assert [set(e) for e in errors] == [{"path", "message", "line"}] * 3
    assert [(e["path"], e["line"]) for e in errors] == [
        ("routers.r1.color", 1), ("sites", 2), ("name", None)]


def test_problems_sorted_by_line_stably_none_last() -> None:
    text = ("name: BAD\nrouters:\n  r1: {asn: 65001}\n  r2: {asn: 65001}\n"
            "sites:\n  s2: {router: r2, asn: 65100}\n  s1: {router: r1, asn: 65100}\n"
            "  s3: {router: r9, asn: 65100}\n")
    report = load_text(text)  # the checks find: name, s3's router, links, r2's AS
    assert [(p.line, p.path) for p in report.problems] == [
        (1, "name"), (4, "routers.r2.asn"), (8, "sites.s3.router"), (None, "links")]
    # Equal lines keep the order in which the checks found them.
    report = load_text("name: x\nrouters: {r1: {asn: 0}, r2: {asn: 0}}\nsites: {}\n")
    assert [p.path for p in report.problems if p.line == 2] == [
        "routers.r1", "routers.r2", "routers.r1.asn", "routers.r2.asn"]


def test_semantic_checks_do_not_wait_for_a_valid_structure() -> None:
    """One pass: a structural problem and the semantic ones are reported together."""
    text = ("name: x\nrouters: {r1: {asn: 1%s}}\n"
            "sites: {s1: {router: r1, asn: 2}, s2: {router: r9, asn: 2}}\n")
    structural = load_text(text % ", x: 1")
    assert [p.path for p in structural.problems] == ["routers.r1.x", "sites.s2.router"]
    semantic = load_text(text % "")
    assert [p.path for p in semantic.problems] == ["sites.s2.router"]


@pytest.mark.parametrize("asn", ["yes", "'65001'", "65001.0", "-1", "4294967296"])
def test_asn_is_a_strict_32_bit_integer(asn: str) -> None:
    report = load_text(f"name: x\nrouters: {{r1: {{asn: {asn}}}}}\n"
                       "sites: {s1: {router: r1, asn: 65100}}\n")
    assert [p.path for p in report.problems] == ["routers.r1.asn"]


@pytest.mark.parametrize(("rate", "ok"), [("10mbit", True), ("512kbit", True), ("1gbit", True),
                                          ("1.5mbit", False), ("10 mbit", False),
                                          ("10Mbit", False), ("0bit", False), ("10", False)])
def test_rate_is_what_tc_parses(rate: str, ok: bool) -> None:
    report = load_text("name: x\nrouters: {r1: {asn: 1}, r2: {asn: 2}}\n"
                       "sites: {s1: {router: r1, asn: 3}}\n"
                       f"links: [{{endpoints: [r1, r2], impair: {{rate: '{rate}'}}}}]\n")
    assert report.ok is ok, report.problems


def test_yaml_error_never_raises() -> None:
    report = load_text("name: [unclosed\n", "broken.yaml")
    assert report.ok is False
    assert report.topology is None
    assert report.problems[0].message.startswith("YAML syntax error")
    assert report.problems[0].path == ""


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    report = load_file(tmp_path / "nope.yaml")
    assert report.ok is False
    assert len(report.problems) == 1
    assert "does not exist" in report.problems[0].message


def test_schema_shape() -> None:
    schema = topology_schema()
    assert isinstance(schema, dict)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["$id"] == SCHEMA_ID
    assert {"routers", "sites", "clients", "links"} <= set(schema["properties"])
    assert {"name", "routers", "sites"} <= set(schema["required"])
    assert json.loads(json.dumps(schema)) == schema


def test_schema_knows_every_key_of_default() -> None:
    schema = topology_schema()
    data = yaml.safe_load(DEFAULT.read_text())
    assert set(data) <= set(schema["properties"])
    assert schema.get("additionalProperties") is False


def test_schema_validates_default() -> None:
    jsonschema = need_module("jsonschema")
    data = yaml.safe_load(DEFAULT.read_text())
    jsonschema.validate(data, topology_schema())
    bad = {**data, "region": "eu"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, topology_schema())
