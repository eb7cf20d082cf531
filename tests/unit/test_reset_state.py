"""What `reset` waits for, judged on recorded `status --json` reports."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from lab.ops.reset import abnormal

DATA = Path(__file__).parent / "data" / "scenario"


def status(name: str) -> dict:
    return json.loads((DATA / f"status-{name}.json").read_text())


def test_a_normal_lab_is_normal() -> None:
    assert abnormal(status("normal")) == []
    assert abnormal(status("ecmp")) == []


def test_a_fault_a_withdrawal_and_a_failover_client_are_not() -> None:
    found = abnormal(status("ams-dns-killed"))
    assert "fault dns at ams is still recorded" in found
    assert any(line.startswith("site ams is not announced") for line in found)
    assert any(line.startswith("site ams's health is down") for line in found)
    assert "client c-eu is answered by nyc (v4) / nyc (v6), expected ams" in found


def test_a_drained_site_is_not_normal() -> None:
    report = copy.deepcopy(status("normal"))
    report["sites"]["nyc"]["drained"] = True
    assert abnormal(report) == ["site nyc is drained"]


def test_a_bfd_session_not_up_is_not_normal() -> None:
    """A BGP session back without its BFD session would leave the next silent link to
    the hold timer: reset waits for BFD too (at the site's router, and between routers
    with bgp.bfd.routers)."""
    report = copy.deepcopy(status("normal"))
    report["sites"]["ams"]["bfd"] = {"state": "Up", "responder": "running"}
    report["routers"]["r-eu"]["bfd"] = {"r-us": {"v4": "Up", "v6": "Up"}}
    assert abnormal(report) == []
    report["sites"]["ams"]["bfd"]["state"] = "Down"
    report["routers"]["r-eu"]["bfd"]["r-us"]["v6"] = "Init"
    assert abnormal(report) == ["site ams's BFD session is Down at its router",
                                "router r-eu's BFD session to r-us (v6) is Init"]
