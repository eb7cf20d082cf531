"""`catchment`: every client's site (from the service) and its router path (scapy
traceroute), on both families, as the topology file expects."""

from __future__ import annotations

import json

from .helpers import EXPECTED, TOPOLOGY, lab_cli


def test_catchment_names_site_and_path_for_both_families(default_lab):
    result = lab_cli("catchment", "--lab", default_lab.name, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    anycast = {"ipv4": "203.0.113.53", "ipv6": "2001:db8:53::53"}
    for client, site in EXPECTED.items():
        router = TOPOLOGY["clients"][client]["router"]
        site_router = TOPOLOGY["sites"][site]["router"]
        for family in ("ipv4", "ipv6"):
            entry = report["clients"][client][family]
            assert entry["site"] == site and entry["rtt_ms"] > 0
            # The path: the client's router first, the site's router last before the
            # anycast address itself (which answers the echo from whichever site it is).
            path = entry["path"]
            assert path[0] == router and path[-2] == site_router
            assert path[-1] == anycast[family]
