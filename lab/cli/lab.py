"""Commands about a whole lab: validate, schema, up, down, list, status, exec, birdc,
catchment (and the hidden generate); the tables of status, list and catchment."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from lab.cli import ui
from lab.cli.main import JsonOpt, LabOpt, app, default_topology
from lab.model.errors import BadInput, EnvironmentProblem, LabError


def _yes(value: bool | None) -> str:
    return "[green]yes[/]" if value else "[red]no[/]"


def _announced(site: dict[str, Any]) -> str:
    """What the router holds, and the speaker's word where it says otherwise."""
    families = site.get("announced_by_family", {})
    text = _yes(site["announced"])
    if not site["announced"] and any(families.values()):
        text += f" ({' '.join(f for f, held in families.items() if held)} only)"
    said = site.get("speaker_announced")
    if said is not None and said != site["announced"]:
        text += f" [yellow](speaker: {site.get('speaker')})[/]"
    return text


def _health(site: dict[str, Any]) -> str:
    health = site.get("health") or "unknown"
    colour = "green" if health in ("up", "static") else "red"
    text = f"[{colour}]{health}[/]"
    text += " [yellow](saturated)[/]" if (site.get("saturation") or {}).get("saturated") else ""
    return text + (" [yellow](drained)[/]" if site.get("drained") else "")


def _sites(expected: str | list[str] | None) -> list[str]:
    """A client's `expect:` (one site or a list) as a list."""
    if expected is None:
        return []
    return [expected] if isinstance(expected, str) else list(expected)


def _words(expected: str | list[str] | None) -> str:
    return " or ".join(_sites(expected))


def _identity(entry: dict[str, Any] | None) -> str:
    """A site's identity cell: version, sync age, and what is wrong in red."""
    from lab.observe.identity import cell

    text, bad = cell(entry)
    return f"[red]{escape(text)}[/]" if bad else escape(text)


def _state(state: str | None) -> str:
    return f"[green]{state}[/]" if state == "Established" else f"[red]{state}[/]"


def _clock(when: str | float | None) -> str:
    """An ISO time or epoch seconds as the "HH:MM:SS" (UTC) that status shows."""
    if isinstance(when, int | float) and not isinstance(when, bool):
        return time.strftime("%H:%M:%S", time.gmtime(when))
    return when[11:19] if isinstance(when, str) and len(when) >= 19 else "?"


def _impairment(record: dict[str, Any]) -> str:
    """'loss 5 % (nftables), rate 1mbit (tbf)': each setting and the mechanism applying it."""
    mechanisms = record.get("mechanisms") or {}
    parts = []
    for field, unit in (("loss", " %"), ("rate", ""), ("delay", "")):
        value = record.get(field)
        if value is None:
            continue
        how = mechanisms.get(field)
        parts.append(f"{field} {value:g}{unit}" if isinstance(value, float)
                     else f"{field} {value}{unit}")
        parts[-1] += f" ({how})" if how else ""
    return ", ".join(parts) or "none"


def _plain_hint(verb: str) -> str:
    return f"`anycast-lab {verb}`"


def in_force_lines(report: dict[str, Any],
                   hint: Callable[[str], str] = _plain_hint) -> list[str]:
    """What is in force, a line each: every fault (`fault: dns-hang at ams since
    12:01:03, until `anycast-lab heal ams``) and every run-time impairment (`impairment:
    r-eu--r-us loss 5 % (nftables) since 12:02:03, until `anycast-lab impair r-eu--r-us
    --clear``); `hint` writes the command that ends it."""
    lines = [f"fault: {f.get('fault')} at {f.get('site')} since {_clock(f.get('since'))}, "
             f"until {hint('heal ' + str(f.get('site')))}" for f in report.get("faults") or []]
    for link, record in (report.get("impairments") or {}).items():
        if isinstance(record, dict):
            name = record.get("link") or link
            lines.append(f"impairment: {name} {_impairment(record)} since "
                         f"{_clock(record.get('t'))}, until {hint(f'impair {name} --clear')}")
    return lines


