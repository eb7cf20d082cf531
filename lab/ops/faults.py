"""Real faults and their healing: stop or freeze the real process, drop packets with
nftables, take the link down. Never a flag a daemon reads.

Every fault is one object in REGISTRY: its name, what it does in words, `inject` and
`heal`. The CLI's help, its list of faults and `measure failover` ask the registry;
adding a fault is adding one object to it.

Active faults are recorded in <lab dir>/faults.json so `heal` knows what to undo and
`status` can show them.

Healing undoes the network faults first (a restarted speaker's session needs the link),
then brings daemons back in the order `up` starts them. A process fault makes its daemon
run again and waits (bounded) until it is ready (lab.render.ready): a daemon both frozen
and killed is restarted once, a frozen one is continued, never started a second time
beside itself. A fault whose daemon does not come back ready stays recorded, with what
was seen, so `heal` can be tried again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from lab.host import nft, procs, safefs
from lab.host.labs import Lab, command
from lab.model import names
from lab.model.errors import BadInput, LabError
from lab.model.plan import NodePlan, require_site
from lab.model.topology import site_bfd
from lab.observe.converge import log_tail
from lab.render.base import Readiness, ReadyTarget
from lab.render.bfd import router_side_up
from lab.render.ready import READY_TIMEOUT_S, wait_ready
from lab.shared.wait import wait_until

# Daemons are brought back in the order `up` starts them: services, BFD responder, speaker,
# health daemon.
RESTORE_ORDER = ("unbound", "introspect", names.BFD_DAEMON, "exabgp", "healthd")
EXIT_WAIT_S = 2.0  # a SIGKILLed process is gone in milliseconds; its ports with it
NFT_TABLE = "anycast_lab_fault"
BLACKHOLE = """table inet {table} {{
  chain in {{ type filter hook input priority -300; iifname "{ifname}" drop; }}
  chain out {{ type filter hook output priority -300; oifname "{ifname}" drop; }}
}}
"""

Record = dict[str, Any]


def _now() -> Record:
    """The instant a fault is made, monotonic (for measuring) and wall-clock."""
    return {"t_mono": time.monotonic(), "t": time.time()}


@dataclass(frozen=True)
class Fault(ABC):
    """One fault. `inject` breaks the site and returns what `heal` needs to undo it (the
    record's own fields; the site, the fault's name and the instants are added around
    it); `heal` undoes every record of its `heal_group` at once and says whether the
    site is whole again. Groups are healed in ascending `heal_rank`."""

    name: str
    description: str

    @abstractmethod
    def inject(self, lab: Lab, site: NodePlan) -> Record: ...

    @abstractmethod
    def heal(self, lab: Lab, site: NodePlan, records: list[Record],
             timeout_s: float) -> Readiness: ...

    @property
    def heal_group(self) -> str:
        return self.name

    @property
    def heal_rank(self) -> int:
        return 0  # network faults first, in the order they were made

    @property
    def at_issuer(self) -> bool:
        """Made at the lab's issuer node instead of a site."""
        return False


@dataclass(frozen=True, kw_only=True)
class ProcessFault(Fault):
    """Kill (SIGKILL) or freeze (SIGSTOP) one of the site's daemons; healing restarts or
    continues it, once for all the faults that name it, and waits until it is ready."""

    daemon: str  # its process name in the journal is <daemon>@<site>
    sig: signal.Signals

    def inject(self, lab: Lab, site: NodePlan) -> Record:
        record = _process(lab, site.name, self.daemon)
        entry = {"pid": record.pid, "start_time": record.start_time, **_now()}
        os.kill(record.pid, self.sig)
        return entry

    def heal(self, lab: Lab, site: NodePlan, records: list[Record],
             timeout_s: float) -> Readiness:
        return _restore(lab, f"{self.daemon}@{site.name}", records, timeout_s)

    @property
    def heal_group(self) -> str:
        return self.daemon

    @property
    def heal_rank(self) -> int:
        order = RESTORE_ORDER.index(self.daemon) if self.daemon in RESTORE_ORDER \
            else len(RESTORE_ORDER)
        return 1 + order


