"""The BIRD control-socket client against a fake BIRD: a unix-socket server speaking BIRD's
framing (greeting, `restrict`, `NNNN-` lines that continue, `NNNN ` lines that end, ` `
continuation lines, `+` spontaneous printouts, 8xxx/9xxx errors), and servers that go
wrong: no socket, refused, silent, closing, trickling, oversized."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.host import birdctl
from lab.host.birdctl import (
    BirdClient,
    Birds,
    BirdUnavailable,
    ask,
    parse_best_route,
    parse_protocols,
    parse_route_count,
)
from lab.model import names

GREETING = "0001 BIRD 2.0.12 ready.\n"
RESTRICTED = "0016 Access restricted\n"
SILENT = "silent"   # read the command, never answer
CLOSE = "close"     # read the command, close the connection

PROTOCOLS = (
    "2002-Name       Proto      Table      State  Since         Info\n"
    "1002-site_ams   BGP        ---        up     17:11:02.246  Established   \n"
    " r_r_us_4   BGP        ---        start  17:11:02.246  Active        Socket: "
    "Connection refused\n"
    "+spontaneous: a log line nobody asked for\n"
    "1002-r_r_us_6   BGP        ---        up     17:11:02.246  Established   \n"
    "0000 \n"
)
STATUS = (
    "1000-BIRD 2.0.12\n"
    "1011-Router ID is 100.64.0.0\n"
    " Current server time is 2024-01-01 00:00:00.000\n"
    "0013 Daemon is up and running\n"
)
NOT_FOUND = "8001 Network not found\n"


class FakeBird:
    """BIRD's control socket at `path`: greets (unless `greet` is off), answers `restrict`
    with `restrict_reply`, then each command from `answers` (raw text, or SILENT, CLOSE);
    a command it does not know gets BIRD's parse error. Records what it was sent."""

    def __init__(self, path: Path, answers: dict[str, str], greet: bool = True,
                 restrict_reply: str = RESTRICTED) -> None:
        self.path, self.answers = path, answers
        self.greet, self.restrict_reply = greet, restrict_reply
        self.received: list[str] = []
        self.connections = 0
        self._open: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as lines:
                if self.greet:
                    conn.sendall(GREETING.encode())
                for raw in lines:
                    command = raw.decode().rstrip("\n")
                    self.received.append(command)
                    answer = (self.restrict_reply if command == "restrict"
                              else self.answers.get(command, "9001 syntax error\n"))
                    if answer == CLOSE:
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    if answer != SILENT:
                        conn.sendall(answer.encode())
        except OSError:
            return

    def drop_connections(self) -> None:
        """What a BIRD restart does to its clients' connections."""
        for conn in self._open:
            with contextlib.suppress(OSError):  # already closed by its own handler
                conn.shutdown(socket.SHUT_RDWR)
        self._open.clear()

    def close(self) -> None:
        self._listener.close()
        self.drop_connections()


@pytest.fixture
def ctl(tmp_path: Path) -> Path:
    return tmp_path / names.BIRD_CTL


@pytest.fixture
def bird(ctl: Path) -> Iterator[FakeBird]:
    server = FakeBird(ctl, {"show protocols": PROTOCOLS, "show status": STATUS,
                            "show route for 192.0.2.1/32 all": NOT_FOUND,
                            "silent": SILENT, "close": CLOSE})
    yield server
    server.close()


# --- answers ----------------------------------------------------------------------------

def test_a_multi_line_reply_reads_as_birdc_prints_it(bird: FakeBird, ctl: Path) -> None:
    reply = ask(ctl, "show protocols")
    assert reply.code == 0 and reply.ok and not reply.not_found
    assert reply.text == (
        "Name       Proto      Table      State  Since         Info\n"
        "site_ams   BGP        ---        up     17:11:02.246  Established   \n"
        "r_r_us_4   BGP        ---        start  17:11:02.246  Active        Socket: "
        "Connection refused\n"
        "r_r_us_6   BGP        ---        up     17:11:02.246  Established   \n")
    # The continuation line carries the code of the line it continues; the spontaneous
    # printout is no part of the reply.
    assert [code for code, _ in reply.lines] == [2002, 1002, 1002, 1002, 0]
    assert "spontaneous" not in reply.text
    assert {p.name: p.state for p in parse_protocols(reply.text)} == {
        "site_ams": "up", "r_r_us_4": "start", "r_r_us_6": "up"}


def test_every_connection_is_restricted_before_the_first_command(bird: FakeBird,
                                                                 ctl: Path) -> None:
    ask(ctl, "show status")
    assert bird.received == ["restrict", "show status"]


def test_the_reply_ends_at_its_last_code_line(bird: FakeBird, ctl: Path) -> None:
    reply = ask(ctl, "show status")
    assert reply.code == 13 and reply.message == "Daemon is up and running"
    assert reply.text.splitlines() == ["BIRD 2.0.12", "Router ID is 100.64.0.0",
                                       "Current server time is 2024-01-01 00:00:00.000",
                                       "Daemon is up and running"]


def test_network_not_found_is_an_answer_not_an_outage(bird: FakeBird, ctl: Path) -> None:
    reply = ask(ctl, "show route for 192.0.2.1/32 all")
    assert reply.not_found and not reply.ok and reply.code == 8001
    assert reply.message == "Network not found"
    assert parse_best_route(reply.text, "192.0.2.1/32") is None


