"""The local replay of a containerlab export (see replay.py): the default lab exported (one
host; the clabernetes variant; three hosts joined by VXLAN), built from the written
topology files as containerlab would build it (a namespace, an init and binds per node,
veths per link, VXLAN between hosts), each node's exec list run in order inside it (node
after node; on three hosts all nodes at once, as hosts deploy independently); then
checked as `up` checks a lab: every client at its expected site on both families; one
fault (a site's DNS server killed) moves its client to the failover site, and re-running
that node's exec list (what clabernetes does after recreating a link) heals it. Nothing
of the replay is left, and the root namespace is unchanged."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lab.export.plan import plan_export
from lab.export.write import write_export
from lab.model.plan import build_plan
from lab.observe.converge import wait_converged
from lab.observe.routing import client_sites
from lab.ops import tokenstore
from lab.ops.lifecycle import validated
from lab.render import credentials
from lab.shared import https, revocation

from ..prerequisites import missing_tools, skip_or_fail
from .helpers import DEFAULT, EXPECTED, FAILOVER, root_snapshot, unique_name, wait_for
from .replay import Replay


def _ok(results) -> None:
    failed = [r for r in results if r.returncode != 0]
    assert not failed, (f"{failed[0].node}: `{failed[0].command[:120]}` exited "
                        f"{failed[0].returncode}: {failed[0].output}")


def _identity(plan, view: Path, site) -> dict:
    """What a site's introspection service says it holds of the issuer (/identity), asked
    from inside the site's node over TLS checked against the exported lab CA."""
    answer = https.request(str(site.interfaces[0].v4.ip), 443, "GET", "/identity",
                           ca_file=credentials.paths(view).ca_cert,
                           server_name=credentials.SERVICE_NAME, netns=site.netns)
    assert answer.status == 200 and isinstance(answer.body, dict), answer.status
    return answer.body


def _answers(plan) -> dict[str, tuple[str | None, str | None]]:
    got = client_sites(plan, timeout=0.3)
    return {c: (f["v4"].site, f["v6"].site) for c, f in got.items()}


