"""The `anycast-lab` command line: parse, call the lab, print a table or JSON.

Errors the lab can explain (LabError) become one sentence and an exit code:
1 not as expected, 2 bad input, 3 environment. Nothing here touches the kernel itself.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lab.cli import ui
from lab.host.lock import locked
from lab.model.errors import BadInput, EnvironmentProblem, LabError

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"

app = typer.Typer(
    name="anycast-lab", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
    help="A real anycast lab on Linux network namespaces (BIRD 2, ExaBGP 5, Unbound).",
)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for machines")]
LabOpt = Annotated[str | None, typer.Option("--lab", help="which lab (default: the only one up)")]


def default_topology() -> Path:
    env = os.environ.get("ANYCAST_LAB_TOPOLOGY")
    return Path(env) if env else DEFAULT_TOPOLOGY


@app.command()
def validate(topology: Annotated[Path | None, typer.Argument(help="topology file")] = None,
             json_out: JsonOpt = False) -> None:
    """Check a topology file; changes nothing."""
    from lab.model import load_file

    report = load_file(topology or default_topology())
    if not json_out and report.problems and not report.problems[0].path \
            and report.problems[0].line is None:
        raise BadInput(report.problems[0].message)  # a missing or unreadable file
    if json_out:
        ui.emit_json(report.to_json())
    elif report.ok:
        assert report.topology is not None
        t = report.topology
        ui.out.print(f"[green]ok[/] {escape(report.source)}: lab '{t.name}', {len(t.routers)} "
                     f"routers, {len(t.sites)} sites, {len(t.clients)} clients, "
                     f"{len(t.links)} links")
    else:
        ui.err.print(f"[red]{escape(report.source)}: {len(report.problems)} problem(s)[/]")
        for p in report.problems:  # plain text: messages quote the file ([r1, r2], names)
            line = f"{report.source}:{p.line}: " if p.line else f"{report.source}: "
            ui.err.print(f"  {line}{p}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if report.ok else 2)


@app.command()
def schema() -> None:
    """Print the topology file's JSON Schema (for editors)."""
    from lab.model.schema import topology_schema

    ui.emit_json(topology_schema())


@app.command()
def up(topology: Annotated[Path | None, typer.Argument(help="topology file")] = None,
       name: Annotated[str | None, typer.Option("--name", help="override the lab's name")] = None,
       json_out: JsonOpt = False) -> None:
    """Build the lab, start its daemons, wait until converged."""
    from lab.host import labs
    from lab.observe import status
    from lab.ops import lifecycle

    path = topology or default_topology()
    topo = lifecycle.validated(path, name)
    started = time.monotonic()
    lifecycle.stop_on_sigterm(topo.name)
    try:
        with ui.progress(f"bringing up lab '{topo.name}'", quiet=json_out) as step:
            lab = lifecycle.up(topo, step)
    except lifecycle.AlreadyUp as exc:
        ui.err.print(f"lab '{exc.lab}' is already up; showing its status "
                     "(run `anycast-lab down` to rebuild it)")
        lab = labs.open_lab(exc.lab)
    report = status.collect(lab, fabric=False)
    report["elapsed_s"] = round(time.monotonic() - started, 3)
    if json_out:
        ui.emit_json(report)
    else:
        status.print_human(report)
        ui.out.print(f"lab '{topo.name}' up in {report['elapsed_s']:.2f} s")
    raise typer.Exit(0 if report.get("ok", True) else 1)


@app.command()
def down(lab: LabOpt = None,
         all_labs: Annotated[bool, typer.Option("--all", help="tear down every lab")] = False,
         json_out: JsonOpt = False) -> None:
    """Tear down everything the lab created, from its own records."""
    from lab.host import env
    from lab.ops import lifecycle

    env.require_linux_root()
    names = lifecycle.labs_to_tear_down(lab, all_labs)
    reports = [lifecycle.down(n) for n in names]
    pruned = lifecycle.prune_failed(keep=0) if all_labs else 0
    leftovers = [r for r in reports if r.leftover]
    if json_out:
        ui.emit_json({"ok": not leftovers, "removed": [r.__dict__ for r in reports],
                      "failed_logs_removed": pruned})
        if leftovers:
            raise typer.Exit(EnvironmentProblem.exit_code)
    elif not reports:
        ui.out.print("nothing to tear down: " + (f"lab '{lab}' is not up" if lab else
                                                 "no lab is up"))
    else:
        for r in reports:
            ui.out.print(f"lab '{r.lab}' down: {r.namespaces} namespaces, {r.processes} "
                         f"processes removed in {r.elapsed_s:.2f} s")
    if leftovers:
        first = leftovers[0]
        raise EnvironmentProblem(f"lab '{first.lab}': its processes and namespaces are gone, "
                                 f"but {first.leftover}")


