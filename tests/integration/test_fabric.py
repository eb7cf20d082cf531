"""The fabric of a real lab — links work, the root namespace is untouched,
teardown leaves nothing, also after `up` was SIGKILLed at several points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab.host.fabric import create_namespace, netlink_in, remove_namespace, write_sysctls
from lab.host.journal import Journal
from lab.host.procs import run_in
from lab.model.names import netns_name

from .helpers import (
    DEFAULT,
    NO_TRACES,
    ROOT,
    lab_cli,
    leftovers,
    nothing_left,
    root_snapshot,
    traces_of,
    unique_name,
    wait_for,
)


def test_every_link_end_pings_the_other(default_lab):
    plan = default_lab.plan
    failures = []
    for link in plan.links:
        a, b = plan.nodes[link.a], plan.nodes[link.b]
        ia, ib = a.iface(b.name), b.iface(a.name)
        for src, dst in ((a, ib.v4.ip), (b, ia.v4.ip), (a, ib.v6.ip), (b, ia.v6.ip)):
            result = run_in(src.netns, ["ping", "-c", "1", "-W", "1", "-n", str(dst)])
            if result.returncode != 0:
                failures.append(f"{src.name} -> {dst}")
    assert failures == []


def test_namespaces_have_lab_sysctls(default_lab):
    router = default_lab.plan.by_role("router")[0]
    client = default_lab.plan.by_role("client")[0]
    read = ["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
            "net.ipv6.conf.all.accept_dad"]
    assert run_in(router.netns, read).stdout.split() == ["1", "0", "0"]
    assert run_in(client.netns, read).stdout.split() == ["0", "0", "0"]


def test_site_has_anycast_on_lo(default_lab):
    site = default_lab.plan.by_role("site")[0]
    out = run_in(site.netns, ["ip", "-br", "addr", "show", "dev", "lo"]).stdout
    assert "203.0.113.53/32" in out and "2001:db8:53::53/128" in out


def test_up_down_leaves_root_namespace_and_machine_as_before(make_lab):
    before = root_snapshot()
    lab = make_lab()
    lab.up()
    assert not nothing_left(lab.name, lab.dir)
    result = lab_cli("down", "--lab", lab.name)
    assert result.returncode == 0, result.stderr
    assert leftovers(lab.name, lab.dir) == {"namespaces": [], "processes": [],
                                            "run_dir": False}
    assert root_snapshot() == before


def test_up_twice_reports_already_up(make_lab):
    lab = make_lab()
    lab.up()
    again = lab_cli("up", str(DEFAULT), "--name", lab.name, "--json")
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stderr
    assert json.loads(again.stdout)["lab"] == lab.name


def test_down_with_nothing_up_is_fine():
    name = unique_name("none")
    result = lab_cli("down", "--lab", name)
    assert result.returncode == 0
    assert "nothing to tear down" in result.stdout


# The default lab's journal: 10 namespaces (the issuer's too), 10 links, then an intent and
# a PID for each of its 16 daemons (52 entries). Kill while creating namespaces (1), links
# (11), daemons (21, 28, 38), and after the last daemon, while converging (52).
@pytest.mark.parametrize("kill_after_entries", [1, 11, 21, 28, 38, 52])
def test_down_after_up_was_sigkilled(kill_after_entries):
    """Kill `up` once its journal holds N entries, then `down` must leave nothing."""
    name = unique_name("kill")
    journal = Journal(name)
    before = root_snapshot()
    proc = subprocess.Popen([sys.executable, "-m", "lab", "up", str(DEFAULT), "--name", name],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(journal.entries()) >= kill_after_entries or proc.poll() is not None,
                 timeout=60, interval=0.001, message=f"{kill_after_entries} journal entries")
        assert proc.poll() is None, "up finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert len(journal.entries()) >= kill_after_entries
        result = lab_cli("down", "--lab", name)
        assert result.returncode == 0, result.stderr
        assert leftovers(name, journal.dir) == {"namespaces": [], "processes": [],
                                                "run_dir": False}
        assert root_snapshot() == before
    finally:
        if proc.poll() is None:
            proc.kill()
        if journal.exists():
            lab_cli("down", "--lab", name)


def test_bad_topology_changes_nothing(tmp_path):
    before = root_snapshot()
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT.read_text().replace("router: r-eu, asn: 65100", "router: r9, asn: 1"))
    name = unique_name("bad")
    result = lab_cli("up", str(bad), "--name", name)
    assert result.returncode == 2
    assert "sites.ams.router: unknown router 'r9'" in result.stderr
    assert "Traceback" not in result.stderr
    assert traces_of([name]) == NO_TRACES
    assert root_snapshot() == before


def test_up_refuses_every_bad_topology_of_the_corpus_and_creates_nothing(monkeypatch, capsys):
    """`up` itself (the command line's main, in this process, as root) on every bad file of
    the unit corpus: exit 2 with one sentence, and nothing of the lab it was asked to build
    exists afterwards (no namespace, process, run directory or lock), the root namespace as
    it was. Only this test's lab names are looked for: other labs may come and go."""
    from lab.cli.main import main
    from lab.ops import lifecycle

    corpus = sorted((ROOT / "tests" / "topologies" / "bad").glob("*.yaml"))
    assert len(corpus) >= 25
    before = root_snapshot()
    names: list[str] = []
    try:
        for path in corpus:
            name = unique_name("bad")
            names.append(name)
            monkeypatch.setattr(sys, "argv", ["anycast-lab", "up", str(path), "--name", name])
            with pytest.raises(SystemExit) as exited:
                main()
            err = capsys.readouterr().err
            assert exited.value.code == 2, f"{path.name}: exit {exited.value.code}: {err}"
            assert err.strip() and "Traceback" not in err and "internal error" not in err, \
                f"{path.name}: {err}"
        assert traces_of(names) == NO_TRACES
        assert root_snapshot() == before
    finally:  # had `up` accepted a file, it built a lab: remove it
        for name in names:
            if Journal(name).exists():
                lifecycle.teardown(Journal(name))


def test_down_finds_what_carries_the_markers_when_the_journal_is_gone(tmp_path):
    """A lab whose run directory was deleted by hand: `down --lab NAME` still removes its
    namespaces (named acl.NAME.*) and its processes (ANYCAST_LAB=NAME in their env)."""
    import shutil

    from pyroute2 import netns

    from lab.host import procs

    name = unique_name("orph")
    journal = Journal(name)
    journal.open()
    ns = f"acl.{name}.x"
    journal.record("netns", name=ns, node="x")
    netns.create(ns)
    record = procs.start(journal, name="sleep@x", node="x", netns=ns,
                         argv=["sleep", "120"], log_path=tmp_path / "sleep.log")
    assert procs.is_running(record)
    shutil.rmtree(journal.dir)  # the journal is gone; only the markers remain
    result = lab_cli("down", "--lab", name)
    assert result.returncode == 0, result.stderr
    assert leftovers(name, journal.dir) == {"namespaces": [], "processes": [],
                                            "run_dir": False}


def test_namespaces_made_from_this_thread_leave_it_and_the_root_as_they_were():
    """The fabric makes namespaces, netlink sockets and sysctl writes from its own thread
    (no helper process): afterwards the thread is back in its namespace, the namespace
    got the sysctl and the root namespace did not."""
    name = netns_name(unique_name("ns"), "n1")
    home = os.stat("/proc/thread-self/ns/net").st_ino
    key = Path("/proc/sys/net/ipv4/ip_forward")
    root_before = key.read_text()
    create_namespace(name)
    try:
        assert os.stat("/proc/thread-self/ns/net").st_ino == home
        assert os.stat(f"/run/netns/{name}").st_ino != home
        with pytest.raises(FileExistsError):
            create_namespace(name)
        write_sysctls(name, {"net.ipv4.ip_forward": "1" if root_before.strip() == "0" else "0"})
        assert os.stat("/proc/thread-self/ns/net").st_ino == home
        assert key.read_text() == root_before
        inside = run_in(name, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout
        assert inside.strip() != root_before.strip()
        with netlink_in(name) as ipr:
            assert [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()] == ["lo"]
        assert os.stat("/proc/thread-self/ns/net").st_ino == home
    finally:
        assert remove_namespace(name)
    assert not os.path.exists(f"/run/netns/{name}")
