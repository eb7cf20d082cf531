"""The shell commands a node runs after containerlab created it (its `exec` list): what
`lab.host.fabric` does here (sysctls, addresses, `lo` anycast addresses, routes,
impairments) and what `lab.render.launch` does (each daemon started in the same order,
each waited for as `lab.render.ready` waits). Pure: strings only.

Every command can run again on a running node and changes nothing there (clabernetes
re-runs them when it recreates a link, which loses the addresses): addresses and routes
are `replace`d, a daemon whose lock is held is not started twice, and a kept file is
written only when absent. No command contains `$` (containerlab expands variables in the
topology file) or `'` inside its `bash -c` script.
"""

from __future__ import annotations

import base64
from pathlib import PurePosixPath

from lab.export.model import NodeFile
from lab.host.fabric import TBF_BURST, TBF_LATENCY_US, sysctls_for
from lab.model import names
from lab.model.plan import AddressPlan, NodePlan
from lab.model.topology import Impairment
from lab.render.base import DaemonSpec
from lab.render.credentials import ISSUER_NAME, SERVICE_NAME
from lab.render.exabgp import ExabgpSpec
from lab.render.introspect import PORT
from lab.render.issuer import PORT as ISSUER_PORT
from lab.render.ready import READY_TIMEOUT_S

LINK_WAIT_S = 60     # containerlab attaches a node's links after the container starts
POLL_S = 0.05        # as lab.render.ready polls


def bash(script: str) -> str:
    """`bash -c '<script>'` as one exec string."""
    if "'" in script or "$" in script:
        raise ValueError(f"an exec script may contain neither ' nor $: {script[:60]}")
    return f"bash -c '{script}'"


def word(value: str) -> str:
    """One shell word for a script inside `bash -c '...'` (double quotes where needed)."""
    if value and all(c.isalnum() or c in "@%+=:,./-_" for c in value):
        return value
    if any(c in value for c in "\"\\`$'"):
        raise ValueError(f"cannot quote {value!r} for an exec script")
    return f'"{value}"'


def until(condition: str, timeout_s: float) -> str:
    """Poll a condition with a deadline (exit 124 when it never held)."""
    if '"' in condition:
        raise ValueError(f"a condition may not contain a double quote: {condition[:60]}")
    return bash(f'timeout {timeout_s:g} bash -c "until {condition}; do sleep {POLL_S:g}; '
                'done"')


# --- the fabric --------------------------------------------------------------------------

def wait_for_links(node: NodePlan) -> list[str]:
    if not node.interfaces:
        return []
    cond = " && ".join(f"ip link show dev {i.ifname} >/dev/null 2>&1" for i in node.interfaces)
    return [until(cond, LINK_WAIT_S)]


def node_sysctls(node: NodePlan, multipath_hash: str) -> dict[str, str]:
    """The fabric's sysctls, plus the per-interface ones: here the interfaces exist before
    the commands run, so they do not inherit the `default` values."""
    values = dict(sysctls_for(node, multipath_hash))
    values |= {"net.ipv6.conf.all.disable_ipv6": "0",
               "net.ipv6.conf.default.disable_ipv6": "0"}
    for iface in node.interfaces:
        values |= {
            f"net.ipv4.conf.{iface.ifname}.rp_filter": "0",
            f"net.ipv6.conf.{iface.ifname}.disable_ipv6": "0",
            f"net.ipv6.conf.{iface.ifname}.accept_dad": "0",
            f"net.ipv6.conf.{iface.ifname}.keep_addr_on_down": "1",
            f"net.ipv6.conf.{iface.ifname}.accept_ra": "0",
        }
    return values


def fabric_commands(plan: AddressPlan, node: NodePlan, multipath_hash: str,
                    impairments: dict[str, Impairment]) -> list[str]:
    """Sysctls, `lo` (and a site's anycast addresses on it), every interface's addresses
    (IPv6 without DAD), a site's or client's default routes via its router, impairments."""
    out = wait_for_links(node)
    out.append("sysctl -q -w " + " ".join(f"{k}={v}" for k, v in
                                          node_sysctls(node, multipath_hash).items()))
    out.append("ip link set dev lo up")
    if node.role == "site":
        out.append(f"ip addr replace {plan.anycast4.network_address}/32 dev lo")
        out.append(f"ip -6 addr replace {plan.anycast6.network_address}/128 dev lo nodad")
    for iface in node.interfaces:
        out.append(f"ip addr replace {iface.v4.ip}/31 dev {iface.ifname}")
        out.append(f"ip -6 addr replace {iface.v6.ip}/64 dev {iface.ifname} nodad")
        out.append(f"ip link set dev {iface.ifname} up")
    if node.gateway4 is not None and node.gateway6 is not None:
        out.append(f"ip route replace default via {node.gateway4}")
        out.append(f"ip -6 route replace default via {node.gateway6}")
    for ifname, imp in impairments.items():
        qdisc = qdisc_args(imp)
        if qdisc:
            out.append(f"tc qdisc replace dev {ifname} root {qdisc}")
    return out