@app.command()
def status(lab: LabOpt = None, json_out: JsonOpt = False,
           fabric: Annotated[bool, typer.Option("--fabric", help="also list every "
                                                "interface and address")] = False) -> None:
    """Sites, routers, clients (and with --fabric every interface) of a running lab."""
    from lab.host import env, labs
    from lab.observe import status as st

    env.require_linux_root()
    report = st.collect(labs.open_lab(lab))
    if json_out:
        ui.emit_json(report)
    else:
        st.print_human(report, show_fabric=fabric)
    raise typer.Exit(0 if report.get("ok", True) else 1)


@app.command(name="exec", context_settings={"allow_extra_args": True,
                                            "ignore_unknown_options": True})
def exec_(ctx: typer.Context, node: Annotated[str, typer.Argument(help="node name")],
          lab: LabOpt = None) -> None:
    """Run a command inside a node's namespace: anycast-lab exec NODE -- CMD..."""
    from lab.host import env, labs
    from lab.host.procs import MARKER, NODE_MARKER, enter_netns

    argv = [a for a in ctx.args if a != "--"] if ctx.args[:1] == ["--"] else list(ctx.args)
    if not argv:
        raise BadInput("no command given: use `anycast-lab exec NODE -- CMD...`")
    env.require_linux_root()
    opened = labs.open_lab(lab)
    if opened.plan is None or node not in opened.plan.nodes:
        known = ", ".join(opened.plan.nodes) if opened.plan else "none"
        raise BadInput(f"unknown node '{node}' in lab '{opened.name}' (known: {known})")
    if not Path("/run/netns", opened.plan.nodes[node].netns).exists():
        raise LabError(f"node '{node}' has no namespace: the lab is broken, run "
                       "`anycast-lab down` and `up` again")
    os.environ[MARKER] = opened.name
    os.environ[NODE_MARKER] = node
    enter_netns(opened.plan.nodes[node].netns)()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError as exc:
        raise BadInput(f"command '{argv[0]}' not found in node '{node}'") from exc


@app.command()
def birdc(router: Annotated[str, typer.Argument(help="router name")],
          command: Annotated[list[str] | None, typer.Argument(help="birdc command")] = None,
          lab: LabOpt = None) -> None:
    """Look inside a router: anycast-lab birdc ROUTER CMD... (e.g. show route all)."""
    from lab.host import env, labs
    from lab.render.launch import node_dir

    env.require_linux_root()
    opened = labs.open_lab(lab)
    if opened.plan is None or opened.plan.nodes.get(router) is None \
            or opened.plan.nodes[router].role != "router":
        routers = [n.name for n in opened.plan.by_role("router")] if opened.plan else []
        raise BadInput(f"unknown router '{router}' (routers: {', '.join(routers) or 'none'})")
    ctl = node_dir(opened.journal.dir, router) / "bird.ctl"
    tool = env.require_tools(["birdc"])["birdc"]
    argv = [tool, "-s", str(ctl), *(command or [])]
    os.execv(tool, argv)


