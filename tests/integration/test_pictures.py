"""Pictures of a real lab: `graph --lab` draws a site withdrawn by a real fault differently
from an announced one, and moves the client's arrow to the site that answers it now;
`watch --json` streams lines that show a client moving during a real fault, exits 0 at
its duration and leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.draw import palette
from lab.host import labs
from lab.ops import faults

from .helpers import DEFAULT, ROOT, LabHandle, lab_cli, unique_name, wait_for

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


def children_of(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_watch_streams_a_client_moving_and_exits_clean(lab: LabHandle) -> None:
    opened = labs.open_lab(lab.name)
    proc = subprocess.Popen([sys.executable, "-m", "lab", "watch", "--lab", lab.name,
                             "--json", "--duration", "3", "--rate", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    lines: list[dict] = []
    children: set[int] = set()
    injected = False
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(json.loads(raw))
            children |= children_of(proc.pid)
            if not injected and lines[-1]["clients"][CLIENT]["ipv4"]["site"] == SITE:
                faults.inject(opened, SITE, "dns")
                injected = True
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if injected:
            faults.heal(opened, SITE)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert injected, "c-eu was never seen on ams"
    sites = [line["clients"][CLIENT]["ipv4"]["site"] for line in lines]
    first_nyc = sites.index(FAILOVER)  # ValueError: c-eu never seen on nyc
    assert SITE in sites[:first_nyc]
    assert lines[-1]["clients"]["c-us"]["ipv4"]["site"] == "nyc"
    events = [e for line in lines for e in line["events"]]
    assert any(e["kind"] == "moved" and e["where"] == f"{CLIENT} ipv4"
               and e["text"].startswith(f"{CLIENT} ipv4: {SITE} -> {FAILOVER}")
               for e in events), events
    assert any(line["sites"].get(SITE, {}).get("faults") == ["dns"] for line in lines)
    # Nothing left: watch starts no process of its own, and it is gone.
    assert not alive(proc.pid)
    assert not [pid for pid in children if alive(pid)], children


def test_failover_records_the_events_the_timeline_marks(lab: LabHandle, tmp_path: Path) -> None:
    png = tmp_path / "timeline.png"
    result = lab_cli("measure", "failover", "--lab", lab.name, "--site", SITE, "--fault",
                     "dns", "--trials", "1", "--rate", "100", "--family", "both", "--plot",
                     str(png), "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["families"] == ["ipv4", "ipv6"]
    trial = report["trials"][0]
    moved = {(c["client"], c["family"]): c["site_after"] for c in trial["clients"]
             if c["site_after"] != c["site_before"]}
    assert moved == {(CLIENT, "ipv4"): FAILOVER, (CLIENT, "ipv6"): FAILOVER}
    first = {}
    for e in trial["events"]:
        first.setdefault((e["kind"], e["where"], e["family"]), e["t_ms"])
    down, withdraw = first[("health-down", SITE, "")], first[("withdraw", SITE, "")]
    route4, route6 = first[("route-change", "r-eu", "ipv4")], first[("route-change", "r-eu",
                                                                      "ipv6")]
    assert 0 < down <= withdraw <= min(route4, route6) < trial["heal_after_ms"]
    assert first[("announce", SITE, "")] > trial["heal_after_ms"]
    from PIL import Image

    with Image.open(png) as image:
        rows = image.info["Description"].removeprefix("rows: ").split(",")
    assert rows == ["c-eu", "c-eu v6", "c-us", "c-us v6", "c-ap", "c-ap v6"]
