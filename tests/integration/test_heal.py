"""`heal` brings a daemon back once, waits until it is ready, and says so truthfully:
a daemon that cannot start is named with its last log line, exit 1, and the fault stays."""

from __future__ import annotations

import json
import socket

from lab.host import procs
from lab.model import names
from lab.model.names import node_dir
from lab.ops import faults
from lab.shared.dnsid import ask_identity
from lab.shared.nsnet import socket_in

from .helpers import lab_cli

SITE = "ams"


def unbounds(lab) -> list[procs.ProcessRecord]:
    """The live Unbound processes of the site that this lab started."""
    return [r for r in lab.journal.owned().processes
            if r.name == f"unbound@{SITE}" and procs.is_running(r)]


def unicast(lab) -> str:
    return str(lab.plan.nodes[SITE].interfaces[0].v4.ip)


def test_double_fault_frozen_and_killed_dns_heals_to_one_working_unbound(make_lab):
    lab = make_lab().up()
    log = node_dir(lab.journal.dir, SITE) / names.log_name("unbound")
    assert lab_cli("fail", SITE, "dns-hang", "--lab", lab.name).returncode == 0
    assert lab_cli("fail", SITE, "dns", "--lab", lab.name).returncode == 0
    assert unbounds(lab) == []
    logged = log.stat().st_size

    result = lab_cli("heal", SITE, "--lab", lab.name, "--json", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    healed = json.loads(result.stdout)["healed"]
    assert sorted(h["fault"] for h in healed) == ["dns", "dns-hang"]
    assert all(h["ready"] for h in healed), healed
    assert all(f"unbound@{SITE}" in h["detail"] for h in healed)

    running = unbounds(lab)
    assert len(running) == 1, running
    assert f"PID {running[0].pid}" in healed[0]["detail"]
    since_heal = log.read_text(errors="replace")[logged:]
    assert "Address already in use" not in since_heal and "fatal error" not in since_heal
    assert since_heal.count("start of service") == 1
    answer = ask_identity(lab.plan.nodes[SITE].netns, unicast(lab), timeout=1.0)
    assert answer.site == SITE, answer
    assert faults.active(lab) == {}


def test_heal_of_a_daemon_that_cannot_start_says_so_and_keeps_the_fault(make_lab):
    """The test holds UDP port 53 on the site's unicast address inside the site's
    namespace: the restarted Unbound cannot bind it and exits."""
    lab = make_lab().up()
    log = node_dir(lab.journal.dir, SITE) / names.log_name("unbound")
    assert lab_cli("fail", SITE, "dns", "--lab", lab.name).returncode == 0
    squatter = socket_in(lab.plan.nodes[SITE].netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        squatter.bind((unicast(lab), 53))

        result = lab_cli("heal", SITE, "--lab", lab.name, timeout=60)
        assert result.returncode == 1, result.stdout + result.stderr
        message = " ".join(result.stderr.split())
        last_line = log.read_text(errors="replace").strip().splitlines()[-1].strip()
        assert "could not open ports" in last_line
        assert f"unbound@{SITE}" in message and "exited" in message
        assert " ".join(last_line.split()) in message
        assert "healed" not in result.stdout
        assert list(faults.active(lab)) == [f"{SITE}:dns"]

        again = lab_cli("heal", SITE, "--lab", lab.name, "--json", timeout=60)
        assert again.returncode == 1
        report = json.loads(again.stdout)
        assert report["ok"] is False and f"unbound@{SITE}" in report["error"]["message"]
        assert [(h["fault"], h["ready"]) for h in report["healed"]] == [("dns", False)]
        assert list(faults.active(lab)) == [f"{SITE}:dns"]
        assert unbounds(lab) == []
    finally:
        squatter.close()

    fixed = lab_cli("heal", SITE, "--lab", lab.name, "--json", timeout=60)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert [h["ready"] for h in json.loads(fixed.stdout)["healed"]] == [True]
    assert len(unbounds(lab)) == 1 and faults.active(lab) == {}
    assert ask_identity(lab.plan.nodes[SITE].netns, unicast(lab), timeout=1.0).site == SITE