def qdisc_args(imp: Impairment) -> str | None:
    """The root qdisc `lab.host.fabric.attach_qdisc` gives an impairment, as `tc` words."""
    if imp.delay or imp.jitter or imp.loss:
        words = ["netem"]
        if imp.delay:
            words += ["delay", imp.delay]
            if imp.jitter:
                words += [imp.jitter]
        if imp.loss:
            words += ["loss", f"{imp.loss:g}%"]
        if imp.rate:
            words += ["rate", imp.rate]
        return " ".join(words)
    if imp.rate:
        return f"tbf rate {imp.rate} burst {TBF_BURST} latency {TBF_LATENCY_US}us"
    return None


# --- the daemons -------------------------------------------------------------------------

def lock_path(spec: DaemonSpec) -> str:
    return str(PurePosixPath(str(spec.config_path)).parent / f".{spec.name}.lock")


def start_command(spec: DaemonSpec, env: dict[str, str],
                  stale: list[str] | None = None) -> str:
    """Start one daemon in the background, in its node directory, its output appended to
    its log, holding a lock for as long as it runs: when the lock is held (it runs), do
    nothing. `stale` files (a state file an earlier run left) are removed first."""
    assert spec.log_path is not None
    lock = lock_path(spec)
    run = " ".join(word(w) for w in ["env", *(f"{k}={v}" for k, v in env.items()), *spec.argv])
    before = "".join(f"rm -f {word(p)}; " for p in (stale or []))
    cwd = str(PurePosixPath(str(spec.config_path)).parent)
    return bash(f"cd {word(cwd)} && if flock -n {word(lock)} true; then {before}"
                f"setsid flock -n {word(lock)} {run} >> {word(str(spec.log_path))} 2>&1 "
                "< /dev/null & fi")


def ready_command(plan: AddressPlan, spec: DaemonSpec, lab_dir: PurePosixPath) -> str | None:
    """Wait as `lab.render.ready` does (same deadline): BIRD says it is up on its control
    socket; Unbound names its site for id.server on the site's unicast address; the
    introspection service answers /healthz for its site over TLS checked against the lab
    CA; the issuer answers /healthz (200) over TLS checked against the lab CA, under its
    certificate's name; the health daemon's state file says it runs. ExaBGP is not waited
    for (as `up`: convergence waits for its session)."""
    node = plan.nodes[spec.node]
    unicast = str(node.interfaces[0].v4.ip) if node.interfaces else ""
    nd = lab_dir / names.NODES / spec.node
    if spec.name == "bird":
        cond = (f"birdc -s {nd / names.BIRD_CTL} show status 2>/dev/null "
                "| grep -q Daemon.is.up.and.running")
    elif spec.name == "unbound":
        cond = (f"dig @{unicast} id.server CH TXT +short +time=1 +tries=1 2>/dev/null "
                f"| grep -qx .{spec.node}.")
    elif spec.name == "introspect":
        ca = lab_dir / names.PKI / "ca.pem"
        cond = (f"curl -sf --max-time 1 --cacert {ca} --resolve "
                f"{SERVICE_NAME}:{PORT}:{unicast} https://{SERVICE_NAME}:{PORT}/healthz "
                f"2>/dev/null | grep -Eq .site.:.?.{spec.node}.")
    elif spec.name == "issuer":
        ca = lab_dir / names.PKI / "ca.pem"
        cond = (f"curl -sf -o /dev/null --max-time 1 --cacert {ca} --resolve "
                f"{ISSUER_NAME}:{ISSUER_PORT}:{unicast} "
                f"https://{ISSUER_NAME}:{ISSUER_PORT}/healthz 2>/dev/null")
    elif spec.name == "healthd":
        cond = f"grep -Eq .running.:.?true {nd / names.HEALTH_STATE} 2>/dev/null"
    else:
        return None
    return until(cond, READY_TIMEOUT_S)


def container_env(spec: DaemonSpec) -> dict[str, str]:
    """The daemon's environment in a container: as `up` gives it, without the PYTHONPATH
    that points into this checkout (the image has the package installed)."""
    return {k: v for k, v in spec.env.items() if k != "PYTHONPATH"}


def daemon_commands(plan: AddressPlan, spec: DaemonSpec, lab_dir: PurePosixPath) -> list[str]:
    stale = []
    if spec.name == "healthd":
        stale = [str(lab_dir / names.NODES / spec.node / names.HEALTH_STATE)]
    out = [start_command(spec, container_env(spec), stale)]
    ready = ready_command(plan, spec, lab_dir)
    if ready:
        out.append(ready)
    return out


def spec_files(spec: DaemonSpec) -> list[tuple[str, str]]:
    """(container path, text) of every file a daemon's spec writes."""
    files = [(str(spec.config_path), spec.config)]
    if isinstance(spec, ExabgpSpec) and spec.healthcheck_path and spec.healthcheck_config:
        files.append((str(spec.healthcheck_path), spec.healthcheck_config))
    return files


# --- files, for clabernetes (no host binds) ----------------------------------------------

def file_command(f: NodeFile) -> str:
    """Write one file from the topology itself (base64), replacing it at once; a `keep`
    file only when absent."""
    path = word(f.container_path)
    parent = word(str(PurePosixPath(f.container_path).parent))
    data = base64.b64encode(f.data).decode()
    write = (f"mkdir -p {parent} && echo {data} | base64 -d > {path}.new && "
             f"chmod {f.mode:o} {path}.new && mv -f {path}.new {path}")
    return bash(f"test -e {path} || {{ {write}; }}" if f.keep else write)
