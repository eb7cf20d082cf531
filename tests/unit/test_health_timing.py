"""Each health check type's default pace comes from its `timing`, and a check may set
any of the five fields itself."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
from pydantic import ValidationError

from lab.sites.health.config import DnsCheck, ExecCheck, HealthConfig, TcpCheck, Timing

TIMING_FIELDS = ("interval_ms", "fast_interval_ms", "timeout_ms", "rise", "fall")
BASE: dict[str, Any] = {"site": "ams", "shim_socket": "/s", "drain_file": "/d",
                        "state_file": "/st", "event_log": "/e"}
CHECKS = [
    {"type": "dns", "name": "dns", "server": "127.0.0.1"},
    {"type": "tcp", "name": "tcp", "host": "127.0.0.1", "port": 80, "required": False},
    {"type": "exec", "name": "exec", "argv": ["true"], "required": False},
]


def test_each_type_gets_its_own_timing_by_default() -> None:
    cfg = HealthConfig.model_validate({**BASE, "checks": CHECKS})
    for check in cfg.checks:
        assert {f: getattr(check, f) for f in TIMING_FIELDS} == asdict(type(check).timing)
    paces = {type(c).timing for c in cfg.checks}
    assert len(paces) == 3  # three different default profiles
    assert all(isinstance(t, Timing) for t in paces)


def test_a_field_set_in_the_check_wins_over_the_default() -> None:
    check = TcpCheck(type="tcp", name="t", host="h", port=1, rise=5, timeout_ms=50)
    assert (check.rise, check.timeout_ms) == (5, 50)
    assert (check.interval_ms, check.fall) == (TcpCheck.timing.interval_ms, TcpCheck.timing.fall)


def test_the_fast_interval_rule_sees_the_defaults() -> None:
    with pytest.raises(ValidationError, match="must not exceed interval_ms"):
        DnsCheck(type="dns", name="d", server="127.0.0.1",
                 fast_interval_ms=DnsCheck.timing.interval_ms + 1)


def test_exec_keeps_its_floor() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 100"):
        ExecCheck(type="exec", name="x", argv=["true"], interval_ms=50)
    tcp = TcpCheck(type="tcp", name="t", host="h", port=1, interval_ms=50, fast_interval_ms=20)
    assert tcp.interval_ms == 50