# What the replay itself runs, and what the exec lists run besides the lab's tools.
REPLAY_TOOLS = ["nsenter", "unshare", "mount", "ip", "flock", "setsid", "timeout", "base64"]
VARIANTS = {"one-host": {}, "clabernetes": {"clabernetes": True},
            "three-hosts-vxlan": {"host_count": 3}}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_an_exported_lab_replayed_locally_works_fails_over_and_heals(
        tmp_path: Path, variant: str) -> None:
    missing = missing_tools(REPLAY_TOOLS)
    if missing:
        skip_or_fail(f"the replay needs {', '.join(missing)}")
    before = root_snapshot()
    topo = validated(DEFAULT, name=unique_name("rp"))
    export = plan_export(topo, **VARIANTS[variant])
    out = tmp_path / "export"
    write_export(export, out)
    replay = Replay(out, tmp_path)
    assert set(replay.nodes) == set(export.nodes)
    if variant.startswith("three-hosts"):
        assert len(replay.docs) == 3 and len(set(replay.host_addresses().values())) == 3
    try:
        replay.build()
        # `up`'s order: routers, the issuer, sites, clients (every node, none left out).
        roles = ("router", "issuer", "site", "client")
        order = [n for role in roles for n in export.nodes.values() if n.role == role]
        assert len(order) == len(export.nodes) and "issuer" in export.nodes
        started = time.monotonic()
        ran = []
        if variant.startswith("three-hosts"):
            # Hosts deploy independently: every node's exec list at once, in no order.
            with ThreadPoolExecutor(max_workers=len(order)) as pool:
                for results in pool.map(lambda n: replay.run_exec(n.name), reversed(order)):
                    ran += results
            how = "all at once"
        else:
            for node in order:
                ran += replay.run_exec(node.name)
                _ok(ran)
            how = "one node after the other"
        _ok(ran)
        print(f"replay: every exec list ran in {time.monotonic() - started:.1f} s, {how}; "
              "slowest commands: " + "; ".join(
                  f"{r.node} {r.seconds:.1f} s {r.command[:60]}"
                  for r in sorted(ran, key=lambda r: -r.seconds)[:4]))

        # Checked as `up` checks: the plan with the replay's namespace names, the lab
        # directory seen through each node's init.
        plan = build_plan(topo)
        for node in plan.nodes.values():
            node.netns = replay.netns_of(node.name)
        notes: list[str] = []
        waited = wait_converged(topo, plan, replay.view, 60.0, notes.append)
        print(f"replay: converged {waited:.2f} s after the last exec list")
        assert _answers(plan) == {c: (s, s) for c, s in EXPECTED.items()}
        if variant.startswith("three-hosts"):  # the routers' sessions ran through VXLAN
            received = replay.vxlan_received()
            assert len(received) == 6 and all(received.values()), received

        # Identity as at `up`: every site replicates the exported issuer's keys and list,
        # and a revocation at the issuer reaches every site's list (each replaces its file).
        for site in plan.by_role("site"):
            state = _identity(plan, replay.view, site)
            assert state["replicated"] and state["revocation"]["ever_synced"], state
            assert state["kids"] == state["issuer_kids"] and state["kids"], state
        revoked = tokenstore.revoke_via_issuer(replay.view, plan, f"replay-{replay.run_id}")
        assert revoked["added"] and revoked["version"] == 2, revoked
        assert all(ms is not None for ms in revoked["propagated_ms"].values()), revoked
        assert set(revoked["versions"].values()) == {2}, revoked
        print(f"replay: a revocation at the issuer reached every site in "
              f"{max(revoked['propagated_ms'].values()):.0f} ms")

        # One fault: ams's Unbound killed; its health daemon withdraws ams.
        unbound = [pid for pid, cmd in replay.processes("ams").items()
                   if cmd.startswith("/usr/sbin/unbound ")]
        assert len(unbound) == 1
        os.kill(unbound[0], signal.SIGKILL)
        killed = time.monotonic()
        moved = ("c-eu", (FAILOVER["c-eu"], FAILOVER["c-eu"]))
        wait_for(lambda: _answers(plan).get(moved[0]) == moved[1], 20,
                 message=f"c-eu answered by {FAILOVER['c-eu']} after ams's DNS was killed")
        print(f"replay: c-eu at {FAILOVER['c-eu']} {time.monotonic() - killed:.2f} s after "
              "ams's Unbound was killed")

        # Heal: ams's exec list again, as it is: it starts only what is not running.
        running = {p: c for p, c in replay.processes("ams").items()}
        healing = time.monotonic()
        _ok(replay.run_exec("ams"))
        wait_converged(topo, plan, replay.view, 60.0, notes.append)
        print(f"replay: healed (exec list again, converged) in "
              f"{time.monotonic() - healing:.2f} s")
        assert _answers(plan) == {c: (s, s) for c, s in EXPECTED.items()}
        after = replay.processes("ams")
        assert set(running) <= set(after), "re-running the exec list restarted a daemon"
        assert sum(c.startswith("/usr/sbin/unbound ") for c in after.values()) == 1

        # Every other node's exec list is idempotent too: nothing restarts, still converged;
        # the issuer keeps its revocation list (the revocation above stays).
        bird_before = replay.processes("r-eu")
        _ok(replay.run_exec("r-eu"))
        assert replay.processes("r-eu") == bird_before
        issuer_before = replay.processes("issuer")
        _ok(replay.run_exec("issuer"))
        assert replay.processes("issuer") == issuer_before
        sites = {s.name: 2 for s in plan.by_role("site")}
        assert tokenstore.site_versions(replay.view, plan) == sites
        assert revocation.read_revocations(
            replay.view / "nodes" / "issuer" / "revoked.json")[0] == 2
        wait_converged(topo, plan, replay.view, 30.0, notes.append)
    finally:
        removed = replay.teardown()
    hosts = len(replay.docs) + 1 if len(replay.docs) > 1 else 0  # and the underlay
    assert removed["namespaces"] == len(export.nodes) + hosts
    assert replay.leftovers() == {"namespaces": [], "inits": []}
    assert root_snapshot() == before
