"""`impair` at run time: loss on a client's access link makes its DNS prober lose a share
of its queries (no BGP session crosses that link, so no route moves) and `--clear` restores
it; a rate limit is a tbf qdisc on both ends; delay without netem is
refused with the reason (exit 3), with netem it is applied."""

from __future__ import annotations

import json

from lab.host import labs
from lab.host.fabric import netem_available
from lab.host.procs import run_in
from probes.dns import probe

from .helpers import lab_cli

SITE, CLIENT, ROUTER = "ams", "c-eu", "r-eu"
QUERIES = 200


def lost(lab) -> int:
    """Queries lost of QUERIES sent from the site's client to the anycast address."""
    samples = probe(str(lab.plan.anycast4.network_address), rate_hz=100, duration_s=10,
                    count=QUERIES, timeout_s=0.3, netns=lab.plan.nodes[CLIENT].netns)
    assert len(samples) == QUERIES
    answered = [s for s in samples if s.site is not None]
    assert {s.site for s in answered} <= {SITE}
    return QUERIES - len(answered)


def test_loss_loses_a_share_and_clear_restores(default_lab):
    lab = default_lab
    access = f"{ROUTER}--{CLIENT}"
    assert lost(lab) == 0
    result = lab_cli("impair", CLIENT, "--loss", "30", "--lab", lab.name, "--json")
    assert result.returncode == 0, result.stderr
    try:
        report = json.loads(result.stdout)
        assert report["link"] == access
        mechanism = "netem" if netem_available() else "nftables"
        assert report["impairment"]["mechanisms"] == {"loss": mechanism}
        status = json.loads(lab_cli("status", "--lab", lab.name, "--json").stdout)
        assert status["impairments"][access]["loss"] == 30

        # 30% in each direction: a query and its answer both cross the link, so about
        # 1 - 0.7 * 0.7 = 51% of queries are lost (200 queries: 5 standard deviations
        # either side is 33%-69%).
        share = lost(lab) / QUERIES
        assert 0.33 <= share <= 0.69, share
    finally:
        result = lab_cli("impair", CLIENT, "--clear", "--lab", lab.name)
    assert result.returncode == 0, result.stderr
    assert "cleared loss 30%" in result.stdout and mechanism in result.stdout
    assert lost(lab) == 0
    assert labs.recorded_impairments(lab) == {}
    status = json.loads(lab_cli("status", "--lab", lab.name, "--json").stdout)
    assert status["impairments"] == {}


def test_rate_is_tbf_on_both_ends(default_lab):
    lab = default_lab
    result = lab_cli("impair", "r-us--r-eu", "--rate", "10mbit", "--lab", lab.name)
    assert result.returncode == 0, result.stderr
    assert "r-eu--r-us: rate 10mbit" in result.stdout
    try:
        for node, peer in (("r-eu", "r-us"), ("r-us", "r-eu")):
            shown = run_in(lab.plan.nodes[node].netns, ["tc", "qdisc", "show", "dev", peer])
            kind = "netem" if netem_available() else "tbf"
            assert f"qdisc {kind}" in shown.stdout and "10Mbit" in shown.stdout, shown.stdout
    finally:
        assert lab_cli("impair", "r-eu--r-us", "--clear", "--lab", lab.name).returncode == 0
    shown = run_in(lab.plan.nodes["r-eu"].netns, ["tc", "qdisc", "show", "dev", "r-us"])
    assert "tbf" not in shown.stdout and "netem" not in shown.stdout


def test_delay_needs_netem(default_lab):
    lab = default_lab
    result = lab_cli("impair", SITE, "--delay", "20ms", "--lab", lab.name)
    if netem_available():
        assert result.returncode == 0, result.stderr
        netns = lab.plan.nodes[SITE].netns
        shown = run_in(netns, ["tc", "qdisc", "show", "dev", ROUTER]).stdout
        assert "netem" in shown and "delay 20" in shown
        assert lab_cli("impair", SITE, "--clear", "--lab", lab.name).returncode == 0
        return
    assert result.returncode == 3
    assert "netem" in result.stderr and "--delay" in result.stderr
    assert "Traceback" not in result.stderr
    assert labs.recorded_impairments(lab).get(f"{ROUTER}--{SITE}") is None
