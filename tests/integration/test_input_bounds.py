"""`up` refuses input the lab cannot run before it creates anything: a run directory too
long for the lab's unix sockets (exit 3), pools outside unicast space and rates tc cannot
encode (exit 2). At the socket path limit itself a real lab comes up: BIRD and the speaker
shim accept a 107-byte path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from lab.host import env, labs
from lab.host.journal import Journal, lab_dir
from lab.model.plan import build_plan
from lab.ops import lifecycle

from .helpers import ROOT, lab_cli, nothing_left, unique_name

TWO_SITES = ROOT / "topologies" / "two-sites.yaml"


def _root_for_socket_paths(tmp_path: Path, name: str, longest: int) -> Path:
    """A run directory under tmp_path whose lab's longest unix socket path has `longest`
    bytes."""
    plan = build_plan(lifecycle.validated(TWO_SITES, name))
    tail = max(len(os.fsencode(p)) for p in env.socket_paths(Path("/") / name, plan))
    base = tmp_path / "run-"
    pad = longest - tail - len(os.fsencode(base))
    assert 0 < pad < 200, pad
    return Path(f"{base}{'d' * pad}")


def _nothing_created(name: str) -> None:
    assert nothing_left(name, lab_dir(name))


def test_a_run_directory_too_long_for_the_sockets_is_refused_up_front(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    name = unique_name("ib")
    root = _root_for_socket_paths(tmp_path, name, env.MAX_SOCKET_PATH + 1)
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(root))
    result = lab_cli("up", str(TWO_SITES), "--name", name, "--json", timeout=60)
    assert result.returncode == 3, result.stderr[-2000:]
    error = json.loads(result.stdout)["error"]
    assert error["message"].startswith(f"the run directory {root} is too long for the lab's "
                                       "unix sockets")
    assert f"at most {len(os.fsencode(root)) - 1} bytes" in error["message"]
    _nothing_created(name)


def test_a_lab_comes_up_with_socket_paths_at_the_limit(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    name = unique_name("ib")
    root = _root_for_socket_paths(tmp_path, name, env.MAX_SOCKET_PATH)
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(root))
    try:
        result = lab_cli("up", str(TWO_SITES), "--name", name, "--json", timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout)
        assert report["ok"] is True
        # Both kinds of socket answered: BIRD (routers' best paths) and the speaker shim
        # (each site's announcement state).
        assert all(site["announced"] for site in report["sites"].values()), report["sites"]
        lab = labs.open_lab(name)
        assert lab.plan is not None
        sizes = [len(os.fsencode(p)) for p in env.socket_paths(lab.journal.dir, lab.plan)]
        assert max(sizes) == env.MAX_SOCKET_PATH
    finally:
        if Journal(name).exists():
            lifecycle.teardown(Journal(name))
    _nothing_created(name)


@pytest.mark.parametrize(("change", "start"), [
    ({"pools": {"links4": "224.0.0.0/16"}}, "pools.links4: pool 224.0.0.0/16 overlaps"),
    ({"pools": {"links6": "fe80::/48"}}, "pools.links6: pool fe80::/48 overlaps"),
    ({"anycast": {"ipv6": "::ffff:1.2.3.4/128"}}, "anycast.ipv6: '::ffff:1.2.3.4/128' is an "
                                                  "IPv4-mapped address"),
    ({"links": [{"endpoints": ["r-west", "r-east"], "impair": {"rate": "99999999999gbit"}}]},
     "links[0].impair.rate: rate '99999999999gbit' is above"),
])
def test_up_refuses_what_the_kernel_would_refuse(tmp_path: Path, change: dict,
                                                 start: str) -> None:
    data = yaml.safe_load(TWO_SITES.read_text())
    for key, value in change.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    name = unique_name("ib")
    result = lab_cli("up", str(path), "--name", name, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert start in result.stderr and "internal error" not in result.stderr
    _nothing_created(name)
