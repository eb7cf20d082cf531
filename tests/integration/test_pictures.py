"""Pictures of a real lab: `graph --lab` draws a site withdrawn by a real fault differently
from an announced one, and moves the client's arrow to the site that answers it now."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.draw import palette

from .helpers import DEFAULT, LabHandle, lab_cli, unique_name, wait_for

SITE, CLIENT, FAILOVER = "ams", "c-eu", "nyc"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def lab() -> Iterator[LabHandle]:
    handle = LabHandle(unique_name("pic"), DEFAULT)
    try:
        handle.up()
        yield handle
    finally:
        handle.down()


def graph_json(lab: LabHandle) -> dict:
    result = lab_cli("graph", "--lab", lab.name, "--json", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["graph"]


def site_fills(svg: Path) -> dict[str, str]:
    """Each site node's fill colour in Graphviz's SVG (its <title> is the node's name)."""
    fills = {}
    for group in ET.parse(svg).getroot().iter(f"{SVG}g"):
        if group.get("class") != "node":
            continue
        title = group.find(f"{SVG}title")
        polygon = group.find(f"{SVG}polygon")
        if title is not None and polygon is not None:
            fills[title.text or ""] = (polygon.get("fill") or "").upper()
    return fills


def test_graph_colours_a_withdrawn_site_differently(lab: LabHandle, tmp_path: Path) -> None:
    before = tmp_path / "before.svg"
    result = lab_cli("graph", "--lab", lab.name, "-o", str(before), timeout=60)
    assert result.returncode == 0, result.stderr
    fills = site_fills(before)
    announced = palette.STATE_STYLE["announced"]["fill"]
    assert fills[SITE] == fills[FAILOVER] == announced

    lab_cli("fail", SITE, "dns", "--lab", lab.name, timeout=60, check=True)
    try:
        def moved() -> dict | None:
            g = graph_json(lab)
            ams = next(n for n in g["nodes"] if n["name"] == SITE)
            answers = {e["b"] for e in g["edges"] if e["kind"] == "answer" and e["a"] == CLIENT}
            return g if ams["state"] == "faulted" and "withdrawn" in ams["detail"] \
                and answers == {FAILOVER} else None

        wait_for(moved, timeout=20, interval=0.3, message="ams withdrawn, c-eu on nyc")
        after = tmp_path / "after.svg"
        result = lab_cli("graph", "--lab", lab.name, "-o", str(after), timeout=60)
        assert result.returncode == 0, result.stderr
        fills = site_fills(after)
        assert fills[SITE] == palette.STATE_STYLE["faulted"]["fill"] != announced
        assert fills[FAILOVER] == announced
        mermaid = lab_cli("graph", "--lab", lab.name, "--format", "mermaid", timeout=60)
        assert "n_ams{{\"ams<br/>AS65100<br/>faulted: dns; withdrawn\"}}:::faulted" \
            in mermaid.stdout
    finally:
        lab_cli("heal", SITE, "--lab", lab.name, timeout=60)
