"""Bad input to `token` and `measure failover` is one sentence and exit 2 (JSON under --json),
found before any lab is opened or anything measured; the checks behind it, and the unix
socket path check `up` makes before building anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from lab.host import env
from lab.measure.failover import check_plot_path
from lab.model import load_text, names
from lab.model.errors import BadInput, EnvironmentProblem
from lab.model.plan import build_plan
from lab.ops import tokenstore
from lab.render import bfd, bird, exabgp, health
from lab.render.credentials import paths

REPO = Path(__file__).resolve().parents[2]
MINIMAL = REPO / "tests" / "topologies" / "good" / "minimal.yaml"


def run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI with a run directory of its own (empty: no lab is up there)."""
    environ = dict(os.environ, ANYCAST_LAB_RUN_DIR=str(tmp_path / "run"), COLUMNS="200",
                   NO_COLOR="1", TERM="dumb")
    return subprocess.run([sys.executable, "-m", "lab", *argv], capture_output=True, text=True,
                          env=environ, cwd=tmp_path, timeout=60, check=False)


def _one_sentence(result: subprocess.CompletedProcess[str], start: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {start}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("ttl", ["0", "-1", "31536001", "999999999999999999999999"])
def test_token_issue_refuses_a_ttl_out_of_bounds(tmp_path: Path, ttl: str) -> None:
    result = run(tmp_path, "token", "issue", "--client", "c", "--ttl", ttl)
    _one_sentence(result, "--ttl must be between 1 and 31536000 seconds (one year)")


def test_token_issue_ttl_error_under_json(tmp_path: Path) -> None:
    result = run(tmp_path, "token", "issue", "--client", "c", "--ttl", "0", "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)
    assert error["ok"] is False
    assert error["error"]["exit_code"] == 2
    assert error["error"]["message"].startswith("--ttl must be between 1 and 31536000")


def test_a_ttl_in_bounds_gets_as_far_as_looking_for_the_lab(tmp_path: Path) -> None:
    result = run(tmp_path, "token", "issue", "--client", "c", "--ttl", "31536000")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no lab is up")


@pytest.mark.parametrize(("what", "start"), [
    ("", "give the id (jti) of the token to revoke"),
    ("   ", "give the id (jti) of the token to revoke"),
    ("a b", "a token id is 1 to 256 printable characters"),
    ("x" * 300, "a token id is 1 to 256 printable characters"),
    ("a.b.c", "that is neither a token id nor a readable token"),
])
def test_token_revoke_refuses_what_is_no_token_id(tmp_path: Path, what: str, start: str) -> None:
    _one_sentence(run(tmp_path, "token", "revoke", what), start)


def test_check_ttl_bounds() -> None:
    assert tokenstore.check_ttl(1) == 1
    assert tokenstore.check_ttl(tokenstore.MAX_TTL_S) == tokenstore.MAX_TTL_S
    for bad in (0, -1, tokenstore.MAX_TTL_S + 1, 10**24):
        with pytest.raises(BadInput):
            tokenstore.check_ttl(bad)


def test_jti_of_a_token_and_of_an_id() -> None:
    assert tokenstore.jti_of(" 0123abcd ") == "0123abcd"
    key = "k" * 32
    assert tokenstore.jti_of(jwt.encode({"jti": "abc123"}, key, algorithm="HS256")) == "abc123"
    with pytest.raises(BadInput, match="no 'jti' claim"):
        tokenstore.jti_of(jwt.encode({"jti": ""}, key, algorithm="HS256"))


def test_token_listing_survives_a_torn_line_and_a_huge_expiry(tmp_path: Path) -> None:
    plan = build_plan(load_text(MINIMAL.read_text()).topology)  # type: ignore[arg-type]
    store = paths(tmp_path).tokens
    store.parent.mkdir(parents=True)
    now = int(time.time())
    store.write_text(json.dumps({"jti": "a1", "sub": "s", "client_id": "c", "scope": "read",
                                 "iat": now, "exp": 10**24}) + "\n"
                     + json.dumps({"jti": "b2", "sub": "s", "client_id": "c", "scope": "read",
                                   "iat": now, "exp": now + 60}) + "\n" + '{"jti": "c3", "su')
    listed = tokenstore.listing(tmp_path, plan)
    assert [t["jti"] for t in listed] == ["a1", "b2"]
    assert tokenstore.expiry_text(listed[0]["exp"]) == str(10**24)
    assert tokenstore.expiry_text(now + 60) == time.strftime("%H:%M:%S",
                                                              time.localtime(now + 60))


def _measure(tmp_path: Path, plot: str, *more: str) -> subprocess.CompletedProcess[str]:
    return run(tmp_path, "measure", "failover", "--site", "s1", "--fault", "dns", "--plot",
               plot, *more)


def test_measure_refuses_bad_plot_paths_before_measuring(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    cases = {
        "/proc/nope/x.png": "--plot /proc/nope/x.png: the directory /proc/nope does not exist",
        str(tmp_path / "nodir" / "x.png"): f"--plot {tmp_path / 'nodir' / 'x.png'}: the "
                                           "directory",
        str(tmp_path / "x.txt"): f"--plot {tmp_path / 'x.txt'}: the timeline is a PNG",
        str(tmp_path / "dir.png"): f"--plot {tmp_path / 'dir.png'} is a directory",
        str(tmp_path): f"--plot {tmp_path} is a directory",
        "/proc/x.png": "--plot /proc/x.png: cannot create a file in /proc",
    }
    for plot, start in cases.items():
        _one_sentence(_measure(tmp_path, plot), start)


def test_measure_plot_error_under_json(tmp_path: Path) -> None:
    result = _measure(tmp_path, "/proc/nope/x.png", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["message"].startswith("--plot /proc/nope/x.png")


def test_a_good_plot_path_is_checked_without_leaving_a_file(tmp_path: Path) -> None:
    target = tmp_path / "timeline.PNG"
    assert check_plot_path(target) == target
    assert not target.exists()
    target.write_bytes(b"old")
    assert check_plot_path(target) == target  # an existing file is overwritten later
    assert target.read_bytes() == b"old"
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="exists and is not a regular file"):
        check_plot_path(fifo)
    assert check_plot_path(None) is None


def test_socket_names_are_the_ones_the_daemons_use(tmp_path: Path) -> None:
    topo = load_text(MINIMAL.read_text()).topology
    assert topo is not None
    plan = build_plan(topo)
    site = plan.nodes["s1"]
    d_router, d_site = names.node_dir(tmp_path, "r1"), names.node_dir(tmp_path, "s1")
    sockets = set(env.socket_paths(tmp_path, plan))
    argv = bird.bird_spec(topo, plan, plan.nodes["r1"], d_router).argv
    assert Path(argv[argv.index("-s") + 1]) == names.bird_socket(tmp_path, "r1")
    assert names.bird_socket(tmp_path, "r1") in sockets
    assert names.speaker_socket(tmp_path, "s1") in sockets
    assert str(names.speaker_socket(tmp_path, "s1")) in exabgp.api_argv(plan, site, d_site,
                                                                         "py", 300)
    pki = paths(tmp_path)
    assert Path(health.health_config(topo, plan, site, d_site, pki)["shim_socket"]) in sockets
    argv = bfd.bfd_spec(topo, plan, site, d_site).argv
    assert Path(argv[argv.index("-s") + 1]) == names.bfd_socket(tmp_path, "s1")
    assert names.bfd_socket(tmp_path, "s1") in sockets
    assert len(sockets) == len(plan.by_role("router")) + 2 * len(plan.by_role("site"))


def _plan_with_long_names():
    text = MINIMAL.read_text().replace("name: bad", f"name: {'l' * 24}").replace(
        "s1", "site-fifteen-ch")
    topo = load_text(text).topology
    assert topo is not None, text
    return build_plan(topo)


def test_socket_paths_at_the_limit_pass_and_one_byte_more_fails(tmp_path: Path) -> None:
    plan = _plan_with_long_names()
    # <root>/<24-char lab>/nodes/site-fifteen-ch/speaker.sock: 60 bytes after the root.
    tail = len(f"/{'l' * 24}/{names.NODES}/site-fifteen-ch/{names.SPEAKER_SOCK}")
    root = Path("/" + "r" * (env.MAX_SOCKET_PATH - tail - 1))
    env.check_socket_paths(root / plan.lab, plan)
    longer = Path(str(root) + "r")
    with pytest.raises(EnvironmentProblem) as caught:
        env.check_socket_paths(longer / plan.lab, plan)
    message = caught.value.message
    assert message.startswith(f"the run directory {longer} is too long for the lab's unix "
                              "sockets")
    assert f"would be {env.MAX_SOCKET_PATH + 1} bytes" in message
    assert f"at most {len(str(root))} bytes for this lab" in message
    assert "\n" not in message


def test_messages_quoting_input_are_never_read_as_markup(tmp_path: Path) -> None:
    """Brackets in a path or a message ([r1, r2], [/]) are printed as they are."""
    _one_sentence(_measure(tmp_path, "/tmp/[/]/x.png"),
                  "--plot /tmp/[/]/x.png: the directory /tmp/[/] does not exist")
    case = REPO / "tests" / "topologies" / "bad" / "link-endpoints-not-a-list.yaml"
    result = run(tmp_path, "validate", str(case))
    assert result.returncode == 2
    assert "such as [r1, r2] (got 'r1-r2')" in result.stderr
    odd = tmp_path / "[red]odd.yaml"
    odd.write_text("name: [/]\n")
    result = run(tmp_path, "validate", str(odd))
    assert result.returncode == 2, result.stderr
    assert f"{odd}: 3 problem(s)" in result.stderr and "Traceback" not in result.stderr
