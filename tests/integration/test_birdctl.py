"""The BIRD client against real BIRD 2 in a real lab: for every question the lab asks, the
text it reads is what `birdc` prints; "no route" is an answer, a frozen BIRD is not, and
`status` says which router's BIRD did not answer while still reading the others."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from lab.host import birdctl, procs
from lab.host.birdctl import BirdClient, BirdUnavailable, fib_route_command, route_count_command
from lab.model import names

from .helpers import lab_cli

V4, V6 = "203.0.113.53/32", "2001:db8:53::53/128"
COMMANDS = ["show protocols", f"show route for {V4} all", f"show route for {V6} all",
            fib_route_command(V4), fib_route_command(V6),
            route_count_command(names.site_protocol("ams")), "show route for 192.0.2.1/32 all"]


# BIRD shows when a route or protocol last changed converted from its monotonic clock to
# wall-clock time afresh for every answer: the same moment can read 1 ms apart.
TIME = re.compile(r"\b\d\d:\d\d:\d\d\.\d{3}\b")


def birdc(ctl: Path, command: str) -> str:
    """birdc's answer without its greeting and the `restrict` acknowledgement."""
    out = subprocess.run(["birdc", "-s", str(ctl), "-r", *command.split()],
                         capture_output=True, text=True, timeout=10, check=False).stdout
    return out.split("Access restricted\n", 1)[1]


def timeless(text: str) -> str:
    return TIME.sub("hh:mm:ss.mmm", text)


@pytest.mark.parametrize("command", COMMANDS)
def test_the_client_reads_what_birdc_prints(default_lab, command):
    for router in default_lab.plan.by_role("router"):
        ctl = names.bird_socket(default_lab.journal.dir, router.name)
        with BirdClient(ctl) as client:
            before = timeless(birdc(ctl, command))
            text = timeless(client.ask(command).text)
            after = timeless(birdc(ctl, command))  # the lab may move on between questions
        assert text in (before, after), (router.name, command)
        assert text.strip(), (router.name, command)  # an answer, not two empty strings


def test_no_route_is_an_answer(default_lab):
    reply = birdctl.ask(names.bird_socket(default_lab.journal.dir, "r-eu"),
                        "show route for 192.0.2.1/32 all")
    assert reply.not_found and reply.message == "Network not found"


def test_a_frozen_bird_is_not_answering_and_status_names_it(make_lab):
    lab = make_lab().up()
    record = procs.running(lab.journal, "bird@r-eu")
    assert record is not None
    ctl = names.bird_socket(lab.journal.dir, "r-eu")
    os.kill(record.pid, signal.SIGSTOP)
    try:
        with pytest.raises(BirdUnavailable) as caught:
            birdctl.ask(ctl, "show status", timeout_s=0.5)
        assert "no answer within" in caught.value.reason
        result = lab_cli("status", "--json", "--lab", lab.name)
        report = json.loads(result.stdout)
        assert result.returncode == 1 and not report["ok"]
        assert any(p.startswith("r-eu: BIRD not answering") for p in report["problems"])
        assert report["routers"]["r-us"]["sessions"]["site_nyc"] == "Established"
        assert set(report["routers"]["r-eu"]["sessions"].values()) == {"down"}
    finally:
        os.kill(record.pid, signal.SIGCONT)
    assert birdctl.ask(ctl, "show status").code == 13  # thawed: it answers again
