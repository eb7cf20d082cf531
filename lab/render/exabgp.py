"""ExaBGP 5 on every site: one IPv4 session to the site's router carrying both families;
what is announced is decided by the API process: our speaker shim (lab.sites.speaker.api),
or, with health.checker 'exabgp-healthcheck', ExaBGP's bundled healthcheck (the anchor).
Ready when the site's router sees the session Established."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from lab.host import birdctl
from lab.host.birdctl import bgp_state, parse_protocols
from lab.model import names
from lab.model.errors import LabError
from lab.model.plan import AddressPlan, NodePlan
from lab.model.topology import Topology, anchor_mode, backup_prefix
from lab.render.base import DaemonSpec, Readiness, ReadyTarget
from lab.render.bird import ASK_TIMEOUT_S
from lab.render.jinja import render


def speaker_routes(plan: AddressPlan, site: NodePlan) -> list[tuple[str, str]]:
    """(prefix, next hop) per anycast prefix: the site's own link address per family."""
    iface = site.interfaces[0]
    return [(str(plan.anycast4), str(iface.v4.ip)), (str(plan.anycast6), str(iface.v6.ip))]


def backup_routes(plan: AddressPlan, site: NodePlan) -> list[tuple[str, str]]:
    """health.last_site 'backup-route': (covering prefix, next hop) per family, announced
    by every site whatever its health."""
    iface = site.interfaces[0]
    return [(str(backup_prefix(plan.anycast4)), str(iface.v4.ip)),
            (str(backup_prefix(plan.anycast6)), str(iface.v6.ip))]


# The API process's start file (lab.sites.speaker.run): run by path, isolated (-I) and
# without site-packages (-S), it imports nothing but the API process and a few of the
# standard library's C modules: ~3.3 MiB of private memory instead of ~8.5 (-m and site).
SPEAKER_RUN = Path(__file__).resolve().parents[1] / "sites" / "speaker" / "run.py"


def api_argv(plan: AddressPlan, site: NodePlan, node_dir: Path, python: str,
             watchdog_ms: int | None, backup: bool = False,
             speaker_run: str | None = str(SPEAKER_RUN)) -> list[str]:
    """The API process: in watchdog mode (health daemon in control) or static mode; with
    the covering backup routes (announced always). Run from its start file, isolated; or,
    with `speaker_run` None, as a module of the installed package (a container's image)."""
    start = ([python, "-I", "-S", speaker_run] if speaker_run is not None
             else [python, "-m", "lab.sites.speaker.api"])
    argv = [*start, "--control", str(node_dir / names.SPEAKER_SOCK)]
    for prefix, nexthop in speaker_routes(plan, site):
        argv += ["--route", prefix, nexthop]
    if backup:
        for prefix, nexthop in backup_routes(plan, site):
            argv += ["--backup-route", prefix, nexthop]
    if watchdog_ms is None:
        argv.append("--announce-at-start")
    else:
        argv += ["--watchdog-ms", str(watchdog_ms)]
    return argv


# The name healthd's DNS check asks, as `dig` is given it (no trailing dot).
HEALTHCHECK_QNAME = names.HEALTH_QNAME.rstrip(".")


def healthcheck_command(topo: Topology, site: NodePlan) -> str:
    """One `dig` at the site's own unicast address (as healthd's DNS check asks): one try,
    dig's shortest wait (whole seconds), optionally wrapped in `timeout N` for a
    sub-second limit. Run by the healthcheck through a shell: exit 0 = healthy."""
    hc = topo.health.exabgp_healthcheck
    command = (f"dig @{site.interfaces[0].v4.ip} {HEALTHCHECK_QNAME} A "
               "+time=1 +tries=1 +short")
    if hc.command_timeout_s is not None:
        command = f"timeout {hc.command_timeout_s:g} {command}"
    return command


def render_healthcheck(topo: Topology, plan: AddressPlan, site: NodePlan) -> str:
    """The bundled healthcheck's config file (one long option per line)."""
    return render("healthcheck.conf.j2", lab=plan.lab, site=site.name,
                  hc=topo.health.exabgp_healthcheck, prefix=str(plan.anycast4),
                  next_hop=str(site.interfaces[0].v4.ip),
                  command=healthcheck_command(topo, site))


def healthcheck_argv(node_dir: Path, python: str) -> list[str]:
    """ExaBGP's run line for the bundled healthcheck: ExaBGP splits it on whitespace with
    no quoting, so every option lives in the config file."""
    return [python, "-m", "exabgp", "healthcheck", "--config",
            str(node_dir / names.HEALTHCHECK_CONF)]


def healthcheck_args(config: str) -> list[str]:
    """A healthcheck config file as the command line it stands for (exabgp 5.0.15's own
    reading: `--` + line, split at the first '=', '#' lines skipped)."""
    args: list[str] = []
    for line in config.splitlines():
        if line.strip() and not line.strip().startswith("#"):
            args += [a.strip() for a in f"--{line.strip()}".split("=", 1)]
    return args


def parse_healthcheck(config: str) -> argparse.Namespace:
    """Parse a healthcheck config with the healthcheck's own option parser (its dry run:
    it has none of its own); LabError with its message if it refuses."""
    from exabgp.application import healthcheck

    parser = argparse.ArgumentParser(prog="exabgp healthcheck")
    healthcheck.setargs(parser)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(healthcheck_args(config))
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        raise LabError(f"healthcheck config refused: {lines[-1] if lines else 'bad options'}",
                       details=lines) from None


