"""The speaker API process (the shim) run as ExaBGP runs it: this test plays ExaBGP on
its stdin/stdout, and a Controller (what the health daemon uses) drives its socket."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.shared.speaker_client import Controller, ShimError, command
from lab.sites.speaker.api import ExaBGPChannel

from .helpers import (
    ANNOUNCE_V4,
    ANNOUNCE_V6,
    ROOT,
    WITHDRAW_V4,
    FakeExaBGP,
    start_shim,
    wait_until,
)


def test_start_withdraws_then_only_the_controller_announces(shim) -> None:
    fake, sock = shim
    assert [line for _, line in fake.lines][:1] == [WITHDRAW_V4]
    assert command(sock, "state")["watchdog_ms"] == 200
    # Not the controller: refused, nothing written to ExaBGP.
    refused = command(sock, "announce")
    assert refused["ok"] is False and "controller" in refused["detail"]
    assert fake.count("announce") == 0

    ctl = Controller(sock)
    hello = ctl.open()
    assert hello == {"ok": True, "state": "withdrawn", "watchdog_ms": 200}
    assert ctl.keepalive_s == pytest.approx(0.05)
    reply = ctl.command("announce", timeout=5)
    assert reply["ok"] is True and reply["state"] == "announced"
    assert reply["detail"] == ["done", "done"]
    assert fake.wait_count(ANNOUNCE_V4, 1) and fake.count(ANNOUNCE_V6) == 1
    state = command(sock, "state")
    assert state["state"] == "announced" and state["controller"] is True

    # A second controller is refused while the first is alive.
    with pytest.raises(ShimError, match="another controller"):
        Controller(sock).open()
    # Nobody else may change the route under the controller, not even withdraw it.
    refused = command(sock, "withdraw")
    assert refused["ok"] is False and "drain the site" in refused["detail"]
    assert refused["state"] == "announced"
    gshut = ctl.command("announce gshut", timeout=5)
    assert gshut["state"] == "announced-gshut"
    assert fake.wait_for(lambda lines: lines[-1].endswith("community [65535:0]"))
    ctl.close()


@pytest.fixture
def patient_shim(tmp_path: Path) -> Iterator[tuple[FakeExaBGP, Path]]:
    """A shim whose watchdog waits 5 s: what withdrew the route is then told by the log,
    not by a race against 200 ms on a loaded runner."""
    fake, sock = start_shim(tmp_path, "--watchdog-ms", "5000")
    yield fake, sock
    fake.close()


def test_closed_controller_connection_withdraws_at_once(patient_shim) -> None:
    fake, sock = patient_shim
    ctl = Controller(sock)
    ctl.open()
    assert ctl.command("announce", timeout=5)["ok"]
    before = fake.count("withdraw route")
    closed = time.monotonic()
    ctl.close()  # what the kernel does when the daemon dies
    assert fake.wait_count("withdraw route", before + 2, timeout=4)  # inside the watchdog
    assert fake.first_after(closed, "withdraw route") is not None
    assert wait_until(lambda: "controller connection closed" in fake.log(), 2)
    assert "watchdog: no line" not in fake.log()
    state = command(sock, "state")
    assert state["state"] == "withdrawn" and state["controller"] is False
    # Without a controller anyone may withdraw again (e.g. after a failed withdraw).
    assert command(sock, "withdraw")["ok"] is True
    # A new controller starts withdrawn and must announce explicitly.
    ctl2 = Controller(sock)
    assert ctl2.open()["state"] == "withdrawn"
    ctl2.close()


def test_silent_controller_is_withdrawn_after_the_watchdog(shim) -> None:
    fake, sock = shim
    ctl = Controller(sock)
    ctl.open()
    assert ctl.command("announce", timeout=5)["ok"]
    last_line = time.monotonic()  # the announce was our last line; now we go silent
    before = fake.count("withdraw route")
    assert fake.wait_count("withdraw route", before + 2, timeout=2)
    took = fake.first_after(last_line, "withdraw route")
    assert took is not None
    assert took - last_line >= 0.19  # never before the watchdog (how soon after: bench)
    # The shim logs the reason right after the withdrawal: allow it a moment to arrive.
    deadline = time.monotonic() + 2
    while "watchdog: no line from the controller" not in fake.log() \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "watchdog: no line from the controller for 200 ms" in fake.log()
    # The shim hung up on the silent controller: it finds out on its next line.
    assert ctl.sock is not None
    ctl.sock.settimeout(2)
    assert ctl.sock.recv(100) == b""
    with pytest.raises(ShimError):
        ctl.command("announce", timeout=1)


@pytest.mark.parametrize("beat", [False, True], ids=["keepalive-lines", "beat-cell"])
def test_keepalives_hold_the_route(tmp_path: Path, beat: bool) -> None:
    # A 1 s watchdog fed every 250 ms: only a stall of 750 ms in this test process (not
    # in the shim) could starve it, where 200 ms fed every 50 ms lost to a loaded runner.
    # Fed by lines, or by the beat cell (then not one line goes to the shim meanwhile).
    fake, sock = start_shim(tmp_path, "--watchdog-ms", "1000")
    try:
        keepalives_hold(fake, sock, beat)
    finally:
        fake.close()


def keepalives_hold(fake: FakeExaBGP, sock: Path, beat: bool = False) -> None:
    ctl = Controller(sock, beat=beat)
    hello = ctl.open()
    if beat:
        assert hello["ok"] is True and hello["beat"] is True
        assert "fed by its beat cell" in fake.log()
    assert ctl.command("announce", timeout=5)["ok"]
    withdrawn = fake.count("withdraw route")
    end = time.monotonic() + 3.0  # three watchdog periods
    while time.monotonic() < end:
        ctl.keepalive_if_due()
        time.sleep(0.01)
    assert fake.count("withdraw route") == withdrawn
    assert command(sock, "state")["state"] == "announced"
    ctl.close()


def test_keepalive_from_a_stranger_closes_its_connection(shim) -> None:
    _, sock = shim
    ctl = Controller(sock)
    ctl.open()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(sock))
        s.sendall(b"keepalive\n")
        assert s.recv(100) == b""
    assert ctl.command("state", timeout=2)["controller"] is True  # the real one is fine
    ctl.close()


def test_error_ack_is_retried_and_reported(shim) -> None:
    fake, sock = shim
    ctl = Controller(sock)
    ctl.open()
    with fake.cond:
        fake.answers.extend(["error"])  # the v4 line fails once
    reply = ctl.command("announce", timeout=5)
    assert reply["ok"] is True and reply["attempts"] == 2
    assert fake.count(ANNOUNCE_V4) == 2 and fake.count(ANNOUNCE_V6) == 1
    assert "announce: error done | done" in fake.log()

    with fake.cond:
        fake.answers.extend(["error"] * 6)  # every attempt of both lines fails
    reply = ctl.command("announce", timeout=10)
    assert reply["ok"] is False
    assert reply["attempts"] == 3 and reply["detail"] == ["error", "error"]
    assert reply["state"] == "unknown"
    assert "FAILED after 3 attempt(s)" in fake.log()
    ctl.close()


def test_static_mode_announces_at_start_and_refuses_control(tmp_path: Path) -> None:
    fake, sock = start_shim(tmp_path, "--announce-at-start")
    try:
        assert fake.wait_count(ANNOUNCE_V4, 1)
        state = command(sock, "state")
        assert state["state"] == "announced" and state["watchdog_ms"] is None
        with pytest.raises(ShimError, match="not in watchdog mode"):
            Controller(sock).open()
        assert command(sock, "withdraw")["state"] == "withdrawn"
        assert command(sock, "announce")["state"] == "announced"  # anyone, in static mode
    finally:
        assert fake.close() == 0


def test_shim_exits_when_exabgp_closes_its_stdin(shim) -> None:
    fake, _ = shim
    assert fake.close() == 0
    assert "ExaBGP closed our stdin: exiting" in fake.log()


def test_watchdog_ms_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lab.sites.speaker.api", "--control", str(tmp_path / "s"),
         "--watchdog-ms", "5"], capture_output=True, text=True, cwd=ROOT, timeout=30,
        check=False)
    assert result.returncode == 2 and "--watchdog-ms must be between" in result.stderr



# --- the beat cell: the watchdog fed without a line ---------------------------


def test_a_beat_that_stops_is_withdrawn_after_the_watchdog(shim) -> None:
    fake, sock = shim
    ctl = Controller(sock, beat=True)
    ctl.open()
    assert ctl.command("announce", timeout=5)["ok"]
    ctl.keepalive_if_due(early=1.0)  # one last beat, then silence
    last = time.monotonic()
    before = fake.count("withdraw route")
    assert fake.wait_count("withdraw route", before + 2, timeout=2)
    took = fake.first_after(last, "withdraw route")
    assert took is not None and took - last >= 0.19  # never before the watchdog
    assert wait_until(lambda: "no line from the controller for 200 ms (nor a beat)"
                      in fake.log(), 2)
    # The shim hung up; a controller that only beats learns it from its socket.
    assert ctl.sock is not None
    assert select.select([ctl.sock], [], [], 2)[0]
    with pytest.raises(ShimError, match="closed the connection"):
        ctl.check_closed()
    assert not ctl.connected


def _control_beat(sock: Path, fds: list[int]) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(sock))
        socket.send_fds(s, [b"control beat\n"], fds)
        data = b""
        while not data.endswith(b"\n"):
            data += s.recv(4096)
    return json.loads(data)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_control_beat_refuses_what_is_not_a_sealed_cell(shim) -> None:
    fake, sock = shim
    fds_before = _open_fds(fake.proc.pid)
    refused = _control_beat(sock, [])
    assert refused["ok"] is False and "no descriptor" in refused["detail"]
    r, w = os.pipe()
    unsealed = os.memfd_create("unsealed", os.MFD_CLOEXEC)
    os.ftruncate(unsealed, 8)
    try:
        refused = _control_beat(sock, [r])
        assert refused["ok"] is False and "must be a file" in refused["detail"]
        # A cell that could shrink under the shim's mapping would kill it with SIGBUS.
        refused = _control_beat(sock, [unsealed])
        assert refused["ok"] is False and "sealed against shrinking" in refused["detail"]
        # Extra descriptors with a line are closed, never kept.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(sock))
            socket.send_fds(s, [b"state\n"], [r, w, unsealed])
            assert json.loads(s.recv(4096))["ok"] is True
    finally:
        for fd in (r, w, unsealed):
            os.close(fd)
    assert wait_until(lambda: _open_fds(fake.proc.pid) == fds_before, 2)
    assert command(sock, "state")["controller"] is False  # nobody took control

# --- the ExaBGP channel alone, on pipes ---------------------------------------


@pytest.fixture
def pipes() -> Iterator[tuple[ExaBGPChannel, int, int]]:
    ack_r, ack_w = os.pipe()  # ExaBGP -> shim
    out_r, out_w = os.pipe()  # shim -> ExaBGP
    yield ExaBGPChannel(ack_r, out_w), ack_w, out_r
    for fd in (ack_r, ack_w, out_r, out_w):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_channel_times_out_and_drops_a_late_ack(pipes, capsys) -> None:
    channel, ack_w, out_r = pipes
    started = time.monotonic()
    assert channel.send(["withdraw route 1"], timeout=0.05) == ["timeout"]
    assert 0.05 <= time.monotonic() - started < 2.0
    assert os.read(out_r, 100) == b"withdraw route 1\n"
    os.write(ack_w, b"done\n")  # the late ack of the line above
    channel.read_unsolicited()  # the loop calls this when stdin is readable
    assert "unexpected line from ExaBGP (late ack?): 'done'" in capsys.readouterr().err
    os.write(ack_w, b"error\n")
    assert channel.send(["withdraw route 2"], timeout=1) == ["error"]


def test_channel_reports_shutdown(pipes) -> None:
    channel, ack_w, _ = pipes
    os.write(ack_w, b"done\nshutdown\n")
    assert channel.send(["a", "b"], timeout=1) == ["done", "shutdown"]
    assert channel.closed
    assert channel.send(["c"]) == ["shutdown"]


def test_state_answer_is_json_with_since(shim) -> None:
    _, sock = shim
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(sock))
        s.sendall(b"state\nbogus\n")
        data = b""
        while data.count(b"\n") < 2:
            data += s.recv(4096)
    state, bogus = (json.loads(x) for x in data.splitlines())
    assert state["ok"] is True and isinstance(state["since"], float)
    assert bogus["ok"] is False and "unknown command" in bogus["detail"]
