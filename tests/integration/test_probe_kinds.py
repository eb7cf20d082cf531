"""`measure failover` with the HTTPS and TCP probes on the default lab, over IPv4 and IPv6:
the HTTPS probes see an outage when ams's introspection service is killed (its DNS keeps
answering: the DNS prober would see none), and the TCP stream probe sees its long-lived
connections broken when the route moves (the new site resets them) and answered again on
new connections at nyc."""

from __future__ import annotations

import json

import pytest

from .helpers import lab_cli


def measure(lab_name: str, fault: str, probe: str, family: int) -> dict:
    result = lab_cli("measure", "failover", "--lab", lab_name, "--site", "ams",
                     "--fault", fault, "--trials", "1", "--rate", "50", "--probe", probe,
                     "--family", str(family), "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert (report["probe"], report["families"]) == (probe, [f"ipv{family}"])
    return report


def c_eu(report: dict) -> dict:
    [trial] = report["trials"]
    return next(c for c in trial["clients"] if c["client"] == "c-eu")


@pytest.mark.parametrize(("probe", "family"), [("https", 4), ("https-keepalive", 6)])
def test_https_probe_sees_an_introspection_outage(default_lab, probe, family):
    seen = c_eu(measure(default_lab.name, "introspect", probe, family))
    assert (seen["site_before"], seen["site_after"]) == ("ams", "nyc")
    assert seen["lost"] >= 1
    assert seen["outage_ms"] is not None and seen["outage_ms"] > 0
    assert seen["broken"] is None  # not a stream probe


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_probe_counts_connections_broken_by_a_route_move(default_lab, family):
    report = measure(default_lab.name, "speaker", "tcp", family)
    seen = c_eu(report)
    assert (seen["site_before"], seen["site_after"]) == ("ams", "nyc")
    assert seen["broken"] >= 1
    assert seen["reconnect_ms"] is not None
    others = [c for c in report["trials"][0]["clients"] if c["client"] != "c-eu"]
    assert all(c["broken"] == 0 for c in others)
    assert report["summary"]["broken_total"] >= seen["broken"]
