"""Real faults and their healing: stop or freeze the real process, drop packets with
nftables, take the link down. Never a flag a daemon reads.

Active faults are recorded in <lab dir>/faults.json so `heal` knows what to undo and
`status` can show them.

Healing a process fault makes the daemon run again and waits (bounded) until it is
ready (lab.render.ready): a daemon both frozen and killed is restarted once, a frozen
one is continued, never started a second time beside itself. A fault whose daemon does
not come back ready stays recorded, with what was seen, so `heal` can be tried again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from lab.host import procs
from lab.host.labs import Lab
from lab.host.procs import run_in
from lab.model import names
from lab.model.errors import BadInput, EnvironmentProblem, LabError
from lab.observe.converge import log_tail
from lab.render.base import Readiness
from lab.render.ready import READY_TIMEOUT_S, wait_ready
from lab.shared.wait import wait_until

# fault -> (what it does, in words)
FAULTS: dict[str, str] = {
    "dns": "kill the site's DNS server (Unbound): its port answers 'unreachable'",
    "dns-hang": "freeze the site's DNS server (SIGSTOP): queries time out",
    "introspect": "kill the site's introspection service",
    "introspect-hang": "freeze the site's introspection service (SIGSTOP)",
    "healthd": "kill the site's health daemon (SIGKILL)",
    "healthd-hang": "freeze the site's health daemon (SIGSTOP)",
    "speaker": "kill the site's BGP speaker (ExaBGP, SIGKILL)",
    "speaker-hang": "freeze the site's BGP speaker (SIGSTOP): only the hold timer notices",
    "link": "take the site's link to its router down",
    "blackhole": "silently drop everything on the site's link (nftables)",
}
PROCESS_FAULTS = {"dns": "unbound", "introspect": "introspect", "healthd": "healthd",
                  "speaker": "exabgp"}
# Daemons are brought back in the order `up` starts them: services, speaker, health daemon.
RESTORE_ORDER = ("unbound", "introspect", "exabgp", "healthd")
EXIT_WAIT_S = 2.0  # a SIGKILLed process is gone in milliseconds; its ports with it
NFT_TABLE = "anycast_lab_fault"
BLACKHOLE = """table inet {table} {{
  chain in {{ type filter hook input priority -300; iifname "{ifname}" drop; }}
  chain out {{ type filter hook output priority -300; oifname "{ifname}" drop; }}
}}
"""


def _faults_file(lab: Lab) -> Path:
    return lab.journal.dir / names.FAULTS


def active(lab: Lab) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(_faults_file(lab).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save(lab: Lab, faults: dict[str, dict[str, Any]]) -> None:
    tmp = _faults_file(lab).with_suffix(".tmp")
    tmp.write_text(json.dumps(faults, indent=2))
    os.replace(tmp, _faults_file(lab))


def _site(lab: Lab, site: str):
    assert lab.plan is not None
    node = lab.plan.nodes.get(site)
    if node is None or node.role != "site":
        sites = ", ".join(n.name for n in lab.plan.by_role("site"))
        raise BadInput(f"unknown site '{site}' (sites: {sites})")
    return node


def _process(lab: Lab, site: str, daemon: str) -> procs.ProcessRecord:
    record = procs.running(lab.journal, f"{daemon}@{site}")
    if record is None:
        raise LabError(f"{daemon} is not running at {site}: nothing to fail (see "
                       f"`anycast-lab status`, or `anycast-lab heal {site}`)")
    return record


def inject(lab: Lab, site: str, what: str) -> dict[str, Any]:
    """Inject one fault; returns its record (with the monotonic and wall-clock instant)."""
    node = _site(lab, site)
    if what not in FAULTS:
        raise BadInput(f"unknown fault '{what}' (faults: {', '.join(FAULTS)})")
    key = f"{site}:{what}"
    faults = active(lab)
    if key in faults:
        raise LabError(f"fault '{what}' is already active at {site}: "
                       f"`anycast-lab heal {site} {what}` first")
    base = what.removesuffix("-hang")
    entry: dict[str, Any] = {"site": site, "fault": what}
    if base in PROCESS_FAULTS:
        record = _process(lab, site, PROCESS_FAULTS[base])
        entry["pid"], entry["start_time"] = record.pid, record.start_time
        entry["t_mono"], entry["t"] = time.monotonic(), time.time()
        os.kill(record.pid, signal.SIGSTOP if what.endswith("-hang") else signal.SIGKILL)
    elif what == "link":
        entry["t_mono"], entry["t"] = time.monotonic(), time.time()
        _set_link(node.netns, node.interfaces[0].ifname, "down")
    elif what == "blackhole":
        ifname = node.interfaces[0].ifname
        rules = BLACKHOLE.format(table=NFT_TABLE, ifname=ifname)
        entry["t_mono"], entry["t"] = time.monotonic(), time.time()
        result = run_in(node.netns, ["nft", "-f", "-"], input_text=rules)
        if result.returncode != 0:
            raise EnvironmentProblem(f"nftables refused the blackhole rule: "
                                     f"{result.stderr.strip()}")
    faults[key] = entry
    _save(lab, faults)
    return entry


def heal(lab: Lab, site: str, what: str | None = None,
         ready_timeout_s: float = READY_TIMEOUT_S) -> list[dict[str, Any]]:
    """Undo one fault at a site, or all of them; returns one entry per fault, each with
    `ready` (the daemon runs and passed its readiness check; network faults: undone) and
    `detail` (one sentence). Faults not ready stay recorded."""
    node = _site(lab, site)
    if what is not None and what not in FAULTS:
        raise BadInput(f"unknown fault '{what}' (faults: {', '.join(FAULTS)})")
    faults = active(lab)
    keys = [k for k, f in faults.items() if f["site"] == site and (what is None
                                                                     or f["fault"] == what)]
    by_daemon: dict[str, list[str]] = {}
    network = []
    for key in keys:
        base = faults[key]["fault"].removesuffix("-hang")
        if base in PROCESS_FAULTS:
            by_daemon.setdefault(PROCESS_FAULTS[base], []).append(key)
        else:
            network.append(key)
    healed = []
    # The network first: a restarted speaker's session needs the link to come up.
    for key in network:
        t_mono, t_wall = time.monotonic(), time.time()
        detail = _heal_network(node, faults[key]["fault"])
        healed.append({**faults.pop(key), "healed_t_mono": t_mono, "healed_t": t_wall,
                       "ready": True, "detail": detail})
    for daemon in sorted(by_daemon, key=RESTORE_ORDER.index):
        t_mono, t_wall = time.monotonic(), time.time()
        entries = [faults[k] for k in by_daemon[daemon]]
        ready = _restore(lab, f"{daemon}@{site}", entries, ready_timeout_s)
        for key in by_daemon[daemon]:
            faults[key].pop("heal_failed", None)
            healed.append({**faults[key], "healed_t_mono": t_mono, "healed_t": t_wall,
                           "ready": ready.ok, "detail": ready.detail})
            if ready.ok:
                del faults[key]
            else:
                faults[key]["heal_failed"] = ready.detail
    _save(lab, faults)
    return healed


def _heal_network(node, fault: str) -> str:
    ifname = node.interfaces[0].ifname
    if fault == "link":
        _set_link(node.netns, ifname, "up")
        _restore_default_routes(node)
        return f"link {ifname} up, default routes restored"
    run_in(node.netns, ["nft", "delete", "table", "inet", NFT_TABLE])
    return f"nftables drop on {ifname} removed"


def _gone(entry: dict[str, Any]) -> bool:
    expected = entry.get("start_time")
    now = procs.start_time(entry["pid"])
    return now is None or (expected is not None and now != expected)


def _restore(lab: Lab, name: str, entries: list[dict[str, Any]],
             timeout_s: float) -> Readiness:
    """Make one daemon run again (continue it if frozen, start it if gone; once, however
    many faults name it) and wait until it is ready. The detail is one sentence."""
    assert lab.plan is not None
    for entry in entries:
        if not entry["fault"].endswith("-hang"):  # killed: let it finish dying first
            wait_until(lambda e=entry: _gone(e), EXIT_WAIT_S, interval_s=0.01)
    record = procs.running(lab.journal, name)
    if record is None:
        record, action = procs.restart(lab.journal, name), "restarted"
    elif procs.is_stopped(record.pid):
        os.kill(record.pid, signal.SIGCONT)
        action = "continued"
    else:
        action = "found running"
    ready = wait_ready(lab.plan, lab.journal.dir, record, timeout_s)
    if ready.ok:
        return Readiness(True, f"{name} {action} (PID {record.pid}) and ready: {ready.detail}")
    intent = procs.last_intent(lab.journal, name)
    tail = log_tail(Path(intent["log_path"]), 1) if intent else []
    last = f"; last line of its log: {tail[0].strip()}" if tail else "; its log is empty"
    if ready.final:
        return Readiness(False, f"{name} {action} (PID {record.pid}) but it exited{last}")
    return Readiness(False, f"{name} {action} (PID {record.pid}) but not ready after "
                            f"{timeout_s:g} s: {ready.detail}{last}")


def _restore_default_routes(node) -> None:
    """The kernel flushed the site's default routes when its link went down; without
    them the site, announced again, would swallow its clients' queries."""
    with IPRoute(netns=node.netns, flags=0) as ipr:
        ipr.route("replace", dst="0.0.0.0/0", gateway=str(node.gateway4))
        ipr.route("replace", dst="::/0", gateway=str(node.gateway6), family=socket.AF_INET6)


def _set_link(netns: str, ifname: str, state: str) -> None:
    with IPRoute(netns=netns, flags=0) as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=index, state=state)
