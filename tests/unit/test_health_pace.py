"""A topology's `health.checks`: each check's interval, fast interval, timeout, rise and
fall are validated with their path (bounds, whole milliseconds, a timeout no longer than
the interval, only under checker: healthd), rendered into the health daemon's config with
every field written out, taken by the daemon's own config model, and its defaults are the
daemon's default profile for that check type."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.model import load_text
from lab.model.names import node_dir
from lab.model.plan import build_plan
from lab.model.topology import CHECK_DEFAULTS, check_timing
from lab.render import credentials
from lab.render.health import health_config
from lab.sites.health.config import DnsCheck, HealthConfig, IntrospectCheck

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"
LAB_DIR = Path("/run/anycast-lab/pace")


def _report(health: dict[str, Any]):
    data = yaml.safe_load(DEFAULT.read_text())
    data["health"] = health
    return load_text(yaml.safe_dump(data, sort_keys=False), "<pace>")


def _problems(health: dict[str, Any]) -> list[str]:
    report = _report(health)
    assert report.topology is None, "expected problems"
    return [str(p) for p in report.problems]


def _rendered(health: dict[str, Any]) -> HealthConfig:
    report = _report(health)
    assert report.topology is not None, report.problems
    plan = build_plan(report.topology)
    doc = health_config(report.topology, plan, plan.nodes["ams"], node_dir(LAB_DIR, "ams"),
                        credentials.paths(LAB_DIR))
    return HealthConfig.model_validate(doc)


def test_the_models_defaults_are_the_health_daemons_own() -> None:
    for check, daemon_model in (("dns", DnsCheck), ("introspect", IntrospectCheck)):
        assert asdict(CHECK_DEFAULTS[check]) == asdict(daemon_model.timing)


def test_without_a_checks_section_the_daemon_gets_its_defaults_written_out() -> None:
    cfg = _rendered({})
    paced = [c for c in cfg.checks if c.name in CHECK_DEFAULTS]  # identity: its own section
    assert {c.name for c in paced} == {"dns", "introspect"}
    for c in paced:
        assert c.model_dump(include=set(asdict(CHECK_DEFAULTS[c.name]))) == \
            asdict(CHECK_DEFAULTS[c.name])


def test_a_topologys_pace_reaches_the_daemons_config() -> None:
    cfg = _rendered({"checks": {"dns": {"interval": "200ms", "timeout": "150ms", "rise": 5,
                                        "fall": 4, "fast_interval": "20ms"},
                                "introspect": {"interval": "1s", "rise": 3}}})
    dns = next(c for c in cfg.checks if c.name == "dns")
    intro = next(c for c in cfg.checks if c.name == "introspect")
    assert (dns.interval_ms, dns.fast_interval_ms, dns.timeout_ms, dns.rise, dns.fall) == \
        (200, 20, 150, 5, 4)
    # Unset fields keep the check's defaults.
    assert (intro.interval_ms, intro.fast_interval_ms, intro.timeout_ms, intro.rise,
            intro.fall) == (1000, 100, 300, 3, 2)


def test_an_interval_below_the_default_fast_interval_takes_that_interval_as_fast() -> None:
    report = _report({"checks": {"introspect": {"interval": "50ms", "timeout": "40ms"}}})
    assert report.topology is not None, report.problems
    pace = check_timing(report.topology, "introspect")
    assert (pace.interval_ms, pace.fast_interval_ms, pace.timeout_ms) == (50, 50, 40)


@pytest.mark.parametrize(("health", "path", "words"), [
    ({"checks": {"dns": {"interval": "50ms"}}}, "health.checks.dns.interval",
     "default timeout 100 ms is longer than interval 50 ms"),
    ({"checks": {"dns": {"interval": "1s", "timeout": "2s"}}}, "health.checks.dns.timeout",
     "timeout 2 s is longer than interval 1 s"),
    ({"checks": {"dns": {"fast_interval": "500ms"}}}, "health.checks.dns.fast_interval",
     "fast_interval 500 ms is longer than interval 100 ms"),
    ({"checks": {"dns": {"interval": "5ms"}}}, "health.checks.dns.interval",
     "outside 10 ms to 1 h"),
    ({"checks": {"introspect": {"timeout": "11s", "interval": "20s"}}},
     None, None),  # valid: the bound of a timeout is 10 min
    ({"checks": {"introspect": {"timeout": "700s", "interval": "800s"}}},
     "health.checks.introspect.timeout", "outside 5 ms to 10 min"),
    ({"checks": {"dns": {"interval": "2h"}}}, "health.checks.dns.interval",
     "is not a duration like '20ms'"),
    ({"checks": {"dns": {"interval": "7200s"}}}, "health.checks.dns.interval",
     "longer than 1 h"),
    ({"checks": {"dns": {"interval": "100 ms"}}}, "health.checks.dns.interval",
     "has a space"),
    ({"checks": {"dns": {"timeout": "1500us"}}}, "health.checks.dns.timeout",
     "not a whole number of milliseconds"),
    ({"checks": {"dns": {"rise": 0}}}, "health.checks.dns.rise", "greater than or equal to 1"),
    ({"checks": {"dns": {"fall": 101}}}, "health.checks.dns.fall", "less than or equal to 100"),
    ({"checks": {"dns": {"rise": "3"}}}, "health.checks.dns.rise", "valid integer"),
    ({"checks": {"tcp": {"rise": 3}}}, "health.checks.tcp",
     "unknown key 'tcp' (allowed here: dns, introspect)"),
    ({"checks": {"dns": {"every": "1s"}}}, "health.checks.dns.every",
     "allowed here: interval, fast_interval, timeout, rise, fall"),
    ({"checker": "exabgp-healthcheck", "checks": {"dns": {"rise": 4}}}, "health.checks.dns",
     "checker is exabgp-healthcheck"),
])
def test_pace_problems_name_their_path(health: dict[str, Any], path: str | None,
                                       words: str | None) -> None:
    if path is None:
        report = _report(health)
        assert report.topology is not None, report.problems
        return
    problems = _problems(health)
    assert any(p.startswith(f"{path}: ") and words in p for p in problems), problems


def test_every_pace_problem_of_a_file_is_reported_at_once() -> None:
    problems = _problems({"checks": {"dns": {"interval": "5ms", "timeout": "1500us"},
                                     "introspect": {"interval": "100ms"}}})
    assert len(problems) == 3, problems
