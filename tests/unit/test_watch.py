"""`watch`'s pure parts: the site letters, the history strip, which samples are settled,
the events a client's answers give, a health daemon's log lines, and a frame rendered
from a snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO

from rich.console import Console

from lab.cli.watch import render, save_frame
from lab.observe import watch as w
from probes.dns import Sample


def test_site_letters_are_distinct() -> None:
    assert w.site_symbols(["ams", "nyc", "sin"]) == {"ams": "A", "nyc": "N", "sin": "S"}
    letters = w.site_symbols(["sto", "syd", "sel", "s1"])
    assert letters == {"sto": "S", "syd": "Y", "sel": "E", "s1": "1"}
    many = w.site_symbols([f"a{i}" for i in range(30)])
    assert len(set(many.values())) == 30


def test_strip_buckets_oldest_first() -> None:
    now = 100.0
    history = [(now - 9.9, "ams"), (now - 9.8, "ams"),  # first bucket
               (now - 5.2, None), (now - 5.1, None), (now - 5.05, "ams"),  # mostly lost
               (now - 0.1, "nyc")]  # last bucket
    out = w.strip(history, now, {"ams": "A", "nyc": "N"}, span_s=10.0, bucket_s=0.5)
    assert len(out) == 20
    assert out[0] == "A" and out[-1] == "N" and out[9] == "x"
    assert out[1:9] == " " * 8
    assert w.strip([(now - 11, "ams")], now, {"ams": "A"}, 10.0, 0.5) == " " * 20


def test_settled_stops_at_the_first_pending_query() -> None:
    samples = [Sample(0, 1.0, 1.0, "ams"), Sample(1, 1.1, None, None, "timeout"),
               Sample(2, 1.2), Sample(3, 1.3, 1.0, "ams")]
    assert w.settled(samples, now=1.25, timeout_s=0.25) == 2  # #2 may still be answered
    assert w.settled(samples, now=1.5, timeout_s=0.25) == 4  # #2 is past its timeout


def _watcher() -> w.Watcher:
    """A Watcher without a lab: only its client bookkeeping is used."""
    watcher = w.Watcher.__new__(w.Watcher)
    watcher.events = w.deque(maxlen=w.MAX_EVENTS)
    watcher.seq = 0
    watcher._lock = w.threading.Lock()
    watcher._mono_to_wall = 0.0
    return watcher


def test_client_answers_become_events() -> None:
    watcher = _watcher()
    p = w._Probe("c-eu", "ipv4", "ns", "203.0.113.53")
    answers = ["ams", "ams", None, None, "nyc", "nyc", None, "nyc", "ams"]
    for i, site in enumerate(answers):
        watcher._client_change(p, Sample(i, 1000.0 + i, 1.0 if site else None, site,
                                         None if site else "refused"))
    events, seq = watcher.events_since(0)
    assert seq == 5
    assert [(e.kind, e.text) for e in events] == [
        ("lost", "c-eu ipv4: no answer (refused), was ams"),
        ("moved", "c-eu ipv4: ams -> nyc after 2 lost"),
        ("lost", "c-eu ipv4: no answer (refused), was nyc"),
        ("answered", "c-eu ipv4: answered by nyc again after 1 lost"),
        ("moved", "c-eu ipv4: nyc -> ams")]
    assert watcher.events_since(seq) == ([], 5)


def test_health_log_lines() -> None:
    assert w.health_line("ams", '{"event": "check", "check": "dns", "old": "up", '
                                '"new": "down"}') == "ams: dns check up -> down"
    assert w.health_line("ams", '{"event": "action", "action": "withdraw", "ok": true}') \
        == "ams: healthd sent withdraw"
    assert w.health_line("ams", '{"event": "other"}') is None
    assert w.health_line("ams", "not json") is None


def test_a_frame_shows_clients_sites_and_events() -> None:
    frame = {"lab": "t", "clients": {"c-eu": {
        "ipv4": {"site": "nyc", "rtt_ms": 2.5, "lost_last_s": 3, "history": "AAxN"},
        "ipv6": {"site": None, "rtt_ms": None, "lost_last_s": 10, "history": "AAxx"}}},
        "sites": {"ams": {"health": "down", "announced": False,
                          "reason": "withdrawn: dns check down", "faults": ["dns"]},
                  "nyc": {"health": "up", "announced": True, "reason": "announced: healthy",
                          "faults": []}}}
    events = [w.WatchEvent(0.0, "moved", "c-eu ipv4", "c-eu ipv4: ams -> nyc")]
    console = Console(file=StringIO(), width=160, color_system=None)
    console.print(render(frame, events, {"ams": "A", "nyc": "N"}, {"c-eu": ["ams"]}, 0.0))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "nyc (moved) 2.5 ms" in text and "no answer" in text and "AAxN" in text
    assert "withdrawn: dns check down" in text and "NO" in text
    assert "c-eu ipv4: ams -> nyc" in text


def test_a_frame_saved_as_svg(tmp_path) -> None:
    frame = {"lab": "t", "clients": {}, "sites": {}}
    path = tmp_path / "f.svg"
    save_frame(render(frame, [], {}, {}, 0.0), path, "watch")
    text = path.read_text()
    assert text.startswith("<svg") and "reading" in text  # the sites table's placeholder


def test_snapshot_must_be_svg_and_is_checked_before_root(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "lab", "watch", "--snapshot",
                             str(tmp_path / "f.png"), "--json"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "give a path ending in .svg" in json.loads(result.stdout)["error"]["message"]
