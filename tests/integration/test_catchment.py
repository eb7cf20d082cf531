"""`catchment`: every client's site (from the service) and its router path (scapy
traceroute), on both families, as the topology file expects; the path ends in the site
that answered (never the anycast address), and the command says nothing of scapy's."""

from __future__ import annotations

import json

from .helpers import EXPECTED, TOPOLOGY, lab_cli

ANYCAST = {"ipv4": "203.0.113.53", "ipv6": "2001:db8:53::53"}


def test_catchment_names_site_and_path_for_both_families(default_lab):
    result = lab_cli("catchment", "--lab", default_lab.name, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no scapy warnings beside the JSON
    report = json.loads(result.stdout)
    assert report["ok"] is True
    for client, site in EXPECTED.items():
        router = TOPOLOGY["clients"][client]["router"]
        site_router = TOPOLOGY["sites"][site]["router"]
        for family in ("ipv4", "ipv6"):
            entry = report["clients"][client][family]
            assert entry["site"] == site and entry["rtt_ms"] > 0
            # The path: the client's router first, the site's router, then the site that
            # answered in place of the anycast address (which answers from any site).
            path = entry["path"]
            assert path[0] == router and path[-2] == site_router
            assert path[-1] == site and ANYCAST[family] not in path


def test_catchment_table_is_quiet_and_readable(default_lab):
    result = lab_cli("catchment", "--lab", default_lab.name, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "WARNING" not in text and "underlayer" not in text, text
    assert "*" not in text and not any(a in text for a in ANYCAST.values()), text
    for client, site in EXPECTED.items():
        router = TOPOLOGY["clients"][client]["router"]
        site_router = TOPOLOGY["sites"][site]["router"]
        hops = [router] if router == site_router else [router, site_router]
        assert " > ".join([*hops, site]) in text, (client, text)