@app.command()
def fail(site: Annotated[str, typer.Argument(help="site name")],
         what: Annotated[str, typer.Argument(help="dns, dns-hang, introspect, introspect-hang, "
                                             "healthd, healthd-hang, speaker, speaker-hang, "
                                             "link, blackhole")],
         lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Inject a real fault at a site (kill or freeze a process, drop packets, link down)."""
    from lab.host import env, labs
    from lab.ops import faults

    env.require_linux_root()
    opened = labs.open_lab(lab)
    with locked(opened.name, "fail"):
        entry = faults.inject(opened, site, what)
    if json_out:
        ui.emit_json(entry)
    else:
        ui.out.print(f"{site}: {faults.FAULTS[what]}", highlight=False)


@app.command()
def heal(site: Annotated[str, typer.Argument(help="site name")],
         what: Annotated[str | None, typer.Argument(help="the fault (default: all)")] = None,
         lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Clear a fault at a site (or every fault there); a restarted or continued daemon
    must be up and ready (bounded wait), else exit 1 naming it, and the fault stays."""
    from lab.host import env, labs
    from lab.ops import faults

    env.require_linux_root()
    opened = labs.open_lab(lab)
    with locked(opened.name, "heal"):
        healed = faults.heal(opened, site, what)
    failed = [h for h in healed if not h["ready"]]
    # One sentence per daemon (a daemon both frozen and killed has two faults).
    by_detail: dict[str, list[str]] = {}
    for h in failed:
        by_detail.setdefault(h["detail"], []).append(h["fault"])
    problems = [f"{detail} (still recorded: {', '.join(names)}; `anycast-lab heal {site}` "
                "tries again)" for detail, names in by_detail.items()]
    if json_out:
        report: dict = {"ok": not failed, "healed": healed}
        if failed:
            report["error"] = {"message": problems[0], "details": problems[1:],
                               "exit_code": 1}
        ui.emit_json(report)
    elif healed:
        done: dict[str, list[str]] = {}
        for h in healed:
            if h["ready"]:
                done.setdefault(h["detail"], []).append(h["fault"])
        for detail, names in done.items():
            ui.out.print(f"{site}: healed {', '.join(names)}: {detail}", highlight=False,
                         soft_wrap=True)
        for problem in problems:
            ui.error(problem)
    else:
        ui.out.print(f"{site}: no active fault{' ' + what if what else ''} to heal")
    raise typer.Exit(1 if failed else 0)


@app.command()
def catchment(lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Client -> site (from the service's answer), RTT and router path, both families."""
    from lab.host import env, labs
    from lab.observe import catchment as cm

    env.require_linux_root()
    report = cm.collect(labs.open_lab(lab))
    if json_out:
        ui.emit_json(report)
    else:
        cm.print_human(report)
    raise typer.Exit(0 if report["ok"] else 1)


measure_app = typer.Typer(help="Measure what clients see.", no_args_is_help=True)
app.add_typer(measure_app, name="measure")


@measure_app.command("failover")
def measure_failover(
        site: Annotated[str, typer.Option("--site", help="the site to fail")],
        fault: Annotated[str, typer.Option("--fault", help="a fault (see `fail`) or drain")],
        trials: Annotated[int, typer.Option("--trials", min=1, max=100)] = 3,
        rate: Annotated[float, typer.Option("--rate", help="queries/s per client",
                                            min=1, max=1000)] = 100.0,
        plot: Annotated[Path | None, typer.Option("--plot", help="timeline PNG")] = None,
        lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Probe every client, inject the fault, heal it, repeat; report the outage."""
    from lab.host import env, labs
    from lab.measure import failover as mr

    plot = mr.check_plot_path(plot)  # before anything is measured
    env.require_linux_root()
    opened = labs.open_lab(lab)
    with ui.progress(f"measuring {fault} at {site}", quiet=json_out) as step:
        report = mr.failover(opened, site, fault, trials, rate, plot, step)
    if json_out:
        ui.emit_json(report)
    else:
        mr.print_human(report)


@app.command()
def drain(site: Annotated[str, typer.Argument(help="site name")], lab: LabOpt = None) -> None:
    """Planned maintenance: GRACEFUL_SHUTDOWN first (traffic moves), then withdraw."""
    from lab.host import env, labs
    from lab.ops import drain as dr

    env.require_linux_root()
    opened = labs.open_lab(lab)
    _require_health(opened, "drain")
    with locked(opened.name, "drain"):
        drained = dr.drain(opened, site)
    if drained:
        assert opened.topology is not None
        ui.out.print(f"{site}: draining: re-announced with GRACEFUL_SHUTDOWN (65535:0), "
                     f"withdrawal in {opened.topology.health.drain_delay_ms} ms")
    else:
        ui.out.print(f"{site}: already drained")


@app.command()
def undrain(site: Annotated[str, typer.Argument(help="site name")],
            lab: LabOpt = None) -> None:
    """End maintenance: announce again once the site's checks pass."""
    from lab.host import env, labs
    from lab.ops import drain as dr

    env.require_linux_root()
    opened = labs.open_lab(lab)
    _require_health(opened, "undrain")
    with locked(opened.name, "undrain"):
        undrained = dr.undrain(opened, site)
    if undrained:
        ui.out.print(f"{site}: undrained: announced again once its checks pass")
    else:
        ui.out.print(f"{site}: was not drained")


def _require_health(opened, what: str) -> None:
    if opened.topology is not None and not opened.topology.health.enabled:
        raise BadInput(f"lab '{opened.name}' runs without health daemons (health.enabled: "
                       f"false), and {what} is their job: enable health in the topology")


token_app = typer.Typer(help="Issue, revoke and list the lab's tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("issue")
def token_issue(client: Annotated[str, typer.Option("--client", help="client id")],
                scope: Annotated[str, typer.Option("--scope", help="space-separated scopes")]
                = "read",
                ttl: Annotated[int, typer.Option("--ttl", help="lifetime in seconds")] = 3600,
                sub: Annotated[str | None, typer.Option("--sub", help="subject")] = None,
                lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Issue a signed token (printed once; only its metadata is kept)."""
    from lab.host import labs
    from lab.ops import tokenstore

    tokenstore.check_ttl(ttl)
    opened = labs.open_lab(lab)
    token, claims = tokenstore.issue(opened.journal.dir, client, scope, ttl, sub)
    if json_out:
        ui.emit_json({"token": token, "claims": claims})
    else:
        ui.err.print(f"jti {claims['jti']}, client {client}, scope '{scope}', expires in "
                     f"{ttl} s", markup=False, highlight=False)
        print(token)


@token_app.command("revoke")
def token_revoke(what: Annotated[str, typer.Argument(help="a token id (jti) or a token")],
                 lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Revoke a token on every site (bumps each site's revocation list version)."""
    from lab.host import labs
    from lab.ops import tokenstore

    jti = tokenstore.jti_of(what)
    opened = labs.open_lab(lab)
    assert opened.plan is not None
    with locked(opened.name, "token revoke"):
        versions = tokenstore.revoke(opened.journal.dir, opened.plan, jti)
    if json_out:
        ui.emit_json({"jti": jti, "versions": versions})
    else:
        ui.out.print(f"revoked {jti} on {len(versions)} sites: " + ", ".join(
            f"{site} v{v}" for site, v in versions.items()), markup=False, highlight=False)


@token_app.command("list")
def token_list(lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Tokens issued in this lab, and where each is revoked."""
    from lab.host import labs
    from lab.ops import tokenstore

    opened = labs.open_lab(lab)
    assert opened.plan is not None
    items = tokenstore.listing(opened.journal.dir, opened.plan)
    if json_out:
        ui.emit_json({"tokens": items})
        return
    ui.out.print(ui.table("tokens", ["jti", "client", "sub", "scope", "expires", "revoked on"], [
        [*(escape(str(t[k])) for k in ("jti", "client_id", "sub", "scope")),
         "expired" if t["expired"] else tokenstore.expiry_text(t["exp"]),
         ", ".join(t["revoked_on"]) or "-"] for t in items]))


@app.command(hidden=True)
def generate(sites: Annotated[int, typer.Option(help="number of sites")] = 50,
             routers: Annotated[int, typer.Option(help="number of routers")] = 5,
             name: Annotated[str, typer.Option(help="lab name")] = "gen") -> None:
    """Print a generated topology (for benchmarks and scale tests)."""
    import yaml

    from lab.model.generate import generate_topology

    sys.stdout.write(yaml.safe_dump(generate_topology(name, sites, routers), sort_keys=False))


def main() -> None:
    try:
        # Without standalone mode, click returns the code of `typer.Exit` instead of exiting.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except LabError as exc:
        _fail(exc.message, exc.exit_code, exc.details)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as exc:
        from lab.host.safefs import is_machine_error, machine_problem

        if not is_machine_error(exc):
            _internal(exc)
        problem = machine_problem(exc, exc.filename or "the run directory")
        _fail(problem.message, problem.exit_code)
    except Exception as exc:  # usage errors from typer's (vendored) click, and the like
        # Matched by shape: typer ships its own copy of click's exception classes.
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            _fail(exc.format_message() + " (see --help)", exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(130)
        _internal(exc)


def _internal(exc: Exception) -> None:
    if os.environ.get("ANYCAST_LAB_DEBUG"):
        raise exc
    _fail(f"internal error ({type(exc).__name__}: {exc}); run again with "
          "ANYCAST_LAB_DEBUG=1 for the traceback and report it", 1)


def _fail(message: str, code: int, details: list[str] | None = None) -> None:
    """One sentence on stderr, or the contract's JSON error object under --json."""
    if "--json" in sys.argv[1:]:
        ui.emit_json({"ok": False, "error": {"message": message, "exit_code": code,
                                             "details": details or []}})
    else:
        ui.error(message, details)
    sys.exit(code)
