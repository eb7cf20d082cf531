"""drain/undrain write and remove the site's drain file, once; an unknown site is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.host.journal import Journal
from lab.host.labs import Lab
from lab.model import load_file
from lab.model.errors import BadInput
from lab.model.plan import build_plan
from lab.ops import drain

DEFAULT = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    report = load_file(DEFAULT)
    assert report.topology is not None
    (tmp_path / "nodes" / "ams").mkdir(parents=True)
    return Lab(Journal("unit", tmp_path), report.topology, build_plan(report.topology))


def test_drain_then_undrain_once_each(lab: Lab) -> None:
    path = drain.drain_file(lab.journal.dir, "ams")
    assert drain.drain(lab, "ams") and path.read_text().startswith("drained at ")
    assert not drain.drain(lab, "ams")
    assert drain.undrain(lab, "ams") and not path.exists()
    assert not drain.undrain(lab, "ams")


@pytest.mark.parametrize("verb", [drain.drain, drain.undrain])
def test_an_unknown_site_is_refused(lab: Lab, verb) -> None:
    with pytest.raises(BadInput, match=r"unknown site 'r-eu' \(sites: ams, nyc, sin\)"):
        verb(lab, "r-eu")
