"""Unbound identifies its site; the introspection service answers over HTTPS on
the anycast and unicast addresses; revocation reaches every site; TLS needs the lab CA."""

from __future__ import annotations

import json
import sys

import pytest

from lab.host.procs import run_in
from lab.ops import tokenstore
from lab.render import credentials

from .helpers import EXPECTED, curl, lab_cli

ANY4, ANY6 = "203.0.113.53", "2001:db8:53::53"


def dig(netns: str, *args: str) -> str:
    result = run_in(netns, ["dig", "+time=1", "+tries=2", *args])
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("server", [ANY4, ANY6])
def test_dig_id_server_and_nsid_name_the_expected_site(default_lab, server):
    for client in default_lab.plan.by_role("client"):
        site = EXPECTED[client.name]
        assert dig(client.netns, "+short", f"@{server}", "id.server", "CH", "TXT").strip() \
            == f'"{site}"'
        assert dig(client.netns, "+short", f"@{server}", "hostname.bind", "CH", "TXT").strip() \
            == f'"{site}"'
        nsid = dig(client.netns, "+nsid", f"@{server}", "dns.anycast.lab", "A")
        assert f'("{site}")' in nsid and ANY4 in nsid


def test_token_active_everywhere_then_revoked_everywhere(default_lab):
    lab_dir, plan = default_lab.journal.dir, default_lab.plan
    token, claims = tokenstore.issue(lab_dir, "lab-admin", "dns:read", 600)
    c_eu = plan.nodes["c-eu"]
    targets = [(c.netns, addr, EXPECTED[c.name]) for c in plan.by_role("client")
               for addr in (ANY4, ANY6)]
    targets += [(c_eu.netns, str(s.interfaces[0].v4.ip), s.name) for s in plan.by_role("site")]
    targets += [(c_eu.netns, str(s.interfaces[0].v6.ip), s.name) for s in plan.by_role("site")]

    for netns, address, site in targets:
        rc, headers, body = curl(netns, lab_dir, token, address)
        assert rc == 0, body
        assert headers["x-anycast-site"] == site
        assert headers["cache-control"] == "no-store"
        answer = json.loads(body)
        assert answer["active"] is True and answer["jti"] == claims["jti"]

    versions = tokenstore.revoke(lab_dir, plan, claims["jti"])
    assert set(versions) == {s.name for s in plan.by_role("site")}
    for netns, address, _site in targets:
        rc, _headers, body = curl(netns, lab_dir, token, address)
        assert rc == 0 and json.loads(body) == {"active": False}


def test_tls_needs_the_lab_ca_and_calls_need_credentials(default_lab):
    lab_dir = default_lab.journal.dir
    client = default_lab.plan.nodes["c-us"].netns
    rc, _h, err = curl(client, lab_dir, "x", ANY4, ca=False)
    assert rc == 60 and "certificate" in err  # curl: peer certificate cannot be verified
    rc, headers, body = curl(client, lab_dir, "x", ANY4, auth=False)
    assert rc == 0 and json.loads(body)["error"] == "invalid_client"
    assert headers["www-authenticate"].startswith("Basic")


def test_token_cli_round_trip(default_lab):
    issued = lab_cli("token", "issue", "--client", "lab-admin", "--lab", default_lab.name,
                     "--json")
    assert issued.returncode == 0, issued.stderr
    jti = json.loads(issued.stdout)["claims"]["jti"]
    revoked = lab_cli("token", "revoke", "--lab", default_lab.name, "--json", "--", jti)
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["jti"] == jti
    listed = json.loads(lab_cli("token", "list", "--lab", default_lab.name, "--json").stdout)
    entry = next(t for t in listed["tokens"] if t["jti"] == jti)
    assert sorted(entry["revoked_on"]) == sorted(s.name for s in default_lab.plan.by_role("site"))


def test_200_concurrent_introspections_complete_without_error(default_lab, tmp_path):
    lab_dir = default_lab.journal.dir
    token, _ = tokenstore.issue(lab_dir, "lab-admin", "read", 600)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    p = credentials.paths(lab_dir)
    result = run_in(default_lab.plan.nodes["c-ap"].netns, [
        sys.executable, "-m", "probes.introspect", "--address", ANY4, "--ca", str(p.ca_cert),
        "--client", "lab-admin", "--secret-file", str(p.secrets), "--token-file",
        str(token_file), "--count", "200", "--concurrency", "200", "--deadline", "60"],
        timeout=90)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["ok"] == 200 and summary["errors"] == 0
    assert summary["sites"] == {EXPECTED["c-ap"]: 200}
    assert summary["active"] == {"True": 200}

