"""`status` says a site is announced only when its router holds the site's route; the
speaker's own word is shown beside it, and a disagreement is reported."""

from __future__ import annotations

import json

from lab.observe import status
from lab.ops import faults

from .helpers import lab_cli, wait_for

SITE, ROUTER = "ams", "r-eu"


def site_report(lab) -> dict:
    return status.collect(lab, fabric=False)["sites"][SITE]


def not_announced(lab) -> dict | None:
    report = site_report(lab)
    return None if report["announced"] else report


def test_frozen_speaker_is_not_announced_once_the_router_drops_its_route(make_lab):
    """A frozen ExaBGP keeps its API process (the speaker's word: announced) while the
    router's hold timer drops the session and the route: status follows the router."""
    lab = make_lab().up()
    before = site_report(lab)
    assert before["announced"] is True and before["speaker_announced"] is True
    assert before["announced_by_family"] == {"v4": True, "v6": True}

    faults.inject(lab, SITE, "speaker-hang")
    try:
        seen = wait_for(lambda: not_announced(lab), timeout=10, interval=0.2,
                        message="the router to drop ams's route")
        assert seen["speaker"] == "announced" and seen["speaker_announced"] is True
        assert seen["announced_by_family"] == {"v4": False, "v6": False}

        result = lab_cli("status", "--lab", lab.name, "--json", timeout=60)
        assert result.returncode == 1, result.stderr
        report = json.loads(result.stdout)
        assert report["sites"][SITE]["announced"] is False
        assert report["sites"][SITE]["speaker_announced"] is True
        note = f"{SITE}: speaker says announced, router {ROUTER} holds no route from {SITE}"
        assert note in report["notes"]
        human = lab_cli("status", "--lab", lab.name, timeout=60)
        assert note in human.stdout and "(speaker:" in human.stdout  # beside "no" in the table
    finally:
        healed = faults.heal(lab, SITE)
    assert [h["ready"] for h in healed] == [True], healed
    assert "Established" in healed[0]["detail"]
    wait_for(lambda: site_report(lab)["announced"], timeout=15, interval=0.2,
             message="ams announced again after heal")
    assert site_report(lab)["speaker_announced"] is True