def render_exabgp(topo: Topology, plan: AddressPlan, site: NodePlan, api: list[str]) -> str:
    iface = site.interfaces[0]
    router = plan.nodes[iface.peer]
    context = {
        "name": site.name, "asn": site.asn, "router": router.name, "router_asn": router.asn,
        "router_id": site.router_id, "local4": iface.v4.ip,
        "router_address4": router.iface(site.name).v4.ip,
    }
    # ExaBGP splits the run line on whitespace, with no quoting: paths must have no spaces.
    return render("exabgp.conf.j2", lab=plan.lab, site=context, api_argv=" ".join(api),
                  hold_time=topo.bgp.hold_time,
                  receive=topo.health.last_site == "keep-last" and not anchor_mode(topo))


def exabgp_env(node_dir: Path) -> dict[str, str]:
    """Per-instance environment: foreground, as root (otherwise ExaBGP and its API process
    drop to `nobody` and, with a root-owned pid directory, exit 1 with no error at INFO),
    quiet (no line per keepalive), no listener."""
    return {
        "exabgp_daemon_daemonize": "false",
        "exabgp_daemon_user": "root",
        # No pid file: we track the PID ourselves, and a stale file (after SIGKILL, with
        # the old PID still a zombie) makes a restarted ExaBGP exit.
        "exabgp_daemon_pid": "",
        "exabgp_log_destination": "stdout",
        "exabgp_log_statistics": "false",
        "exabgp_log_level": "INFO",
        "exabgp_tcp_bind": "",
        "exabgp_api_cli": "false",
        # The reactor sleeps speed/100 s when nothing is ready (5.0: 50 ms). It wakes at
        # once for the API process's commands and for BGP traffic, so waking less is free:
        # at 50.0 (500 ms) ExaBGP idles at 0.08 % of a core instead of 0.55 %, and a dead
        # health daemon's routes were gone in a median 11.5 ms (10.4 at 5.0), a frozen
        # one's 271 ms (288), sessions up as fast (bench.health_bench, 5 trials each).
        "exabgp_reactor_speed": "50.0",
        "EXABGP_ROOT": str(node_dir),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


@dataclass
class ExabgpSpec(DaemonSpec):
    """ExaBGP, plus (anchor mode) the bundled healthcheck's config file beside its own:
    written with it, and checked by the healthcheck's option parser before `exabgp
    validate` runs."""

    healthcheck_path: Path | None = None
    healthcheck_config: str | None = None

    def write(self) -> None:
        super().write()
        if self.healthcheck_path is not None and self.healthcheck_config is not None:
            self.healthcheck_path.write_text(self.healthcheck_config)

    def check_healthcheck(self) -> None:
        if self.healthcheck_config is not None:
            try:
                parse_healthcheck(self.healthcheck_config)
            except LabError as exc:
                raise LabError(f"{self.label}: {exc}", details=exc.details) from None

    def check(self) -> None:
        self.check_healthcheck()
        super().check()

    def check_many(self, others: list[DaemonSpec]) -> None:
        for spec in (self, *others):
            if isinstance(spec, ExabgpSpec):
                spec.check_healthcheck()
        super().check_many(others)


def exabgp_spec(topo: Topology, plan: AddressPlan, site: NodePlan, node_dir: Path,
                exabgp: str, python: str = sys.executable,
                speaker_run: str | None = str(SPEAKER_RUN)) -> ExabgpSpec:
    conf = node_dir / names.EXABGP_CONF
    hc_path = hc_config = None
    if anchor_mode(topo):
        api = healthcheck_argv(node_dir, python)
        hc_path, hc_config = (node_dir / names.HEALTHCHECK_CONF,
                              render_healthcheck(topo, plan, site))
    else:
        watchdog = topo.health.watchdog_ms if topo.health.enabled else None
        api = api_argv(plan, site, node_dir, python, watchdog,
                       backup=topo.health.last_site == "backup-route", speaker_run=speaker_run)
    return ExabgpSpec(
        name="exabgp", node=site.name, netns=site.netns, config_path=conf,
        config=render_exabgp(topo, plan, site, api),
        check_argv=[exabgp, "validate", str(conf)],
        argv=[exabgp, "server", str(conf)],
        env=exabgp_env(node_dir),
        log_path=node_dir / names.log_name("exabgp"),
        batch_check=True,
        healthcheck_path=hc_path, healthcheck_config=hc_config,
    )


def exabgp_ready(t: ReadyTarget) -> Readiness:
    """The site's router (its BIRD, read-only) has the BGP session to this speaker
    Established: ExaBGP runs, reached the router and exchanged OPENs."""
    router = t.node.interfaces[0].peer
    protocol = names.site_protocol(t.node.name)
    try:
        reply = birdctl.ask(names.bird_socket(t.lab_dir, router), f"show protocols {protocol}",
                            timeout_s=ASK_TIMEOUT_S)
    except birdctl.BirdUnavailable as exc:
        return Readiness(False, f"router {router}'s BIRD does not answer ({exc.reason})")
    proto = next((p for p in parse_protocols(reply.text) if p.name == protocol), None)
    if proto is None:
        return Readiness(False, f"router {router} does not answer about {protocol}")
    state = bgp_state(proto)
    if state == "Established":
        return Readiness(True, f"BGP session to {router} Established")
    return Readiness(False, f"BGP session to {router} is {state}"
                            + (f" ({proto.info})" if proto.info and proto.info != state else ""))