@dataclass(frozen=True)
class LinkDown(Fault):
    """The site's link to its router, down (the kernel flushes its routes with it)."""

    def inject(self, lab: Lab, site: NodePlan) -> Record:
        entry = _now()
        _set_link(site.netns, site.interfaces[0].ifname, "down")
        return entry

    def heal(self, lab: Lab, site: NodePlan, records: list[Record],
             timeout_s: float) -> Readiness:
        ifname = site.interfaces[0].ifname
        after = time.time()
        _set_link(site.netns, ifname, "up")
        _restore_default_routes(site)
        return _bfd_back(lab, site, after, timeout_s,
                         f"link {ifname} up, default routes restored")


class NftTableFault(Fault):
    """A fault that is one nftables table in the site's namespace (lab.host.nft): `inject`
    adds the table `ruleset` writes, `heal` deletes it whole."""

    table = ""  # the table's name (family inet)
    refused = ""  # what nftables refused, for the error: "the blackhole rule"
    waits_for_bfd = False  # does heal wait for the site's BFD session to be Up again?

    @abstractmethod
    def ruleset(self, lab: Lab, site: NodePlan) -> str: ...

    @abstractmethod
    def healed(self, site: NodePlan) -> str:
        """What `heal` says once the table is gone."""

    def inject(self, lab: Lab, site: NodePlan) -> Record:
        rules = self.ruleset(lab, site)
        entry = _now()
        nft.add_table(site.netns, rules, self.refused)
        return entry

    def heal(self, lab: Lab, site: NodePlan, records: list[Record],
             timeout_s: float) -> Readiness:
        after = time.time()
        nft.delete_table(site.netns, "inet", self.table)
        if self.waits_for_bfd:
            return _bfd_back(lab, site, after, timeout_s, self.healed(site))
        return Readiness(True, self.healed(site))


@dataclass(frozen=True)
class Blackhole(NftTableFault):
    """An nftables table in the site's namespace that drops everything on its link."""

    table = NFT_TABLE
    refused = "the blackhole rule"
    waits_for_bfd = True  # the BFD session went down with the link: heal waits for it

    def ruleset(self, lab: Lab, site: NodePlan) -> str:
        return BLACKHOLE.format(table=NFT_TABLE, ifname=site.interfaces[0].ifname)

    def healed(self, site: NodePlan) -> str:
        return f"nftables drop on {site.interfaces[0].ifname} removed"


def _bfd_back(lab: Lab, site: NodePlan, after: float, timeout_s: float,
              done: str) -> Readiness:
    """A network fault undone (`done` says how). With BFD on for the site, the site is
    whole again only once its router's BFD session is Up since the heal (the session
    went down with the link; until it is up a silent link is caught by the hold timer
    only), so wait for that, bounded."""
    if site.role != "site" or lab.topology is None or lab.plan is None \
            or not site_bfd(lab.topology, site.name).enabled:
        return Readiness(True, done)
    target = ReadyTarget(lab.plan, lab.journal.dir, site, 0, after)
    ready = wait_until(lambda: router_side_up(target, after), timeout_s, interval_s=0.05)
    if ready.ok:
        return Readiness(True, f"{done}; {ready.detail}")
    return Readiness(False, f"{done}, but BFD is not back after {timeout_s:g} s: "
                            f"{ready.detail}")


def _registry(faults: Iterable[Fault]) -> dict[str, Fault]:
    return {fault.name: fault for fault in faults}


