"""`status` explains on a real lab: after a real fault, each site's reason names why it is
withdrawn, the fault is listed with its start, and a client answered by its declared
failover site is as expected (exit 0)."""

from __future__ import annotations

import json
import re

from lab.ops import faults

from .helpers import lab_cli, wait_for

SITE, CLIENT, FAILOVER = "ams", "c-eu", "nyc"


def status_json(lab) -> tuple[int, dict]:
    result = lab_cli("status", "--lab", lab.name, "--json", timeout=60)
    return result.returncode, json.loads(result.stdout)


def settled(lab, reason_start: str):
    """The status once ams's reason says `reason_start` and c-eu is on nyc in both
    families, else None."""
    code, report = status_json(lab)
    client = report["clients"][CLIENT]
    if report["sites"][SITE]["reason"].startswith(reason_start) \
            and client["site"] == client["site6"] == FAILOVER:
        return code, report
    return None


def test_failed_dns_is_the_reason_and_the_failover_client_is_as_expected(make_lab):
    lab = make_lab(prefix="sr").up()
    code, report = status_json(lab)
    assert code == 0 and report["sites"][SITE]["reason"] == "announced: healthy"
    assert report["clients"][CLIENT]["as_expected"] == "expected"
    assert report["faults"] == []

    lab_cli("fail", SITE, "dns", "--lab", lab.name, timeout=60, check=True)
    code, report = wait_for(lambda: settled(lab, "withdrawn: dns check down"), timeout=20,
                            interval=0.3, message="ams withdrawn for dns, c-eu on nyc")
    assert code == 0, report["problems"]
    site = report["sites"][SITE]
    assert re.fullmatch(r"withdrawn: dns check down since \d\d:\d\d:\d\d \(.+\)",
                        site["reason"]), site["reason"]
    assert [f["fault"] for f in site["faults"]] == ["dns"]
    assert site["faults"][0]["since"].endswith("Z")
    assert [(f["site"], f["fault"]) for f in report["faults"]] == [(SITE, "dns")]
    assert report["clients"][CLIENT]["as_expected"] == "failover"
    assert report["clients"]["c-us"]["as_expected"] == "expected"
    assert report["ok"] is True and report["problems"] == []

    human = lab_cli("status", "--lab", lab.name, timeout=60)
    assert human.returncode == 0
    assert "as expected (failover)" in human.stdout and "fault:" in human.stdout


def test_frozen_health_daemon_is_the_watchdog_reason(make_lab):
    lab = make_lab(prefix="sr").up()
    faults.inject(lab, SITE, "healthd-hang")
    try:
        code, report = wait_for(lambda: settled(lab, "withdrawn: watchdog"), timeout=20,
                                interval=0.3, message="ams withdrawn by the watchdog")
        site = report["sites"][SITE]
        assert re.fullmatch(r"withdrawn: watchdog — health daemon frozen, silent [\d.]+ s",
                            site["reason"]), site["reason"]
        assert site["healthd_process"] == "frozen"
        assert site["health"] == "unknown (healthd frozen)"
        assert report["clients"][CLIENT]["as_expected"] == "failover"
        assert code == 0, report["problems"]
        stale = wait_for(lambda: status_json(lab)[1]["sites"][SITE]["health_state_stale"],
                         timeout=10, interval=0.3, message="the frozen daemon's file stale")
        assert stale is True
    finally:
        healed = faults.heal(lab, SITE)
    assert [h["ready"] for h in healed] == [True], healed
