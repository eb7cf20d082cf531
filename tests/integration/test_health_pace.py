"""A topology's per-check pace on a real lab: `status --json` shows it for every site (as
configured and as the running health daemon reports it), and the daemon honours it: its
events count `rise` good results before a check comes up and `fall` bad ones before it
goes down."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lab.model import names

from .helpers import DEFAULT, events_since, lab_cli, wait_for

RISE, FALL = 5, 3  # the defaults of the dns check are 3 and 2


def paced_copy(directory: Path) -> Path:
    data = yaml.safe_load(DEFAULT.read_text())
    data.setdefault("health", {})["checks"] = {
        "dns": {"interval": "200ms", "timeout": "150ms", "rise": RISE, "fall": FALL}}
    path = directory / "paced.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def dns_events(events_file: Path) -> list[dict]:
    return [e for e in events_since(events_file, 0)
            if e.get("event") == "check" and e.get("check") == "dns"]


def test_a_non_default_pace_is_shown_by_status_and_honoured_by_the_daemon(make_lab,
                                                                          tmp_path):
    lab = make_lab(paced_copy(tmp_path), prefix="hp").up()
    result = lab_cli("status", "--lab", lab.name, "--json", timeout=60)
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    want = {"interval_ms": 200, "fast_interval_ms": 10, "timeout_ms": 150, "rise": RISE,
            "fall": FALL}
    for site, entry in report["sites"].items():
        assert entry["check_timing"]["dns"] == want, site
        assert entry["checks"]["dns"]["timing"] == want, site  # the daemon's own word
        assert entry["check_timing"]["introspect"]["rise"] == 2, site  # untouched: default

    events = names.node_dir(lab.journal.dir, "ams") / names.HEALTH_EVENTS
    came_up = [e for e in dns_events(events) if e["new"] == "up"]
    assert came_up and came_up[0]["reason"] == f"{RISE} consecutive successes", came_up

    lab_cli("fail", "ams", "dns", "--lab", lab.name, timeout=60, check=True)
    went_down = wait_for(lambda: [e for e in dns_events(events) if e["new"] == "down"],
                         timeout=20, interval=0.1, message="ams's dns check down")
    assert went_down[0]["reason"].endswith(f"({FALL} consecutive failures)"), went_down


def slow_dns_copy(directory: Path) -> Path:
    data = yaml.safe_load(DEFAULT.read_text())
    data.setdefault("health", {})["checks"] = {"dns": {"interval": "3600s"}}
    path = directory / "slow-dns.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_killed_dns_server_is_seen_at_once_not_at_the_next_interval(make_lab, tmp_path):
    """With a DNS check once an hour, killing the site's Unbound still withdraws the site
    within seconds: the check's TCP connection to Unbound closes with the process and the
    check runs that moment (refused, then the fall at the fast interval)."""
    lab = make_lab(slow_dns_copy(tmp_path), prefix="hw").up()
    events = names.node_dir(lab.journal.dir, "ams") / names.HEALTH_EVENTS
    log = names.node_dir(lab.journal.dir, "ams") / names.log_name("healthd")
    wait_for(lambda: "dns: watching" in log.read_text(), timeout=10, interval=0.1,
             message="ams's DNS check watching Unbound over TCP")
    lab_cli("fail", "ams", "dns", "--lab", lab.name, timeout=60, check=True)
    # Without the watch the next run would come up to an hour later.
    went_down = wait_for(lambda: [e for e in dns_events(events) if e["new"] == "down"],
                         timeout=5, interval=0.05, message="ams's dns check down")
    assert went_down[0]["reason"].startswith("refused"), went_down