# Every fault the lab knows, in the order the CLI lists them. Add a fault here.
REGISTRY: dict[str, Fault] = _registry([
    ProcessFault("dns", "kill the site's DNS server (Unbound): its port answers 'unreachable'",
                 daemon="unbound", sig=signal.SIGKILL),
    ProcessFault("dns-hang", "freeze the site's DNS server (SIGSTOP): queries time out",
                 daemon="unbound", sig=signal.SIGSTOP),
    ProcessFault("introspect", "kill the site's introspection service",
                 daemon="introspect", sig=signal.SIGKILL),
    ProcessFault("introspect-hang", "freeze the site's introspection service (SIGSTOP)",
                 daemon="introspect", sig=signal.SIGSTOP),
    ProcessFault("healthd", "kill the site's health daemon (SIGKILL)",
                 daemon="healthd", sig=signal.SIGKILL),
    ProcessFault("healthd-hang", "freeze the site's health daemon (SIGSTOP)",
                 daemon="healthd", sig=signal.SIGSTOP),
    ProcessFault("speaker", "kill the site's BGP speaker (ExaBGP, SIGKILL)",
                 daemon="exabgp", sig=signal.SIGKILL),
    ProcessFault("speaker-hang", "freeze the site's BGP speaker (SIGSTOP): only the hold "
                 "timer notices", daemon="exabgp", sig=signal.SIGSTOP),
    LinkDown("link", "take the site's link to its router down"),
    Blackhole("blackhole", "silently drop everything on the site's link (nftables)"),
    ProcessFault("bfd", "freeze the site's BFD responder (SIGSTOP; needs bgp.bfd): the "
                 "router's BFD session goes down and takes the site's BGP session with it, "
                 "though ExaBGP and the link are fine", daemon=names.BFD_DAEMON,
                 sig=signal.SIGSTOP),
])


def fault_names() -> list[str]:
    """The faults' names, in the registry's order."""
    return list(REGISTRY)


def lookup(name: str) -> Fault:
    """The fault called `name`; BadInput listing the faults when there is none."""
    fault = REGISTRY.get(name)
    if fault is None:
        raise BadInput(f"unknown fault '{name}' (faults: {', '.join(REGISTRY)})")
    return fault


def _faults_file(lab: Lab) -> Path:
    return lab.journal.dir / names.FAULTS


