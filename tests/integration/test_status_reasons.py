"""`status` explains on a real lab: after a real fault, each site's reason names why it is
withdrawn, the fault is listed with its start, and a client answered by its declared
failover site is as expected (exit 0). Under ECMP (topologies/ecmp-ring.yaml) status is
ok call after call, shows every next hop the routers' kernels hold, and the spread of a
client's answers covers the sites real `dig`s reach."""

from __future__ import annotations

import json
import re
from collections import Counter

from lab.host.procs import run_in
from lab.ops import faults

from .helpers import ROOT, lab_cli, wait_for

ECMP_RING = ROOT / "topologies" / "ecmp-ring.yaml"

SITE, CLIENT, FAILOVER = "ams", "c-eu", "nyc"


def status_json(lab) -> tuple[int, dict]:
    result = lab_cli("status", "--lab", lab.name, "--json", timeout=60)
    return result.returncode, json.loads(result.stdout)


def settled(lab, reason_start: str):
    """The status once ams's reason says `reason_start` and c-eu is on nyc in both
    families, else None."""
    code, report = status_json(lab)
    client = report["clients"][CLIENT]
    if report["sites"][SITE]["reason"].startswith(reason_start) \
            and client["site"] == client["site6"] == FAILOVER:
        return code, report
    return None


def test_failed_dns_is_the_reason_and_the_failover_client_is_as_expected(make_lab):
    lab = make_lab(prefix="sr").up()
    code, report = status_json(lab)
    assert code == 0 and report["sites"][SITE]["reason"] == "announced: healthy"
    assert report["clients"][CLIENT]["as_expected"] == "expected"
    assert report["faults"] == []

    lab_cli("fail", SITE, "dns", "--lab", lab.name, timeout=60, check=True)
    code, report = wait_for(lambda: settled(lab, "withdrawn: dns check down"), timeout=20,
                            interval=0.3, message="ams withdrawn for dns, c-eu on nyc")
    assert code == 0, report["problems"]
    site = report["sites"][SITE]
    assert re.fullmatch(r"withdrawn: dns check down since \d\d:\d\d:\d\d \(.+\)",
                        site["reason"]), site["reason"]
    assert [f["fault"] for f in site["faults"]] == ["dns"]
    assert site["faults"][0]["since"].endswith("Z")
    assert [(f["site"], f["fault"]) for f in report["faults"]] == [(SITE, "dns")]
    assert report["clients"][CLIENT]["as_expected"] == "failover"
    assert report["clients"]["c-us"]["as_expected"] == "expected"
    assert report["ok"] is True and report["problems"] == []

    human = lab_cli("status", "--lab", lab.name, timeout=60)
    assert human.returncode == 0
    assert "as expected (failover)" in human.stdout and "fault:" in human.stdout


def test_frozen_health_daemon_is_the_watchdog_reason(make_lab):
    lab = make_lab(prefix="sr").up()
    faults.inject(lab, SITE, "healthd-hang")
    try:
        code, report = wait_for(lambda: settled(lab, "withdrawn: watchdog"), timeout=20,
                                interval=0.3, message="ams withdrawn by the watchdog")
        site = report["sites"][SITE]
        assert re.fullmatch(r"withdrawn: watchdog — health daemon frozen, silent [\d.]+ s",
                            site["reason"]), site["reason"]
        assert site["healthd_process"] == "frozen"
        assert site["health"] == "unknown (healthd frozen)"
        assert report["clients"][CLIENT]["as_expected"] == "failover"
        assert code == 0, report["problems"]
        stale = wait_for(lambda: status_json(lab)[1]["sites"][SITE]["health_state_stale"],
                         timeout=10, interval=0.3, message="the frozen daemon's file stale")
        assert stale is True
    finally:
        healed = faults.heal(lab, SITE)
    assert [h["ready"] for h in healed] == [True], healed


