"""Identity in `status` (lab.observe.identity): a site's /identity document and the
issuer's state summarised into the `status --json` entry, and their words in the table."""

from __future__ import annotations

from typing import Any

import pytest

from lab.cli.lab import print_status
from lab.observe.identity import cell, issuer_entry, issuer_line, summarise

KID, ROGUE = "rBz1aB2lGD2Iu4ICf6v_pj2AnieG7FuxqXi_LJTzBVY", "BTEZArMp90Q7sqMx"
ISSUER = {"reachable": True, "version": 5, "kids": [KID]}
KEYS = {"version", "issuer_version", "current", "sync_age_s", "ever_synced", "stale",
        "keys_match", "keys_source", "check", "sync_error", "error"}


def doc(version: int = 5, age: float = 0.3, kids: tuple[str, ...] = (KID,),
        source: str = "issuer", error: str | None = None) -> dict[str, Any]:
    """A site's /identity document, as the introspection service's replica writes it."""
    return {"replicated": True, "issuer": "100.64.0.13:443",
            "revocation": {"version": version, "synced_at": 1.0, "age_s": age,
                           "ever_synced": True},
            "kids": list(kids), "issuer_kids": [KID], "keys_source": source,
            "sync": {"interval_s": 0.5, "attempts": 9, "failures": 0, "updates": 1,
                     "last_error": error}}


def test_a_healthy_site_is_current_fresh_and_holds_the_issuers_keys() -> None:
    entry = summarise(doc(), None, ISSUER, "up", 2.0)
    assert set(entry) == KEYS
    assert entry["version"] == entry["issuer_version"] == 5
    assert entry["current"] is True and entry["stale"] is False
    assert entry["keys_match"] is True and entry["check"] == "up"
    assert cell(entry) == ("v5 0.3 s keys ok", False)


def test_a_stale_site_behind_the_issuer_is_shown_in_red() -> None:
    entry = summarise(doc(version=4, age=11.04, error="timed out"), None, ISSUER, "down", 2.0)
    assert entry["current"] is False and entry["stale"] is True
    assert entry["sync_age_s"] == 11.04 and entry["sync_error"] == "timed out"
    assert cell(entry) == ("v4 of v5 11.0 s stale keys ok", True)


def test_keys_are_compared_with_the_issuers_own_word() -> None:
    # The site received the issuer's kid, but serves another (the wrong-key fault).
    entry = summarise(doc(kids=(ROGUE,), source="override"), None, ISSUER, "down", 2.0)
    assert entry["keys_match"] is False and entry["keys_source"] == "override"
    assert cell(entry) == ("v5 0.3 s keys differ (override)", True)
    # The issuer changed its key, and the site has not received it yet.
    rotated = {**ISSUER, "kids": ["new-kid"]}
    assert summarise(doc(), None, rotated, "up", 2.0)["keys_match"] is False


def test_with_the_issuer_down_the_sites_own_view_is_used() -> None:
    down = {"reachable": False, "error": "[Errno 111] Connection refused"}
    entry = summarise(doc(age=3.5), None, down, "down", 2.0)
    assert entry["issuer_version"] is None and entry["current"] is None
    assert entry["keys_match"] is True and entry["stale"] is True
    assert cell(entry) == ("v5 3.5 s stale keys ok", True)


def test_a_site_that_does_not_answer_or_whose_tls_fails() -> None:
    silent = summarise(None, "timed out", ISSUER, None, 2.0)
    assert set(silent) == KEYS and silent["version"] is None and silent["error"] == "timed out"
    assert cell(silent) == ("no answer", True)
    expired = summarise(doc(), "TLS: certificate has expired", ISSUER, "down", 2.0)
    assert expired["version"] == 5 and cell(expired) == ("v5 0.3 s keys ok TLS fails", True)


def test_a_service_that_does_not_replicate_has_no_age_or_keys() -> None:
    entry = summarise({"replicated": False, "revocation": {"version": 2}}, None, None,
                      None, 2.0)
    assert entry["version"] == 2 and entry["sync_age_s"] is None
    assert entry["keys_match"] is None and entry["current"] is None
    assert cell(None) == ("-", False)


@pytest.mark.parametrize(("process", "facts", "up", "words"), [
    ("running", ISSUER, True, "issuer (on r-us): up, revocations v5, 1 key (rBz1aB2l)"),
    ("gone", {"reachable": False, "error": "refused"}, False,
     "issuer (on r-us): down, process gone"),
    ("frozen", {"reachable": False, "error": "timed out"}, False,
     "issuer (on r-us): down, process frozen"),
    ("running", {"reachable": False, "error": "timed out"}, False,
     "issuer (on r-us): down, running but not answering (timed out)"),
])
def test_the_issuer_is_up_when_it_runs_and_answers(process: str, facts: dict[str, Any],
                                                   up: bool, words: str) -> None:
    entry = issuer_entry(facts, "issuer", "r-us", process)
    assert entry["up"] is up
    assert entry["version"] == (5 if up else None)
    assert issuer_line(entry) == (words, not up)


def _report(identity: dict[str, Any] | None, issuer: dict[str, Any] | None) -> dict:
    site = {"router": "r-eu", "session": "Established", "announced": True,
            "announced_by_family": {"v4": True, "v6": True}, "health": "up",
            "checks": {"identity": {"state": "up"}}, "identity": identity}
    return {"lab": "x", "phase": "up", "anycast": ["203.0.113.53/32"],
            "sites": {"ams": site}, "routers": {}, "clients": {}, "issuer": issuer,
            "ok": True, "problems": [], "notes": [], "faults": [], "impairments": {}}


def test_status_shows_an_identity_column_and_the_issuer(
        monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(tmp_path / "run"))
    entry = summarise(doc(version=4, age=9.0), None, ISSUER, "down", 2.0)
    print_status(_report(entry, issuer_entry(ISSUER, "issuer", "r-us", "running")))
    text = capsys.readouterr().out
    assert "identity" in text and "v4 of v5 9.0 s stale keys ok" in text
    assert "issuer: issuer (on r-us): up, revocations v5, 1 key (rBz1aB2l)" in text


def test_a_lab_without_an_issuer_has_no_identity_column(
        monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(tmp_path / "run"))
    print_status(_report(None, None))
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if "BGP session" in line)
    assert "identity" not in header and "issuer:" not in text