def print_status(report: dict[str, Any], show_fabric: bool = False) -> None:
    lab = report["lab"]
    ui.out.print(f"lab [bold]{lab}[/] ({report.get('phase')}), anycast "
                 f"{', '.join(report['anycast'])}", highlight=False)
    with_identity = any(s.get("identity") for s in report["sites"].values())
    ui.out.print(ui.table("sites", ["site", "router", "BGP session", "announced", "health",
                                    "checks", "since", *(["identity"] if with_identity
                                                         else [])], [
        [name, s["router"], _state(s["session"]), _announced(s),
         _health(s), " ".join(f"{c}:{v['state']}" for c, v in s.get("checks", {}).items()),
         (s.get("health_since") or "")[11:19],
         *([_identity(s.get("identity"))] if with_identity else [])]
        for name, s in report["sites"].items()]))
    issuer = report.get("issuer")
    if issuer:
        from lab.observe.identity import issuer_line

        line, down = issuer_line(issuer)
        ui.out.print(f"[bold]issuer[/]: {'[red]' if down else ''}{escape(line)}"
                     f"{'[/]' if down else ''}", highlight=False, soft_wrap=True)
    for name, s in report["sites"].items():
        if s.get("reason"):
            ui.out.print(f"[bold]{name}[/]: {escape(s['reason'])}", highlight=False,
                         soft_wrap=True)
    for name, s in report["sites"].items():
        bfd = s.get("bfd")
        if bfd:
            colour = "green" if bfd["state"] == "Up" else "red"
            ui.out.print(f"[bold]{name}[/]: BFD [{colour}]{bfd['state']}[/] "
                         f"({bfd['interval_ms']} ms x {bfd['multiplier']}, responder "
                         f"{bfd['responder']})", highlight=False)
    from lab.host.labs import command

    for line in in_force_lines(report, lambda verb: command(lab, verb)):
        kind, _, rest = line.partition(": ")
        ui.out.print(f"[yellow]{kind}:[/] {escape(rest)}", highlight=False, soft_wrap=True)
    rows = []
    for name, r in report["routers"].items():
        for prefix, best in r["best"].items():
            spread = best.get("next_hop_sites") or {}
            sites = best.get("sites") or ([best["site"]] if best["site"] else [])
            hops = "\n".join(f"{hop} ({', '.join(ends) or '?'})" if len(spread) > 1 else hop
                              for hop, ends in spread.items()) or best["next_hop"]
            rows.append([name, prefix, " ".join(sites) or "[red]none[/]", hops,
                         " ".join(str(a) for a in best["as_path"])])
    ui.out.print(ui.table("routers: best path to the anycast prefixes",
                          ["router", "prefix", "site", "next hop", "AS path"], rows))

    def where(site: str | None, expected: str | list[str], rtt: float | None) -> str:
        if site is None:
            return "[red]no answer[/]"
        colour = "green" if site in _sites(expected) else "yellow"
        return f"[{colour}]{site}[/] ({rtt:.2f} ms)" if rtt is not None else site

    def spread(counts: dict[str, int] | None) -> str:
        """A client's answers over several queries, compactly: 'a1:12 a2:8'."""
        if not counts or len(counts) < 2:
            return ""
        return "\n" + " ".join(f"{site}:{n}" for site, n in sorted(counts.items()))

    def verdict(c: dict[str, Any]) -> str:
        return {"expected": "[green]as expected[/]",
                "failover": "[green]as expected (failover)[/]"}.get(
                    c.get("as_expected"), "[red]not as expected[/]")  # type: ignore[arg-type]

    ui.out.print(ui.table("clients: which site answers (DNS id.server)",
                          ["client", "expected", "IPv4 anycast", "IPv6 anycast", "verdict"], [
        [name, _words(c["expected"]),
         where(c["site"], c["expected"], c["rtt_ms"]) + spread(c.get("sites")),
         where(c["site6"], c["expected"], c["rtt6_ms"]) + spread(c.get("sites6")), verdict(c)]
        for name, c in report["clients"].items()]))
    if show_fabric and "fabric" in report:
        rows = []
        for name, node in report["fabric"]["nodes"].items():
            for iface in node["interfaces"]:
                if iface["ifname"] == "lo" and node["role"] != "site":
                    continue
                addrs = [a for a in iface["addresses"] if not a.startswith("fe80")]
                rows.append([name, node["role"], iface["ifname"], iface["state"],
                             " ".join(addrs)])
        ui.out.print(ui.table("fabric", ["node", "role", "interface", "state", "addresses"],
                              rows))
    for problem in report.get("problems", []):
        ui.out.print(f"[red]![/] {problem}", highlight=False)
    for note in report.get("notes", []):
        ui.out.print(f"[yellow]note:[/] {note}", highlight=False)