def test_blackhole_is_the_lost_session_with_the_fault(make_lab):
    lab = make_lab(prefix="sr").up()
    faults.inject(lab, SITE, "blackhole")
    try:
        code, report = wait_for(lambda: settled(lab, "withdrawn: session"), timeout=20,
                                interval=0.3, message="ams's session lost to the blackhole")
        reason = report["sites"][SITE]["reason"]
        assert re.search(r"; blackhole since \d\d:\d\d:\d\d \([\d.]+ s\)$", reason), reason
        assert report["clients"][CLIENT]["as_expected"] == "failover"
        assert code == 1 and any("session site_ams is" in p for p in report["problems"])
    finally:
        healed = faults.heal(lab, SITE)
    assert [h["ready"] for h in healed] == [True], healed


def kernel_next_hops(netns: str, prefix: str) -> set[str]:
    """The gateways of the router's kernel route to `prefix` (every multipath next hop)."""
    family = "-6" if ":" in prefix else "-4"
    result = run_in(netns, ["ip", family, "-j", "route", "show", prefix.split("/")[0]])
    assert result.returncode == 0, result.stderr
    out = set()
    for route in json.loads(result.stdout or "[]"):
        hops = route.get("nexthops") or [route]
        out |= {h["gateway"] for h in hops if "gateway" in h}
    return out


def exec_digs(lab, client: str, address: str, count: int) -> Counter:
    """Which site answers each of `count` real `dig`s run in `client` through
    `anycast-lab exec` (one shell, one dig per query, each from its own source port)."""
    loop = (f"for i in $(seq {count}); do a=$(dig +short +tries=1 +time=1 @{address} "
            "id.server CH TXT 2>/dev/null | grep -v '^;'); echo \"${a:-none}\"; done")
    result = lab_cli("exec", "--lab", lab.name, client, "--", "sh", "-c", loop, timeout=120)
    assert result.returncode == 0, result.stderr
    answers = [line.strip().strip('"') for line in result.stdout.splitlines()]
    assert len(answers) == count, result.stdout
    return Counter(answers)


def every_fib_next_hop_shown(lab, report: dict) -> int:
    """Assert that each router's anycast routes in `report` list exactly the next hops its
    kernel FIB holds, each mapped to a site; returns the most next hops one route has."""
    widest = 0
    for router, entry in report["routers"].items():
        for prefix, best in entry["best"].items():
            kernel = kernel_next_hops(lab.plan.nodes[router].netns, prefix)
            assert set(best["next_hop_sites"]) == kernel, (router, prefix)
            assert all(best["next_hop_sites"].values()), (router, prefix)  # each to a site
            widest = max(widest, len(kernel))
    return widest


def test_ecmp_ring_is_ok_call_after_call_and_shows_every_kernel_next_hop(make_lab):
    lab = make_lab(ECMP_RING, prefix="se").up()  # `up` exits 0 (asserted by the handle)
    assert lab.plan is not None
    for call in range(20):
        code, report = status_json(lab)
        assert code == 0 and report["ok"] is True, (call, report["problems"])
    print(f"c-d, all sites up: status {report['clients']['c-d']['sites']}, "
          f"50 digs {dict(exec_digs(lab, 'c-d', '203.0.113.53', 50))}")
    assert every_fib_next_hop_shown(lab, report) > 1  # equal-cost paths somewhere
    assert report["routers"]["r-d"]["best"][lab.plan.anycast[0]]["sites"] == ["a1", "a2", "c1"]

    # One ECMP member out: c-d's distribution in status names the sites real digs reach.
    lab_cli("fail", "a2", "dns", "--lab", lab.name, timeout=60, check=True)
    wait_for(lambda: not status_json(lab)[1]["sites"]["a2"]["announced"], timeout=20,
             interval=0.3, message="a2 withdrawn")
    code, report = status_json(lab)
    assert code == 0, report["problems"]
    every_fib_next_hop_shown(lab, report)
    status_sites = set(report["clients"]["c-d"]["sites"])
    dig_sites = exec_digs(lab, "c-d", "203.0.113.53", 50)
    print(f"c-d with a2 failed: status {report['clients']['c-d']['sites']}, "
          f"50 digs {dict(dig_sites)}")  # shown with pytest -rP
    assert "a2" not in status_sites and status_sites == set(dig_sites)
