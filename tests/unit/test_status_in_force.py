"""`status`'s human output lists what is in force: each active fault (site, fault, since)
and each run-time impairment (link, its settings with the mechanism applying each, since),
from the same report `status --json` prints."""

from __future__ import annotations

import calendar
import time

import pytest

from lab.cli.lab import in_force_rows, print_status

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


def test_rows_name_each_fault_and_impairment_with_its_start() -> None:
    rows = in_force_rows(_report(faults=FAULTS, impairments=IMPAIRMENTS))
    assert rows == [
        ["fault", "ams", "dns-hang", "12:01:03"],
        ["impairment", "r-eu--r-us", "loss 5 % (nftables), rate 1mbit (tbf)", "12:02:03"],
        ["impairment", "r-eu--ams", "delay 20ms (netem)", "12:02:03"],
    ]


def test_nothing_in_force_prints_no_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert in_force_rows(_report(faults=[], impairments={})) == []
    print_status(_report(faults=[], impairments={}))
    assert "in force" not in capsys.readouterr().out


def test_the_status_table_shows_them_whole(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    print_status(_report(faults=FAULTS, impairments=IMPAIRMENTS))
    text = capsys.readouterr().out
    assert "in force" in text
    lines = text.splitlines()
    fault = next(line for line in lines if "dns-hang" in line)
    assert "ams" in fault and "12:01:03" in fault
    loss = next(line for line in lines if "r-eu--r-us" in line)
    assert "loss 5 % (nftables), rate 1mbit (tbf)" in loss and "12:02:03" in loss
