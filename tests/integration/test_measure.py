"""Measured failover on the default lab — a DNS fault gives an outage above 0
and below the health profile's bound, a drain loses nothing, the timeline is a PNG
with one row per client."""

from __future__ import annotations

import json

from PIL import Image

from .helpers import lab_cli

# Killed DNS: refused in ms (ICMP), confirmed at the DNS check's 10 ms fast interval
# (fall 2, lab/sites/health/config.py), then BGP: well under 1 s.
DNS_KILL_BOUND_MS = 1000


def measure(lab_name: str, fault: str, trials: int, extra: list[str]) -> dict:
    result = lab_cli("measure", "failover", "--lab", lab_name, "--site", "ams",
                     "--fault", fault, "--trials", str(trials), "--rate", "200", "--json",
                     *extra, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_dns_fault_outage_is_measured_and_plotted(default_lab, tmp_path):
    png = tmp_path / "timeline.png"
    report = measure(default_lab.name, "dns", 2, ["--plot", str(png)])
    summary = report["summary"]
    assert summary["affected_client_trials"] == 2 and summary["never_recovered"] == 0
    assert 0 < summary["outage_ms"]["median"] < DNS_KILL_BOUND_MS
    assert 0 < summary["outage_ms"]["max"] < DNS_KILL_BOUND_MS
    assert summary["lost"]["max"] >= 1
    for trial in report["trials"]:
        moved = {c["client"]: c for c in trial["clients"] if c["site_after"] != c["site_before"]}
        assert set(moved) == {"c-eu"} and moved["c-eu"]["site_after"] == "nyc"

    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 200
        rows = image.info["Description"].removeprefix("rows: ").split(",")
    assert sorted(rows) == sorted(c for c in default_lab.plan.nodes
                                  if default_lab.plan.nodes[c].role == "client")


def test_drain_loses_no_query(default_lab):
    report = measure(default_lab.name, "drain", 1, [])
    summary = report["summary"]
    assert summary["affected_client_trials"] == 1
    assert summary["lost"]["max"] == 0
    assert summary["outage_ms"]["max"] == 0