def print_catchment(report: dict[str, Any]) -> None:
    from lab.observe.catchment import path_text

    rows = []
    for name, c in report["clients"].items():
        for fam in ("ipv4", "ipv6"):
            f = c[fam]
            path = path_text(f["path"])
            site = f["site"] or "[red]no answer[/]"
            if f["site"] and f["site"] not in _sites(c["expected"]):
                site = f"[yellow]{site}[/]"
            rtt = f"{f['rtt_ms']:.2f}" if f["rtt_ms"] is not None else "-"
            rows.append([name, fam, site, _words(c["expected"]), rtt, path])
    ui.out.print(ui.table(f"catchment of lab '{report['lab']}'",
                          ["client", "family", "site", "expected", "RTT ms", "path"], rows))


@app.command()
def validate(topology: Annotated[Path | None, typer.Argument(help="topology file")] = None,
             json_out: JsonOpt = False) -> None:
    """Check a topology file, and its prefixes against this machine's own networks
    (read, never changed); changes nothing."""
    from lab.host.env import host_networks_or_none
    from lab.model import load_file

    report = load_file(topology or default_topology(), host_networks_or_none())
    if report.problems and not report.problems[0].path and report.problems[0].line is None:
        raise BadInput(report.problems[0].message)  # a missing or unreadable file
    if json_out:
        ui.emit_json(report.to_json())
    elif report.ok:
        assert report.topology is not None
        t = report.topology
        ui.out.print(f"[green]ok[/] {escape(report.source)}: lab '{t.name}', {len(t.routers)} "
                     f"routers, {len(t.sites)} sites, {len(t.clients)} clients, "
                     f"{len(t.links)} links")
        for w in report.warnings:
            line = f"{report.source}:{w.line}: " if w.line else f"{report.source}: "
            ui.err.print(f"  warning: {line}{w}", markup=False, highlight=False,
                         soft_wrap=True)
    else:
        ui.err.print(f"[red]{escape(report.source)}: {len(report.problems)} problem(s)[/]")
        for p in report.problems:  # plain text: messages quote the file ([r1, r2], names)
            line = f"{report.source}:{p.line}: " if p.line else f"{report.source}: "
            ui.err.print(f"  {line}{p}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if report.ok else 2)


@app.command()
def schema(json_out: JsonOpt = False) -> None:
    """Print the topology file's JSON Schema (for editors; JSON with or without --json)."""
    from lab.model.schema import topology_schema

    ui.emit_json(topology_schema())


@app.command()
def up(topology: Annotated[Path | None, typer.Argument(help="topology file")] = None,
       name: Annotated[str | None, typer.Option(
           "--name", "--lab",
           help="override the lab's name (the one `down --lab` and the others take)")] = None,
       keep_on_failure: Annotated[bool | None, typer.Option(
           "--keep-on-failure/--no-keep-on-failure",
           help="when the lab does not converge as expected, leave it up for inspection "
                "instead of rolling back (exit 1 either way; default: the topology's "
                "up.keep_on_failure, else no)")] = None,
       replace: Annotated[bool, typer.Option(
           "--replace", help="if a lab of this name is up, tear it down and build again")]
       = False,
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
            lab = lifecycle.up(topo, step, keep_on_failure=keep_on_failure, replace=replace,
                               source=path)
    except lifecycle.AlreadyUp as exc:
        again = f"anycast-lab up {path}" + (f" --name {name}" if name else "") + " --replace"
        ui.err.print(f"lab '{exc.lab}' is already up with this topology; showing its status "
                     f"(to rebuild it: `{again}`)", markup=False, highlight=False,
                     soft_wrap=True)
        lab = labs.open_lab(exc.lab)
    report = status.collect(lab, fabric=False)
    report["elapsed_s"] = round(time.monotonic() - started, 3)
    if json_out:
        ui.emit_json(report)
    else:
        print_status(report)
        ui.out.print(f"lab '{topo.name}' up in {report['elapsed_s']:.2f} s")
    raise typer.Exit(0 if report.get("ok", True) else 1)


@app.command()
def down(lab: LabOpt = None,
         all_labs: Annotated[bool, typer.Option("--all", help="tear down every lab")] = False,
         topology: Annotated[Path | None, typer.Option(
             "--topology", help="the lab this topology file builds (its name:)")] = None,
         json_out: JsonOpt = False) -> None:
    """Tear down everything the lab created, from its own records."""
    from lab.host import env
    from lab.host.journal import existing_labs
    from lab.host.labs import env_note
    from lab.ops import lifecycle

    if topology is not None:
        if all_labs:
            raise BadInput("give --topology or --all, not both")
        lab = lifecycle.lab_of(topology)
    env.require_linux_root()
    names = lifecycle.labs_to_tear_down(lab, all_labs)
    reports = [lifecycle.down(n) for n in names]
    pruned = lifecycle.prune_failed(keep=0) if all_labs else 0
    leftovers = [r for r in reports if r.leftover]
    still_up = existing_labs()
    if json_out:
        ui.emit_json({"ok": not leftovers, "removed": [r.__dict__ for r in reports],
                      "failed_logs_removed": pruned, "labs_up": still_up})
        if leftovers:
            raise typer.Exit(EnvironmentProblem.exit_code)
    elif not reports:
        ui.out.print("nothing to tear down: " + (
            f"lab '{lab}'{env_note(lab)} is not up (labs up: {', '.join(still_up) or 'none'})"
            if lab else "no lab is up"), markup=False, highlight=False, soft_wrap=True)
    else:
        for r in reports:
            ui.out.print(f"lab '{r.lab}' down: {r.namespaces} namespaces, {r.processes} "
                         f"processes removed in {r.elapsed_s:.2f} s")
    if leftovers:
        first = leftovers[0]
        raise EnvironmentProblem(f"lab '{first.lab}': its processes and namespaces are gone, "
                                 f"but {first.leftover}")


def print_labs(report: dict[str, Any]) -> None:
    if not report["labs"]:
        ui.out.print("no lab is up: start one with `anycast-lab up`")
        return
    rows = []
    for entry in report["labs"]:
        nodes = entry["nodes"]
        rows.append([escape(entry["name"]), escape(_shown_path(entry["topology"])),
                     entry["phase"] or "-",
                     age_text(entry["age_s"]) if entry["age_s"] is not None else "-",
                     f"{nodes['routers']}/{nodes['sites']}/{nodes['clients']}" if nodes else "-",
                     escape(entry["health"]["summary"])])
    ui.out.print(ui.table("labs on this machine (nodes: routers/sites/clients; health: "
                          "the sites' health daemons, BGP sessions Established)",
                          ["lab", "topology", "phase", "age", "nodes", "health"], rows))


def _shown_path(path: str | None) -> str:
    """A topology file as the user would type it here: relative to the working directory
    when it is below it."""
    if not path:
        return "-"
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def age_text(seconds: float) -> str:
    """12 s, 3m05s, 2h07m, 3d04h."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


@app.command(name="list")
def list_(json_out: JsonOpt = False) -> None:
    """The labs on this machine: name, topology file, phase, age, nodes, health."""
    from lab.host import env
    from lab.observe import inventory
    from lab.ops import lifecycle

    env.require_linux_root()
    orphans, elsewhere = lifecycle.unjournaled_labs()
    report = {"ok": True, "labs": inventory.labs(orphans=orphans, elsewhere=elsewhere)}
    if json_out:
        ui.emit_json(report)
    else:
        print_labs(report)


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
        print_status(report, show_fabric=fabric)
    raise typer.Exit(0 if report.get("ok", True) else 1)


def command_argv(args: list[str]) -> list[str]:
    """The command `exec` runs: what follows NODE, without the one `--` that separates it
    (a `--` inside the command's own arguments is the command's)."""
    return list(args[1:]) if args[:1] == ["--"] else list(args)


@app.command(name="exec", context_settings={"allow_extra_args": True,
                                            "ignore_unknown_options": True})
def exec_(ctx: typer.Context, node: Annotated[str, typer.Argument(help="node name")],
          lab: LabOpt = None) -> None:
    """Run a command inside a node's namespace: anycast-lab exec NODE -- CMD..."""
    from lab.host import env, labs
    from lab.host.procs import MARKER, NODE_MARKER, enter_netns

    argv = command_argv(ctx.args)
    if not argv:
        raise BadInput("no command given: use `anycast-lab exec NODE -- CMD...`")
    env.require_linux_root()
    opened = labs.open_lab(lab)
    if opened.plan is None or node not in opened.plan.nodes:
        known = ", ".join(opened.plan.nodes) if opened.plan else "none"
        raise BadInput(f"unknown node '{node}' in lab '{opened.name}' (known: {known})")
    if not Path("/run/netns", opened.plan.nodes[node].netns).exists():
        raise LabError(f"node '{node}' has no namespace: the lab is broken, run "
                       f"{labs.command(opened.name, 'down')} and `up` again")
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
    from lab.model import names

    env.require_linux_root()
    opened = labs.open_lab(lab)
    if opened.plan is None or opened.plan.nodes.get(router) is None \
            or opened.plan.nodes[router].role != "router":
        routers = [n.name for n in opened.plan.by_role("router")] if opened.plan else []
        raise BadInput(f"unknown router '{router}' (routers: {', '.join(routers) or 'none'})")
    ctl = names.bird_socket(opened.journal.dir, router)
    tool = env.require_tools(["birdc"])["birdc"]
    argv = [tool, "-s", str(ctl), *(command or [])]
    os.execv(tool, argv)


@app.command()
def catchment(lab: LabOpt = None, json_out: JsonOpt = False,
              plot: Annotated[Path | None, typer.Option(
                  "--plot", help="also draw clients x sites per family (a .png file)")]
              = None) -> None:
    """Client -> site (from the service's answer), RTT and router path, both families."""
    from lab.host import env, labs
    from lab.measure.failover import check_plot_path
    from lab.observe import catchment as cm

    check_plot_path(plot, "the catchment matrix")
    env.require_linux_root()
    opened = labs.open_lab(lab)
    report = cm.collect(opened)
    if plot is not None:
        from lab.draw.catchment import draw

        assert opened.topology is not None
        report["plot"] = str(draw(report, list(opened.topology.sites), plot))
    if json_out:
        ui.emit_json(report)
    else:
        print_catchment(report)
        if report.get("plot"):
            ui.out.print(f"picture: {report['plot']}", highlight=False)
    raise typer.Exit(0 if report["ok"] else 1)


@app.command(hidden=True)
def generate(sites: Annotated[int, typer.Option(help="number of sites")] = 50,
             routers: Annotated[int, typer.Option(help="number of routers")] = 5,
             name: Annotated[str, typer.Option(help="lab name")] = "gen",
             issuer: Annotated[bool, typer.Option(help="an issuer on the first router, "
                                                       "as in the default lab")] = True) -> None:
    """Print a generated topology (for benchmarks and scale tests)."""
    import yaml

    from lab.model.generate import generate_topology

    sys.stdout.write(yaml.safe_dump(generate_topology(name, sites, routers, issuer),
                                    sort_keys=False))
