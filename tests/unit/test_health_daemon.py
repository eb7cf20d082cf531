"""The health daemon as a process, end to end without root: a DNS server run by the
test, the real shim (lab.sites.speaker.api --watchdog-ms) with the test playing ExaBGP, and
`python -m lab.sites.health`. Faults: bad DNS, killed DNS, SIGSTOP/SIGKILL/SIGTERM of the
daemon, a restarted shim, drain and undrain."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.sites.health.checks import Probe

from .helpers import (
    ANNOUNCE_V4,
    ANYCAST,
    ROOT,
    WITHDRAW_V4,
    DnsServer,
    assert_no_secrets,
    free_port,
    introspect_check,
    start_shim,
    wait_until,
)

WATCHDOG_MS = 200
GSHUT_V4 = ANNOUNCE_V4 + " community [65535:0]"


class Healthd:
    def __init__(self, config: Path, log: Path) -> None:
        self.log_file = open(log, "ab")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lab.sites.health", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log_file,
            cwd=ROOT)

    def send(self, sig: signal.Signals) -> float:
        self.proc.send_signal(sig)
        return time.monotonic()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log_file.close()
        return rc


class Site:
    """One site: DNS server, shim + fake ExaBGP, health daemon; all owned and stopped."""

    def __init__(self, tmp: Path, extra_checks: list[dict[str, Any]] | None = None,
                 watchdog_ms: int = WATCHDOG_MS) -> None:
        self.tmp = tmp
        self.dns = DnsServer()
        self.exabgp, self.sock = start_shim(tmp, "--watchdog-ms", str(watchdog_ms))
        self.metrics_port = free_port()
        self.config = tmp / "healthd.json"
        self.config.write_text(json.dumps({
            "site": "site-a", "shim_socket": str(self.sock), "drain_file": "drain",
            "state_file": "health-state.json", "event_log": "health-events.jsonl",
            "metrics_listen": f"127.0.0.1:{self.metrics_port}",
            "hold_down_ms": 200, "drain_delay_ms": 300, "drain_poll_ms": 5000,
            "checks": [{"name": "dns", "type": "dns", "server": "127.0.0.1",
                        "port": self.dns.port, "expect": [ANYCAST]}, *(extra_checks or [])],
        }, default=str))
        self.healthd: Healthd | None = None

    def start_healthd(self) -> Healthd:
        self.healthd = Healthd(self.config, self.tmp / "healthd.log")
        return self.healthd

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.tmp / "health-state.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def events(self) -> list[dict[str, Any]]:
        path = self.tmp / "health-events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def wait_line(self, line: str, after: float, timeout: float = 5.0) -> float:
        """When the fake ExaBGP first got `line` after `after` (fails if it never did)."""
        assert self.exabgp.wait_for(lambda _: self.exabgp.first_after(after, line) is not None,
                                    timeout), f"no {line!r}\n{self.log()}"
        got = self.exabgp.first_after(after, line)
        assert got is not None
        return got

    def log(self) -> str:
        path = self.tmp / "healthd.log"
        return (path.read_text() if path.exists() else "") + self.exabgp.log()

    def close(self) -> None:
        if self.healthd is not None:
            self.healthd.stop()
        self.exabgp.close()
        self.dns.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.close()


@pytest.fixture
def patient_site(tmp_path: Path) -> Iterator[Site]:
    """A site whose shim waits 5 s for a silent daemon: tests that a closed socket, not
    the watchdog, withdrew the route cannot be fooled by a test process starved of CPU
    for a few hundred milliseconds on a loaded runner."""
    s = Site(tmp_path, watchdog_ms=5000)
    yield s
    s.close()


def up_and_announced(site: Site) -> float:
    started = time.monotonic()
    site.start_healthd()
    return site.wait_line(ANNOUNCE_V4, started, timeout=10)


def test_announces_after_rise_and_reports_everywhere(site: Site) -> None:
    up_and_announced(site)
    assert wait_until(lambda: site.state().get("route") == "announced", 2)
    state = site.state()
    assert state["health"] == "up" and state["healthy"] is True
    assert state["checks"]["dns"]["state"] == "up"
    assert state["checks"]["dns"]["reason"] == "3 consecutive successes"
    assert state["shim_connected"] is True
    assert wait_until(lambda: any(e["event"] == "action" for e in site.events()), 2)
    events = site.events()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start"
    up = kinds.index("check")
    action = next(e for e in events if e["event"] == "action")
    assert kinds.index("action") > up  # announced only after the check rose
    assert action["action"] == "announce" and action["ok"] is True
    assert action["answer"]["detail"] == ["done", "done"]
    assert site.dns.queries >= 3
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{site.metrics_port}/metrics", timeout=5).read().decode()
    assert "anycast_health_announced 1.0" in metrics
    assert ('anycast_health_check_state{anycast_health_check_state="up",check="dns"} 1.0'
            in metrics)
    assert 'anycast_health_check_latency_seconds_count{check="dns"}' in metrics
    assert 'anycast_health_shim_commands_total{command="announce",result="ok"} 1.0' in metrics


def test_hung_dns_is_withdrawn_quickly_and_re_announced(site: Site) -> None:
    up_and_announced(site)
    site.dns.mode = "silent"
    hung = time.monotonic()
    withdrawn = site.wait_line(WITHDRAW_V4, hung)
    assert wait_until(lambda: site.state().get("route") == "withdrawn", 2)
    down = next(e for e in site.events() if e["event"] == "check" and e["new"] == "down")
    assert down["reason"] == "timeout (2 consecutive failures)"
    site.dns.mode = "ok"
    healed = time.monotonic()
    back = site.wait_line(ANNOUNCE_V4, healed)
    assert back - withdrawn >= 0.2  # the hold-down
    assert site.state()["checks"]["dns"]["flaps"] == 2


def test_killed_dns_is_seen_from_icmp_in_milliseconds(site: Site) -> None:
    up_and_announced(site)
    killed = time.monotonic()
    site.dns.close()
    site.wait_line(WITHDRAW_V4, killed)
    assert wait_until(lambda: site.state().get("route") == "withdrawn", 2)
    down = next(e for e in site.events() if e["event"] == "check" and e["new"] == "down")
    assert down["reason"].startswith("refused (ICMP port unreachable)")


def test_frozen_daemon_is_withdrawn_by_the_watchdog_then_recovers(site: Site) -> None:
    up_and_announced(site)
    assert site.healthd is not None
    stopped = site.healthd.send(signal.SIGSTOP)
    withdrawn = site.wait_line(WITHDRAW_V4, stopped)
    # Last keepalive at most 50 ms before the stop; the watchdog waits its 200 ms.
    assert withdrawn - stopped >= 0.1
    assert wait_until(lambda: "watchdog: no line from the controller" in site.exabgp.log(), 2)
    resumed = site.healthd.send(signal.SIGCONT)
    site.wait_line(ANNOUNCE_V4, resumed)  # reconnected, still healthy: announces again
    assert wait_until(lambda: site.state().get("route") == "announced", 2)
    shim_events = [e for e in site.events() if e["event"] == "shim"]
    assert [e["connected"] for e in shim_events[-2:]] == [False, True]


def test_killed_daemon_is_withdrawn_at_once_and_a_new_one_waits_for_rise(
        patient_site: Site) -> None:
    site = patient_site
    up_and_announced(site)
    # Killed once it has the shim's answer: killed before, the answer finds the socket
    # closed and the shim withdraws for that ("connection broke") -- right, not this test.
    assert wait_until(lambda: site.state().get("route") == "announced", 2)
    assert site.healthd is not None
    killed = site.healthd.send(signal.SIGKILL)
    withdrawn = site.wait_line(WITHDRAW_V4, killed, timeout=4)  # within the 5 s watchdog
    # The closed socket withdrew it, not the watchdog.
    assert wait_until(lambda: "controller connection closed" in site.exabgp.log(), 2), site.log()
    assert "watchdog: no line from the controller" not in site.exabgp.log()
    site.healthd.stop()
    restarted = time.monotonic()
    site.start_healthd()
    announced = site.wait_line(ANNOUNCE_V4, restarted, timeout=10)

    def since_restart() -> list[str]:
        events = site.events()
        start = max(i for i, e in enumerate(events) if e["event"] == "start")
        return [e["event"] for e in events[start:]]

    assert wait_until(lambda: "action" in since_restart(), 2)
    after = since_restart()
    assert after.index("check") < after.index("action")  # rise first, then announce
    assert announced > withdrawn


def test_restarted_shim_is_reconnected_and_announced_again(site: Site) -> None:
    up_and_announced(site)
    assert site.exabgp.close() == 0  # ExaBGP stopped the old shim
    restarted = time.monotonic()
    site.exabgp, _ = start_shim(site.tmp, "--watchdog-ms", str(WATCHDOG_MS))
    site.wait_line(ANNOUNCE_V4, restarted, timeout=10)
    assert wait_until(lambda: site.state().get("route") == "announced", 2)


def test_drain_gshut_then_withdraw_survives_restart_then_undrain(site: Site) -> None:
    up_and_announced(site)
    assert site.healthd is not None
    (site.tmp / "drain").touch()
    drained = site.healthd.send(signal.SIGHUP)  # polling is every 5 s in this config
    gshut = site.wait_line(GSHUT_V4, drained, timeout=4)  # SIGHUP, not the 5 s poll
    withdrawn = site.wait_line(WITHDRAW_V4, gshut)
    assert withdrawn - gshut >= 0.3  # drain_delay_ms 300
    assert wait_until(lambda: site.state().get("health") == "drained", 2)

    # A restarted daemon finds the drain file and stays withdrawn, though healthy.
    assert site.healthd.stop() == 0
    restarted = time.monotonic()
    site.start_healthd()
    assert wait_until(lambda: site.state().get("checks", {}).get("dns", {}).get("state")
                      == "up" and site.state().get("shim_connected"), 10)
    assert site.exabgp.first_after(restarted, "announce") is None
    assert site.state()["health"] == "drained"

    (site.tmp / "drain").unlink()
    undrained = site.healthd.send(signal.SIGHUP)
    site.wait_line(ANNOUNCE_V4, undrained)
    assert site.exabgp.first_after(undrained, GSHUT_V4) is None


def test_sigterm_withdraws_and_leaves_a_stopped_state(patient_site: Site) -> None:
    site = patient_site
    up_and_announced(site)
    assert site.healthd is not None
    stopping = time.monotonic()
    assert site.healthd.stop(signal.SIGTERM) == 0
    site.wait_line(WITHDRAW_V4, stopping, timeout=1)
    # The daemon's own withdraw came first; closing the connection withdrew again.
    assert wait_until(lambda: "controller connection closed" in site.exabgp.log(), 2)
    shim_log = site.exabgp.log()
    assert shim_log.index("speaker-api: withdraw: done done") < shim_log.index(
        "withdraw (controller connection closed)")
    state = site.state()
    assert state["running"] is False and state["health"] == "stopped"
    assert state["route"] == "withdrawn"
    last = site.events()[-2:]
    assert last[0]["event"] == "action" and last[0]["action"] == "withdraw"
    assert last[0]["reason"] == "daemon stopping (SIGTERM)"
    assert last[1]["event"] == "stop"


def test_bad_metrics_address_fails_to_start(tmp_path: Path) -> None:
    config = tmp_path / "healthd.json"
    config.write_text(json.dumps({
        "site": "a", "shim_socket": "s.sock", "drain_file": "drain", "state_file": "st.json",
        "event_log": "ev.jsonl", "metrics_listen": "192.0.2.77:9273",  # not ours
        "checks": [{"name": "dns", "type": "dns", "server": "127.0.0.1"}],
    }))
    result = subprocess.run([sys.executable, "-m", "lab.sites.health", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT, timeout=30, check=False)
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "Cannot assign requested address" in result.stderr


def with_introspect(tmp: Path, keys: dict[str, Any], port: int) -> Site:
    check = introspect_check(keys, port, timeout_ms=300).model_dump(mode="json")
    return Site(tmp, [check])


def test_introspection_check_in_the_daemon_logs_no_secrets(tmp_path, pki, services) -> None:
    site = with_introspect(tmp_path, pki, services["good"])
    try:
        up_and_announced(site)
        assert wait_until(lambda: site.state().get("checks", {}).get("introspect", {})
                          .get("state") == "up", 5)
        site.healthd.stop()
        healthd_log = (tmp_path / "healthd.log").read_text()
        assert "HTTP Request" not in healthd_log  # httpx's per-request INFO lines
        assert_no_secrets(healthd_log, pki)
        assert_no_secrets((tmp_path / "health-events.jsonl").read_text(), pki)
        assert_no_secrets((tmp_path / "health-state.json").read_text(), pki)
    finally:
        site.close()


def test_site_with_stale_revocation_never_announces(tmp_path, pki, services) -> None:
    site = with_introspect(tmp_path, pki, services["stale"])
    try:
        started = time.monotonic()
        site.start_healthd()
        assert wait_until(lambda: site.state().get("checks", {}).get("introspect", {})
                          .get("state") == "down", 10), site.log()
        state = site.state()
        assert state["checks"]["dns"]["state"] == "up"  # DNS alone would announce
        assert state["health"] == "down" and state["route"] == "withdrawn"
        assert state["checks"]["introspect"]["reason"].startswith(
            "revoked canary answered active (stale revocation list)")
        assert site.exabgp.first_after(started, "announce") is None
    finally:
        site.close()


def test_slow_check_does_not_starve_the_watchdog(tmp_path: Path) -> None:
    """An optional check that takes 600 ms per run (three watchdog periods) must not
    delay the keepalives: the route stays announced."""
    slow = {"name": "slow", "type": "exec", "argv": ["sleep", "0.6"], "required": False,
            "interval_ms": 100, "fast_interval_ms": 50, "timeout_ms": 2000}
    site = Site(tmp_path, [slow])
    try:
        announced = up_and_announced(site)
        assert not wait_until(lambda: site.exabgp.first_after(announced, "withdraw")
                              is not None, 2.0)
        state = site.state()
        assert state["route"] == "announced" and state["shim_connected"] is True
        assert state["checks"]["slow"]["state"] == "up"  # it did run, slowly
    finally:
        site.close()


# --- the daemon in-process: a check that never returns -----------------------


class _StuckProbe(Probe):
    """Blocks until released, like a check stuck in a syscall."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.runs = 0

    def run(self):
        from lab.sites.health.checks import Result

        self.runs += 1
        self.release.wait()
        return Result(True, "ok", 0.0)

    def close(self) -> None:
        self.release.set()


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_a_hung_check_is_counted_as_failing_and_its_late_result_dropped(
        tmp_path: Path, monkeypatch, restore_signals, caplog) -> None:
    from lab.sites.health import daemon as daemon_module
    from lab.sites.health.config import HealthConfig

    caplog.set_level(logging.INFO, logger="lab.sites.health")
    stuck = _StuckProbe()
    monkeypatch.setattr(daemon_module, "make_probe", lambda cfg: stuck)
    cfg = HealthConfig.model_validate({
        "site": "a", "shim_socket": str(tmp_path / "none.sock"), "drain_file": str(tmp_path / "d"),
        "state_file": str(tmp_path / "state.json"), "event_log": str(tmp_path / "ev.jsonl"),
        "checks": [{"name": "t", "type": "tcp", "host": "127.0.0.1", "port": 9,
                    "timeout_ms": 50, "fall": 2}],
    })
    d = daemon_module.Daemon(cfg)
    d.start()
    try:
        end = time.monotonic() + 5
        while d.site.checks["t"].state != "down" and time.monotonic() < end:
            d.step()
        tracker = d.site.checks["t"]
        assert tracker.state == "down"
        assert tracker.reason.startswith("hung: no result in ")
        assert stuck.runs == 1  # one stuck run, two verdicts (fall 2)
        stuck.release.set()  # the stuck run finally returns "ok": too late to count
        end = time.monotonic() + 2
        while "late result" not in caplog.text and time.monotonic() < end:
            d.step()
        assert "t: late result of a run counted as hung, dropped: ok" in caplog.text
        assert tracker.state == "down" and tracker.successes == 0
        while tracker.successes == 0 and time.monotonic() < end:
            d.step()  # the next run is a normal one again
        assert tracker.successes == 1 and stuck.runs == 2
    finally:
        d.stop_signal = "test"
        d.shutdown()
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["running"] is False and state["shim_connected"] is False