def test_a_parse_error_is_an_error_reply(bird: FakeBird, ctl: Path) -> None:
    reply = ask(ctl, "show nonsense")
    assert reply.code == 9001 and not reply.ok and reply.message == "syntax error"


def test_one_connection_serves_many_questions(bird: FakeBird, ctl: Path) -> None:
    with BirdClient(ctl) as client:
        for _ in range(5):
            assert client.ask("show status").code == 13
        assert client.ask("show protocols").code == 0
    assert bird.connections == 1
    assert bird.received == ["restrict"] + ["show status"] * 5 + ["show protocols"]


def test_a_command_is_one_line(bird: FakeBird, ctl: Path) -> None:
    with pytest.raises(ValueError):
        ask(ctl, "show status\nconfigure")


# --- BIRD not answering -------------------------------------------------------------------

def test_no_socket_is_bird_unavailable(ctl: Path) -> None:
    with pytest.raises(BirdUnavailable) as caught:
        ask(ctl, "show status")
    assert "no control socket" in caught.value.reason and caught.value.ctl == ctl


def test_a_socket_nobody_listens_on_is_refused(ctl: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(ctl))  # bound, never listening: what a dead BIRD leaves behind
    try:
        with pytest.raises(BirdUnavailable) as caught:
            ask(ctl, "show status")
        assert "refuses connections" in caught.value.reason
    finally:
        dead.close()


def test_a_bird_that_never_greets_times_out(ctl: Path) -> None:
    server = FakeBird(ctl, {}, greet=False)
    try:
        with pytest.raises(BirdUnavailable) as caught:
            ask(ctl, "show status", timeout_s=0.2)
        assert "no answer within 0.2 s" in caught.value.reason
    finally:
        server.close()


def test_a_silent_answer_times_out_and_the_next_question_gets_a_new_connection(
        bird: FakeBird, ctl: Path) -> None:
    with BirdClient(ctl, timeout_s=0.2) as client:
        with pytest.raises(BirdUnavailable) as caught:
            client.ask("silent")
        assert "no answer within" in caught.value.reason
        # The half-read connection is dropped: the next answer is not the late one.
        assert client.ask("show status").code == 13
    assert bird.connections == 2


def test_a_trickled_partial_line_times_out(ctl: Path) -> None:
    server = FakeBird(ctl, {"show status": "1000-BIRD 2.0"})  # no end of line, ever
    try:
        with pytest.raises(BirdUnavailable) as caught:
            ask(ctl, "show status", timeout_s=0.2)
        assert "no answer within" in caught.value.reason
    finally:
        server.close()


def test_a_closed_connection_mid_question_is_unavailable(bird: FakeBird, ctl: Path) -> None:
    with pytest.raises(BirdUnavailable) as caught:
        ask(ctl, "close")
    assert "closed" in caught.value.reason


def test_a_restarted_bird_is_reconnected_once(bird: FakeBird, ctl: Path) -> None:
    with BirdClient(ctl) as client:
        assert client.ask("show status").code == 13
        bird.drop_connections()
        assert client.ask("show status").code == 13
    assert bird.connections == 2


def test_a_bird_that_will_not_restrict_is_not_used(ctl: Path) -> None:
    server = FakeBird(ctl, {"show status": STATUS}, restrict_reply="9001 syntax error\n")
    try:
        with pytest.raises(BirdUnavailable) as caught:
            ask(ctl, "show status")
        assert "refused to restrict" in caught.value.reason
        assert "show status" not in server.received
    finally:
        server.close()


def test_an_oversized_answer_is_refused(monkeypatch: pytest.MonkeyPatch, ctl: Path) -> None:
    monkeypatch.setattr(birdctl, "MAX_REPLY_BYTES", 64)
    server = FakeBird(ctl, {"show route all": "1007-" + "x" * 40 + "\n" + "1007-y\n" * 10
                            + "0000 \n"})
    try:
        with pytest.raises(BirdUnavailable) as caught:
            ask(ctl, "show route all")
        assert "larger than 64 bytes" in caught.value.reason
    finally:
        server.close()


# --- the lab's BIRDs ----------------------------------------------------------------------

def test_birds_keep_one_connection_per_router_and_remember_who_did_not_answer(
        tmp_path: Path) -> None:
    ctl = names.bird_socket(tmp_path, "r-eu")
    ctl.parent.mkdir(parents=True)
    server = FakeBird(ctl, {"show status": STATUS})
    try:
        with Birds(tmp_path, timeout_s=0.5) as birds:
            assert birds.ask("r-eu", "show status").code == 13
            assert birds.ask("r-eu", "show status").code == 13
            for _ in range(2):
                with pytest.raises(BirdUnavailable):
                    birds.ask("r-us", "show status")  # no socket: r-us's BIRD is not up
            assert set(birds.unavailable) == {"r-us"}
            assert "no control socket" in birds.unavailable["r-us"].reason
        assert server.connections == 1
    finally:
        server.close()


# --- route counts -------------------------------------------------------------------------

def test_route_count_reads_the_total_over_several_tables() -> None:
    text = ("1 of 19 routes for 10 networks in table master4\n"
            "1 of 19 routes for 10 networks in table master6\n"
            "Total: 2 of 38 routes for 20 networks in 2 tables\n")
    assert parse_route_count(text) == 2


def test_route_count_of_one_table_and_of_no_count() -> None:
    assert parse_route_count("0 of 19 routes for 10 networks in table master4\n") == 0
    assert parse_route_count("Network not found\n") is None
    assert parse_route_count("") is None
