"""Per-link impairments: rate limits with tbf, delay/loss with netem when the kernel has
it; without netem, `up` refuses with one sentence naming the link and creates nothing."""

from __future__ import annotations

from pathlib import Path

import yaml

from lab.host.fabric import netem_available
from lab.host.procs import run_in

from .helpers import DEFAULT, NO_TRACES, lab_cli, root_snapshot, traces_of, unique_name


def impaired(tmp_path, impair: dict) -> Path:
    """The default topology with an impairment on its first link (no health daemons)."""
    data = yaml.safe_load(DEFAULT.read_text())
    data["links"][0]["impair"] = impair
    data["health"] = {"enabled": False}
    path = tmp_path / "impaired.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_rate_limit_is_applied_with_tbf(tmp_path, make_lab):
    lab = make_lab(impaired(tmp_path, {"rate": "10mbit"})).up()
    a, b = lab.plan.links[0].a, lab.plan.links[0].b
    qdisc = run_in(lab.plan.nodes[a].netns, ["tc", "qdisc", "show", "dev", b]).stdout
    assert "tbf" in qdisc and "10Mbit" in qdisc


def test_delay_needs_netem(tmp_path, make_lab):
    path = impaired(tmp_path, {"delay": "20ms", "loss": 1})
    if netem_available():
        lab = make_lab(path).up()
        a, b = lab.plan.links[0].a, lab.plan.links[0].b
        qdisc = run_in(lab.plan.nodes[a].netns, ["tc", "qdisc", "show", "dev", b]).stdout
        assert "netem" in qdisc and "delay 20" in qdisc
        return
    # This machine's kernel has no sch_netem: a clear refusal, and nothing created.
    before = root_snapshot()
    name = unique_name("imp")
    result = lab_cli("up", str(path), "--name", name)
    assert result.returncode == 3
    assert "links[0] (r-eu--r-us)" in result.stderr and "netem" in result.stderr
    assert "Traceback" not in result.stderr
    assert traces_of([name]) == NO_TRACES  # only this lab's: others may come and go
    assert root_snapshot() == before
