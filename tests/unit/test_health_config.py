"""The health daemon's config: defaults, errors with their field paths, --check-config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.sites.health.cli import main
from lab.sites.health.config import (
    ConfigError,
    DnsCheck,
    IntrospectCheck,
    load_config,
    parse_listen,
)

ROOT = Path(__file__).resolve().parents[2]

EXAMPLE: dict[str, Any] = {
    "site": "ams",
    "shim_socket": "speaker.sock",
    "drain_file": "drain",
    "state_file": "health-state.json",
    "event_log": "health-events.jsonl",
    "metrics_listen": "100.64.0.2:9273",
    "checks": [
        {"name": "dns", "type": "dns", "server": "100.64.0.2", "expect": ["203.0.113.53"]},
        {"name": "introspect", "type": "introspect", "address": "100.64.0.2",
         "server_name": "introspect.anycast.lab", "ca_file": "ca.pem",
         "client_id": "healthd-ams", "client_secret_file": "healthd.secret",
         "active_token_file": "canary-active.jwt",
         "revoked_token_file": "canary-revoked.jwt"},
    ],
}


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "healthd.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_example_config_gets_the_default_profile_and_absolute_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, EXAMPLE))
    dns, intro = cfg.checks
    assert isinstance(dns, DnsCheck) and isinstance(intro, IntrospectCheck)
    assert (dns.interval_ms, dns.fast_interval_ms, dns.timeout_ms, dns.rise, dns.fall) == (
        100, 10, 100, 3, 2)
    assert dns.qname == "health.anycast.lab." and dns.qtype == "A" and dns.port == 53
    assert (intro.interval_ms, intro.fast_interval_ms, intro.timeout_ms, intro.rise,
            intro.fall) == (500, 100, 300, 2, 2)
    assert intro.port == 443 and intro.path == "/introspect" and intro.required
    assert (cfg.hold_down_ms, cfg.hold_down_max, cfg.drain_delay_ms) == (500, 500, 2000)
    assert cfg.shim_socket == tmp_path / "speaker.sock"
    assert intro.ca_file == tmp_path / "ca.pem"


def errors_of(tmp_path: Path, doc: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, doc))
    return str(info.value)


def with_check(**changes: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(EXAMPLE))
    doc["checks"][0].update(changes)
    return doc


@pytest.mark.parametrize(("doc", "message"), [
    (with_check(timeout_ms=1), "checks.0.dns.timeout_ms: Input should be greater than or equal"),
    (with_check(fast_interval_ms=500), "fast_interval_ms (500) must not exceed interval_ms"),
    (with_check(server="dns.example"), "checks.0.dns.server: Value error"),
    (with_check(expect=["nope"]), "checks.0.dns.expect: Value error, 'nope' does not appear"),
    (with_check(type="ping"), "checks.0: Input tag 'ping' found using 'type' does not match"),
    (with_check(colour="red"), "checks.0.dns.colour: Extra inputs are not permitted"),
    (with_check(name="introspect"), "check names must be unique: introspect"),
    ({**EXAMPLE, "checks": []}, "checks: List should have at least 1 item"),
    ({**EXAMPLE, "metrics_listen": "9273"}, "expected ADDRESS:PORT"),
    ({**EXAMPLE, "hold_down_max_ms": 100}, "hold_down_max_ms must be at least hold_down_ms"),
    ({**EXAMPLE, "hold_down_ms": 0, "hold_down_max_ms": 1000}, "0 never grows"),
    ({k: v for k, v in EXAMPLE.items() if k != "shim_socket"}, "shim_socket: Field required"),
])
def test_invalid_configs_name_the_field(tmp_path: Path, doc: Any, message: str) -> None:
    assert message in errors_of(tmp_path, doc)


def test_every_check_optional_is_refused(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(EXAMPLE))
    for check in doc["checks"]:
        check["required"] = False
    assert "at least one check must be required" in errors_of(tmp_path, doc)


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    assert "not JSON" in errors_of(tmp_path, "{nope")
    assert "the top level must be an object" in errors_of(tmp_path, "[]")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")


def test_parse_listen() -> None:
    assert parse_listen("100.64.0.2:9273") == ("100.64.0.2", 9273)
    assert parse_listen("[2001:db8::1]:9273") == ("2001:db8::1", 9273)
    for bad in ("host:9273", "1.2.3.4:0", "1.2.3.4:x", "[::1]"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, EXAMPLE)
    assert main(["--config", str(good), "--check-config"]) == 0
    assert "valid: site ams, checks: dns (dns), introspect (introspect)" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(with_check(rise=0)))
    assert main(["--config", str(bad), "--check-config"]) == 2
    assert "checks.0.dns.rise: Input should be greater than or equal to 1" in (
        capsys.readouterr().err)


def test_module_entry_point_validates(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lab.sites.health", "--config", str(write(tmp_path, EXAMPLE)),
         "--check-config"], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