def active(lab: Lab) -> dict[str, Record]:
    try:
        return json.loads(_faults_file(lab).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save(lab: Lab, faults: dict[str, Record]) -> None:
    # Durable: a fault the file forgets after a crash is one `heal` cannot undo. In the
    # order the faults were made (heal undoes network faults in that order).
    safefs.write_json_atomic(_faults_file(lab), faults, durable=True, sort_keys=False)


def _site(lab: Lab, site: str, fault: Fault | None = None) -> NodePlan:
    """The site (or, for a fault made at the issuer, the issuer node) called `site`."""
    assert lab.plan is not None
    issuer = lab.plan.issuer
    if issuer is not None and site == issuer.name and (fault is None or fault.at_issuer):
        return issuer
    if fault is not None and fault.at_issuer:
        where = f"the issuer '{issuer.name}'" if issuer is not None else "an issuer (none here)"
        raise BadInput(f"fault '{fault.name}' is made at {where}, not at a site")
    return require_site(lab.plan, site)


def _process(lab: Lab, site: str, daemon: str) -> procs.ProcessRecord:
    record = procs.running(lab.journal, f"{daemon}@{site}")
    if record is None and daemon == names.BFD_DAEMON and lab.topology is not None \
            and not site_bfd(lab.topology, site).enabled:
        raise BadInput(f"{site} runs no BFD responder: BFD is off for it (bgp.bfd, or "
                       f"sites.{site}.bfd, in the topology)")
    if record is None:
        raise LabError(f"{daemon} is not running at {site}: nothing to fail (see "
                       f"{command(lab.name, 'status')}, or {command(lab.name, f'heal {site}')})")
    return record


def inject(lab: Lab, site: str, what: str) -> Record:
    """Inject one fault; returns its record (with the monotonic and wall-clock instant)."""
    fault = lookup(what)
    node = _site(lab, site, fault)
    key = f"{site}:{what}"
    faults = active(lab)
    if key in faults:
        raise LabError(f"fault '{what}' is already active at {site}: "
                       f"{command(lab.name, f'heal {site} {what}')} first")
    entry: Record = {"site": site, "fault": what, **fault.inject(lab, node)}
    faults[key] = entry
    _save(lab, faults)
    return entry


def heal(lab: Lab, site: str, what: str | None = None,
         ready_timeout_s: float = READY_TIMEOUT_S) -> list[Record]:
    """Undo one fault at a site, or all of them; returns one entry per fault, each with
    `ready` (the daemon runs and passed its readiness check; network faults: undone) and
    `detail` (one sentence). Faults not ready stay recorded."""
    node = _site(lab, site)
    if what is not None:
        lookup(what)
    faults = active(lab)
    groups: dict[str, tuple[Fault, list[str]]] = {}
    healed = []
    for key, entry in faults.items():
        if entry["site"] != site or (what is not None and entry["fault"] != what):
            continue
        fault = REGISTRY.get(entry["fault"])
        if fault is None:  # recorded by a lab that knew other faults: left as it is
            healed.append({**entry, "ready": False, "detail": f"'{entry['fault']}' is no "
                           f"fault this lab knows: nothing undone ({_faults_file(lab)})"})
            continue
        groups.setdefault(fault.heal_group, (fault, []))[1].append(key)
    for fault, keys in sorted(groups.values(), key=lambda group: group[0].heal_rank):
        t_mono, t_wall = time.monotonic(), time.time()
        ready = fault.heal(lab, node, [faults[k] for k in keys], ready_timeout_s)
        for key in keys:
            faults[key].pop("heal_failed", None)
            healed.append({**faults[key], "healed_t_mono": t_mono, "healed_t": t_wall,
                           "ready": ready.ok, "detail": ready.detail})
            if ready.ok:
                del faults[key]
            else:
                faults[key]["heal_failed"] = ready.detail
    _save(lab, faults)
    return healed


def _gone(entry: Record) -> bool:
    expected = entry.get("start_time")
    now = procs.start_time(entry["pid"])
    return now is None or (expected is not None and now != expected)


def _killed(entry: Record) -> bool:
    fault = REGISTRY.get(entry["fault"])
    return isinstance(fault, ProcessFault) and fault.sig == signal.SIGKILL


def _restore(lab: Lab, name: str, entries: list[Record], timeout_s: float) -> Readiness:
    """Make one daemon run again (continue it if frozen, start it if gone; once, however
    many faults name it) and wait until it is ready. The detail is one sentence."""
    assert lab.plan is not None
    for entry in entries:
        if _killed(entry):  # let it finish dying first
            wait_until(lambda e=entry: _gone(e), EXIT_WAIT_S, interval_s=0.01)
    record = procs.running(lab.journal, name)
    after = time.time()  # what the daemon says from here on must be new, not remembered
    if record is None:
        record, action = procs.restart(lab.journal, name), "restarted"
    elif procs.is_stopped(record.pid):
        os.kill(record.pid, signal.SIGCONT)
        action = "continued"
    else:
        action = "found running"
    ready = wait_ready(lab.plan, lab.journal.dir, record, timeout_s, after=after)
    if ready.ok:
        return Readiness(True, f"{name} {action} (PID {record.pid}) and ready: {ready.detail}")
    intent = procs.last_intent(lab.journal, name)
    tail = log_tail(Path(intent["log_path"]), 1) if intent else []
    last = f"; last line of its log: {tail[0].strip()}" if tail else "; its log is empty"
    if ready.final:
        return Readiness(False, f"{name} {action} (PID {record.pid}) but it exited{last}")
    return Readiness(False, f"{name} {action} (PID {record.pid}) but not ready after "
                            f"{timeout_s:g} s: {ready.detail}{last}")


def _restore_default_routes(node: NodePlan) -> None:
    """The kernel flushed the site's default routes when its link went down; without
    them the site, announced again, would swallow its clients' queries."""
    with IPRoute(netns=node.netns, flags=0) as ipr:
        ipr.route("replace", dst="0.0.0.0/0", gateway=str(node.gateway4))
        ipr.route("replace", dst="::/0", gateway=str(node.gateway6), family=socket.AF_INET6)


def _set_link(netns: str, ifname: str, state: str) -> None:
    with IPRoute(netns=netns, flags=0) as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=index, state=state)


def _identity_faults() -> list[Fault]:
    # Defined in their own module, on the classes and helpers above (so: last).
    from lab.ops.identity_faults import IDENTITY_FAULTS

    return IDENTITY_FAULTS


REGISTRY.update(_registry(_identity_faults()))
