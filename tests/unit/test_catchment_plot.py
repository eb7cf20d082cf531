"""`catchment --plot`: the clients x sites matrix per family, read from the figure's
artists: the answering site's cell filled (its share under ECMP), the expected site
bordered, an unanswered client noted."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from lab.draw import catchment

REPORT = {"lab": "t", "anycast": ["203.0.113.53/32", "2001:db8:53::53/128"], "clients": {
    "c-eu": {"expected": "ams", "ipv4": {"site": "nyc", "rtt_ms": 3.0},
             "ipv6": {"site": None, "rtt_ms": None}},
    "c-us": {"expected": ["nyc", "sin"], "ipv4": {"site": "nyc", "rtt_ms": 1.0,
                                                   "sites": {"nyc": 12, "sin": 4}},
             "ipv6": {"site": "nyc", "rtt_ms": 1.0}}}}
SITES = ["ams", "nyc", "sin"]


def _by_gid(fig) -> dict:
    return {a.get_gid(): a for a in fig.findobj() if a.get_gid()}


def test_cells_show_answers_shares_and_expectations() -> None:
    found = _by_gid(catchment.figure(REPORT, SITES))
    cells = {g for g in found if g.startswith("cell:")}
    assert len(cells) == 2 * 2 * 3  # families x clients x sites
    assert found["cell:ipv4:c-eu:nyc"].get_alpha() == 1.0
    assert found["cell:ipv4:c-eu:ams"].get_facecolor()[:3] == (1.0, 1.0, 1.0)
    assert found["cell:ipv4:c-us:nyc"].get_alpha() == 0.75
    assert found["cell:ipv4:c-us:sin"].get_alpha() == 0.25
    assert {g for g in found if g.startswith("expected:ipv4")} == {
        "expected:ipv4:c-eu:ams", "expected:ipv4:c-us:nyc", "expected:ipv4:c-us:sin"}
    assert "unanswered:ipv6:c-eu" in found and "unanswered:ipv4:c-eu" not in found


def test_shares() -> None:
    assert catchment.shares({"site": "a"}) == {"a": 1.0}
    assert catchment.shares({"site": "a", "sites": {"a": 3, "none": 1}}) == {"a": 0.75}
    assert catchment.shares({"site": None}) == {}


def test_draw_writes_a_png(tmp_path: Path) -> None:
    path = catchment.draw(REPORT, SITES, tmp_path / "c.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.info["Description"] == "clients: c-eu,c-us"
