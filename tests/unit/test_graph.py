"""`graph`: the pure graph model, its DOT and Mermaid text for every shipped topology, and
Graphviz's SVG and PNG read back (valid files with the expected node and edge counts).
The live pictures use two `status --json` reports taken from a real default lab (all up;
ams's DNS killed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lab.draw import graph as gm
from lab.draw import palette, render, text
from lab.model import load_file
from lab.model.errors import BadInput
from lab.model.plan import AddressPlan, build_plan
from lab.model.topology import Topology

from .helpers import ROOT

TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))
DATA = Path(__file__).parent / "data"
SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot is not installed (make install)")


def _load(path: Path) -> tuple[Topology, AddressPlan]:
    report = load_file(path)
    assert report.topology is not None, report.problems
    return report.topology, build_plan(report.topology)


def _status(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def _default() -> tuple[Topology, AddressPlan]:
    return _load(ROOT / "topologies" / "default.yaml")


def test_every_shipped_topology_is_found() -> None:
    assert {p.stem for p in TOPOLOGIES} >= {"default", "two-sites", "twelve-sites",
                                             "ecmp-ring"}


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_model_has_every_node_and_link(path: Path) -> None:
    topo, plan = _load(path)
    g = gm.build(topo, plan)
    issuers = 1 if topo.issuer is not None else 0
    assert len(g.nodes) == len(topo.routers) + len(topo.sites) + len(topo.clients) + issuers
    assert g.count("link") == len(plan.links) and g.count("answer") == 0
    assert {n.role for n in g.nodes} == {"router", "site", "client"} | (
        {"issuer"} if issuers else set())
    assert all(n.state is None for n in g.nodes)  # no lab: no state


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_dot_text_declares_every_node_and_edge(path: Path) -> None:
    topo, plan = _load(path)
    dot = text.to_dot(gm.build(topo, plan))
    declared = re.findall(r'^\s+"([a-z0-9-]+)" \[label=', dot, re.M)
    assert sorted(declared) == sorted(plan.nodes)
    edges = re.findall(r'^\s+"([a-z0-9-]+)" -> "([a-z0-9-]+)"', dot, re.M)
    assert sorted(frozenset(e) for e in edges) == sorted(frozenset((ln.a, ln.b))
                                                         for ln in plan.links)
    for name, router in topo.routers.items():
        assert re.search(rf'"{name}" \[label="{name}\\nAS{router.asn}", shape="box"', dot)


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_mermaid_declares_every_node_and_link(path: Path) -> None:
    topo, plan = _load(path)
    mmd = text.to_mermaid(gm.build(topo, plan))
    assert mmd.startswith("flowchart TB\n")
    nodes = re.findall(r"^  (n_\w+)(?:\[\"|\{\{\"|\(\[\"|\[\(\")", mmd, re.M)
    assert len(nodes) == len(plan.nodes) == len(set(nodes))
    links = re.findall(r"^  n_\w+ (?:---|==|-\.)", mmd, re.M)
    assert len(links) == len(plan.links)
    assert mmd.count("{{\"") == len(topo.sites)  # sites are hexagons


def _svg_counts(data: bytes) -> tuple[int, int]:
    root = ET.fromstring(data)
    groups = [g.get("class") for g in root.iter(f"{SVG}g")]
    return groups.count("node"), groups.count("edge")


@needs_dot
@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_svg_reads_back_with_every_node_and_edge(path: Path) -> None:
    topo, plan = _load(path)
    data = render.render(text.to_dot(gm.build(topo, plan)), "svg")
    assert _svg_counts(data) == (len(plan.nodes), len(plan.links))


@needs_dot
@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_png_reads_back_as_a_picture(path: Path) -> None:
    topo, plan = _load(path)
    data = render.render(text.to_dot(gm.build(topo, plan)), "png")
    image = Image.open(BytesIO(data))
    image.verify()
    assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 100


def test_live_state_all_up() -> None:
    topo, plan = _default()
    g = gm.build(topo, plan, _status("status-default-up.json"))
    assert {n.name: n.state for n in g.nodes if n.role == "site"} == {
        "ams": "announced", "nyc": "announced", "sin": "announced"}
    answers = {(e.a, e.b): e.label for e in g.edges if e.kind == "answer"}
    assert answers == {("c-eu", "ams"): "v4 v6", ("c-us", "nyc"): "v4 v6",
                       ("c-ap", "sin"): "v4 v6"}
    best = {(e.a, e.b): (e.best, e.towards) for e in g.edges if e.best}
    assert best == {("r-eu", "ams"): (("ipv4", "ipv6"), "ams"),
                    ("r-us", "nyc"): (("ipv4", "ipv6"), "nyc"),
                    ("r-ap", "sin"): (("ipv4", "ipv6"), "sin")}


def test_live_state_a_faulted_site_looks_different() -> None:
    topo, plan = _default()
    up = text.to_dot(gm.build(topo, plan, _status("status-default-up.json")))
    failed_model = gm.build(topo, plan, _status("status-default-ams-dns.json"))
    failed = text.to_dot(failed_model)
    ams = next(n for n in failed_model.nodes if n.name == "ams")
    assert (ams.state, ams.detail) == ("faulted", "dns; withdrawn")

    def attrs(dot: str, node: str) -> str:
        return re.search(rf'^\s+"{node}" \[(.*)\];$', dot, re.M).group(1)  # type: ignore[union-attr]

    assert palette.STATE_STYLE["announced"]["fill"] in attrs(up, "ams")
    faulted = attrs(failed, "ams")
    assert palette.STATE_STYLE["faulted"]["fill"] in faulted and 'peripheries="2"' in faulted
    assert "faulted: dns; withdrawn" in faulted  # a word, not only a colour
    assert attrs(failed, "nyc") == attrs(up, "nyc")
    # c-eu is answered by nyc now, and r-eu's best path leads to r-us.
    assert re.search(r'"c-eu" -> "nyc" \[label="v4 v6", style="dashed"', failed)
    assert re.search(r'"r-eu" -> "r-us" \[dir="forward"[^\]]*penwidth="3"', failed)
    assert not re.search(r'"r-eu" -> "ams" \[dir="forward"', failed)


def test_site_states_from_status() -> None:
    assert gm.site_state({"announced": True, "faults": []}) == ("announced", "")
    assert gm.site_state({"announced": False, "health": "down"}) == ("withdrawn",
                                                                     "health down")
    assert gm.site_state({"announced": True, "drained": True}) == ("drained", "announced")
    assert gm.site_state({"announced": True, "faults": [{"fault": "dns-hang"}]}) == (
        "faulted", "dns-hang; announced")


def test_ecmp_shares_on_the_answer_arrows() -> None:
    topo, plan = _load(ROOT / "topologies" / "ecmp-ring.yaml")
    client = next(iter(topo.clients))
    sites = list(topo.sites)[:2]
    status = {"sites": {}, "routers": {}, "clients": {client: {
        "site": sites[0], "site6": sites[1],
        "sites": {sites[0]: 12, sites[1]: 4}, "sites6": {sites[1]: 16}}}}
    edges = gm.answer_edges(status)
    assert [(e.b, e.families) for e in edges] == [
        (sites[0], {"ipv4": 0.75}), (sites[1], {"ipv4": 0.25, "ipv6": 1.0})]
    assert edges[1].label == "v4 25% v6 100%"
    mmd = text.to_mermaid(gm.build(topo, plan, status))
    assert f"-. v4 75% .-> n_{sites[0].replace('-', '_')}" in mmd


def test_impairments_label_their_link() -> None:
    topo, plan = _default()
    link = next(ln for ln in plan.links if ln.kind == "core")
    status = {"sites": {}, "routers": {}, "clients": {},
              "impairments": {link.name: {"loss": 2.5, "rate": "10mbit", "delay": None}}}
    edge = next(e for e in gm.build(topo, plan, status).edges if (e.a, e.b) == (link.a, link.b))
    assert edge.label == "loss 2.5%, rate 10mbit (impair)"
    assert gm.impairment_text({"delay": "20ms", "jitter": "5ms"}) == "delay 20ms ±5ms"


@pytest.mark.parametrize(("fmt", "output", "want"), [
    (None, None, "dot"), (None, "x.svg", "svg"), (None, "x.mmd", "mermaid"),
    ("png", "x.png", "png"), ("mermaid", None, "mermaid")])
def test_format_from_option_or_suffix(fmt: str | None, output: str | None, want: str) -> None:
    assert render.format_for(fmt, Path(output) if output else None) == want


@pytest.mark.parametrize(("fmt", "output", "words"), [
    ("svg", None, "give a file"), ("png", "x.svg", "names a svg file"),
    (None, "x.txt", "cannot tell the format"), ("gif", None, "unknown --format")])
def test_bad_format_is_refused(fmt: str | None, output: str | None, words: str) -> None:
    with pytest.raises(BadInput, match=words):
        render.format_for(fmt, Path(output) if output else None)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_cli_prints_mermaid_and_writes_a_picture(tmp_path: Path) -> None:
    result = _cli("graph", "topologies/two-sites.yaml", "--format", "mermaid")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("flowchart TB\n") and "n_r_west" in result.stdout
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    out = tmp_path / "g.svg"
    result = _cli("graph", "topologies/two-sites.yaml", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["format"] == "svg" and report["output"] == str(out)
    assert len(report["graph"]["nodes"]) == 6 and report["graph"]["live"] is False
    assert _svg_counts(out.read_bytes()) == (6, 5)


def test_cli_refuses_a_picture_to_stdout_and_a_missing_directory(tmp_path: Path) -> None:
    result = _cli("graph", "--format", "png")
    assert result.returncode == 2 and "give a file to write with -o FILE" in result.stderr
    result = _cli("graph", "-o", str(tmp_path / "no" / "g.svg"), "--json")
    assert result.returncode == 2
    assert "does not exist" in json.loads(result.stdout)["error"]["message"]
