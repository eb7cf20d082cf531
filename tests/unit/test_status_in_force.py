"""`status`'s human output lists what is in force: each active fault (site, fault, since)
and each run-time impairment (link, its settings with the mechanism applying each, since),
from the same report `status --json` prints."""

from __future__ import annotations

import calendar
import time

import pytest

from lab.cli.lab import in_force_lines, print_status

T = calendar.timegm(time.strptime("2026-12-01 12:02:03", "%Y-%m-%d %H:%M:%S"))


def _report(**extra) -> dict:
    return {"lab": "x", "phase": "up", "anycast": ["203.0.113.53/32"], "sites": {},
            "routers": {}, "clients": {}, "ok": True, "problems": [], "notes": [], **extra}


FAULTS = [{"site": "ams", "fault": "dns-hang", "since": "2026-12-01T12:01:03.250Z"}]
IMPAIRMENTS = {
    "r-eu--r-us": {"link": "r-eu--r-us", "loss": 5.0, "rate": "1mbit", "delay": None,
                   "mechanisms": {"loss": "nftables", "rate": "tbf"},
                   "ends": ["acl.x.r-eu:r-us", "acl.x.r-us:r-eu"], "t": T},
    "r-eu--ams": {"link": "r-eu--ams", "loss": None, "rate": None, "delay": "20ms",
                  "mechanisms": {"delay": "netem"}, "ends": [], "t": T},
}


def test_a_line_names_each_fault_and_impairment_with_its_start_and_end() -> None:
    assert in_force_lines(_report(faults=FAULTS, impairments=IMPAIRMENTS)) == [
        "fault: dns-hang at ams since 12:01:03, until `anycast-lab heal ams`",
        "impairment: r-eu--r-us loss 5 % (nftables), rate 1mbit (tbf) since 12:02:03, "
        "until `anycast-lab impair r-eu--r-us --clear`",
        "impairment: r-eu--ams delay 20ms (netem) since 12:02:03, "
        "until `anycast-lab impair r-eu--ams --clear`",
    ]


def test_nothing_in_force_prints_nothing_of_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert in_force_lines(_report(faults=[], impairments={})) == []
    print_status(_report(faults=[], impairments={}))
    text = capsys.readouterr().out
    assert "fault:" not in text and "impairment:" not in text


def test_status_prints_each_line_whole(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(tmp_path / "run"))  # no other lab here
    print_status(_report(faults=FAULTS, impairments=IMPAIRMENTS))
    lines = capsys.readouterr().out.splitlines()
    for want in in_force_lines(_report(faults=FAULTS, impairments=IMPAIRMENTS)):
        assert want in lines
