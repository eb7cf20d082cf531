"""`status` shows identity on a real lab: on a healthy lab every site holds the issuer's
revocation version with a fresh sync and the issuer's keys, and the issuer is up; a site
cut off from the issuer (`stale`) shows its sync age growing and, once a revocation it
missed is made, a version behind the issuer's; a site serving the wrong keys shows them
as differing."""

from __future__ import annotations

import json
from typing import Any

from lab.host import labs
from lab.ops import faults

from .helpers import lab_cli, wait_for

SITES = ("ams", "nyc", "sin")
MAX_STALENESS_S = 2.0  # the default topology's identity.max_staleness_ms


def status(lab: labs.Lab) -> dict[str, Any]:
    result = lab_cli("status", "--lab", lab.name, "--json")
    return json.loads(result.stdout)


def identity(lab: labs.Lab, site: str) -> dict[str, Any]:
    return status(lab)["sites"][site]["identity"]


def test_a_healthy_lab_shows_one_version_fresh_syncs_and_the_issuers_keys(
        default_lab: labs.Lab) -> None:
    doc = status(default_lab)
    issuer = doc["issuer"]
    assert issuer["up"] is True and issuer["process"] == "running"
    assert isinstance(issuer["version"], int) and issuer["kids"]
    for site in SITES:
        entry = doc["sites"][site]["identity"]
        assert entry["version"] == issuer["version"], (site, entry)
        assert entry["current"] is True and entry["keys_match"] is True, (site, entry)
        assert entry["stale"] is False and entry["sync_age_s"] <= MAX_STALENESS_S, entry
        assert entry["check"] == "up" and entry["error"] is None, (site, entry)
    text = lab_cli("status", "--lab", default_lab.name).stdout
    header = next(line for line in text.splitlines() if "BGP session" in line)
    assert "identity" in header
    assert f"issuer (on {issuer['router']}): up, revocations v{issuer['version']}" in text


def test_a_stale_site_shows_its_sync_age_growing_and_a_missed_revocation(
        default_lab: labs.Lab) -> None:
    lab = default_lab
    try:
        faults.inject(lab, "ams", "stale")
        first = wait_for(lambda: (e := identity(lab, "ams"))["stale"] and e, timeout=15,
                         message="ams shown stale")
        assert first["sync_age_s"] > MAX_STALENESS_S
        later = wait_for(lambda: (e := identity(lab, "ams"))["sync_age_s"]
                         > first["sync_age_s"] and e["check"] == "down" and e, timeout=10,
                         message="ams's sync age growing, its identity check down")
        assert later["sync_error"], later
        token = json.loads(lab_cli("token", "issue", "--client", "lab-admin", "--lab",
                                   lab.name, "--json").stdout)
        revoked = lab_cli("token", "revoke", token["claims"]["jti"], "--lab", lab.name,
                          "--json")
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
        doc = status(lab)
        version = doc["issuer"]["version"]
        assert doc["sites"]["ams"]["identity"]["version"] < version
        assert doc["sites"]["ams"]["identity"]["current"] is False
        assert all(doc["sites"][s]["identity"]["current"] for s in ("nyc", "sin")), doc
        text = lab_cli("status", "--lab", lab.name).stdout
        assert f"of v{version}" in text and "stale" in text
    finally:
        faults.heal(lab, "ams")
    wait_for(lambda: identity(lab, "ams")["current"] and not identity(lab, "ams")["stale"],
             timeout=15, message="ams current and fresh again")


def test_a_site_serving_the_wrong_keys_shows_them_differing(default_lab: labs.Lab) -> None:
    lab = default_lab
    try:
        faults.inject(lab, "nyc", "wrong-key")
        entry = wait_for(lambda: (e := identity(lab, "nyc"))["keys_match"] is False and e,
                         timeout=10, message="nyc's keys shown differing")
        assert entry["keys_source"] == "override" and entry["current"] is True
        assert identity(lab, "ams")["keys_match"] is True
        assert "keys differ (override)" in lab_cli("status", "--lab", lab.name).stdout
    finally:
        faults.heal(lab, "nyc")
    wait_for(lambda: identity(lab, "nyc")["keys_match"] is True, timeout=10,
             message="nyc's keys the issuer's again")
