"""Commands for classes and CI: `scenario list|show|run|validate|schema`, and `reset`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from lab.cli import ui
from lab.cli.main import JsonOpt, LabOpt, app
from lab.model.errors import BadInput
from lab.model.names import valid_lab_name

if TYPE_CHECKING:
    from lab.scenario.model import Scenario, Step

scenario_app = typer.Typer(no_args_is_help=True, help="Scenarios: a narrative, real faults "
                           "and checked expectations (for classes and CI).")
app.add_typer(scenario_app, name="scenario")


@scenario_app.command(name="list")
def list_(json_out: JsonOpt = False) -> None:
    """The shipped scenarios: name, topology, steps, title."""
    from lab.scenario import catalog
    from lab.scenario.load import load_file

    rows = []
    for path in catalog.shipped():
        report = load_file(path)
        s = report.scenario
        rows.append({"name": path.stem, "ok": report.ok, "file": str(path),
                     "title": s.title if s else None, "topology": s.topology if s else None,
                     "steps": len(s.steps) if s else None,
                     "errors": [str(p) for p in report.problems]})
    if json_out:
        ui.emit_json({"ok": all(r["ok"] for r in rows), "scenarios": rows})
        return
    ui.out.print(ui.table("shipped scenarios (`anycast-lab scenario show NAME`)",
                          ["scenario", "topology", "steps", "title"],
                          [[r["name"], r["topology"] or "[red]invalid[/]", r["steps"],
                            escape(r["title"] or "; ".join(r["errors"][:1]))] for r in rows]))


@scenario_app.command()
def show(scenario: Annotated[str, typer.Argument(help="a shipped scenario's name, or a file")],
         json_out: JsonOpt = False) -> None:
    """A scenario's narrative and steps, readable."""
    from lab.scenario import catalog

    report = catalog.load_or_raise(catalog.find(scenario))
    s = report.scenario
    assert s is not None
    if json_out:
        ui.emit_json({"ok": True, "file": report.source, **s.model_dump(mode="json")})
        return
    from lab.scenario.evaluate import describe

    ui.out.print(f"[bold]{escape(s.title)}[/] ({s.name}, topology {s.topology}, "
                 f"{len(s.steps)} steps)", highlight=False)
    if s.narrative:
        ui.out.print(escape(s.narrative.rstrip()), highlight=False)
    for i, step in enumerate(s.steps, 1):
        ui.out.print(f"\n[bold]{i}. {escape(step.name)}[/]", highlight=False)
        if step.do:
            ui.out.print(f"   do: {escape(step.do)}", highlight=False)
        for exp in step.expect:
            ui.out.print(f"   expect ({step.within}): {escape(describe(exp))}", highlight=False)
        if step.explain:
            ui.out.print(f"   [dim]{escape(step.explain)}[/]", highlight=False)


@scenario_app.command()
def validate(scenario: Annotated[str, typer.Argument(help="a shipped scenario's name, or a "
                                                     "file")],
             json_out: JsonOpt = False) -> None:
    """Check a scenario file (and the names it uses against its topology); exit 2 if bad."""
    from lab.scenario import catalog
    from lab.scenario.load import load_file

    report = load_file(catalog.find(scenario))
    if json_out:
        ui.emit_json(report.to_json())
    elif report.ok:
        ui.out.print(f"[green]ok[/] {escape(report.source)}", highlight=False)
    else:
        ui.err.print(f"[red]{escape(report.source)}: {len(report.problems)} problem(s)[/]")
        for p in report.problems:
            line = f"{report.source}:{p.line}: " if p.line else f"{report.source}: "
            ui.err.print(f"  {line}{p}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if report.ok else 2)


@scenario_app.command()
def schema(json_out: JsonOpt = False) -> None:
    """Print the scenario file's JSON Schema (committed as scenarios/schema.json)."""
    from lab.scenario.schema import scenario_schema

    ui.emit_json(scenario_schema())


def check_junit_path(path: Path | None) -> None:
    """--junit must be a file that can be written (checked before any lab is touched)."""
    if path is None:
        return
    if path.is_dir():
        raise BadInput(f"--junit {path} is a directory; give a file path such as report.xml")
    if not path.parent.is_dir():
        raise BadInput(f"--junit {path}: the directory {path.parent} does not exist")
    if path.exists() and not path.is_file():
        raise BadInput(f"--junit {path} exists and is not a regular file")


@scenario_app.command()
def run(scenario: Annotated[str, typer.Argument(help="a shipped scenario's name, or a file")],
        lab: LabOpt = None, json_out: JsonOpt = False,
        junit: Annotated[Path | None, typer.Option("--junit", help="also write JUnit XML "
                                                   "here")] = None,
        pause: Annotated[bool, typer.Option("--pause", help="wait for Enter before each "
                                            "step (for a class)")] = False,
        keep: Annotated[bool, typer.Option("--keep", help="leave a lab this run brought up "
                                           "running afterwards")] = False,
        name: Annotated[str | None, typer.Option("--name", help="without --lab: the name of "
                                                 "the lab to bring up (default: the "
                                                 "topology's)")] = None) -> None:
    """Run a scenario: on --lab (its topology must match), else on a lab of the scenario's
    topology, brought up for the run (and torn down afterwards unless --keep). Exit 0
    every expectation held, 1 one did not, 2 bad scenario, 3 environment."""
    from lab.host import env, labs
    from lab.host.lock import locked
    from lab.model.compare import topology_changes
    from lab.ops import lifecycle
    from lab.scenario import catalog, runner

    path = catalog.find(scenario)
    loaded = catalog.load_or_raise(path)
    s, topo = loaded.scenario, loaded.topology
    assert s is not None and topo is not None
    check_junit_path(junit)
    if name is not None:
        if lab is not None:
            raise BadInput("give --lab (a lab that is up) or --name (a lab to bring up), "
                           "not both")
        if not valid_lab_name(name):
            raise BadInput(f"--name {name!r} is not a lab name (lowercase letters, digits "
                           "and '-', starting with a letter, at most 24 characters)")
        topo = topo.model_copy(update={"name": name})
    env.require_linux_root()
    built = False
    if lab is not None:
        opened = labs.open_lab(lab)
        assert opened.topology is not None
        mine = topo.model_copy(update={"name": opened.name})
        changed = topology_changes(opened.topology, mine)
        if changed:
            raise BadInput(f"lab '{opened.name}' does not run this scenario's topology "
                           f"({s.topology}): {changed[0]}", details=changed[1:8])
    else:
        lifecycle.stop_on_sigterm(topo.name)
        try:
            with ui.progress(f"bringing up lab '{topo.name}'", quiet=json_out) as step:
                opened = lifecycle.up(topo, step, source=loaded.topology_path)
            built = True
        except lifecycle.AlreadyUp as exc:
            opened = labs.open_lab(exc.lab)
    try:
        with locked(opened.name, "scenario"):
            report = runner.run(opened, s, _hooks(s, json_out, pause))
    finally:
        if built and not keep:
            lifecycle.down(opened.name)
    report["kept"] = built and keep
    if junit is not None:
        from lab.scenario.junit import write_junit

        write_junit(report, junit)
    if json_out:
        ui.emit_json({"ok": report["ok"], **report})
    else:
        verdict = "[green]passed[/]" if report["ok"] else "[red]failed[/]"
        ui.out.print(f"scenario {s.name}: {verdict}: {report['passed']} of "
                     f"{len(report['steps'])} steps passed in {report['elapsed_s']:.1f} s",
                     highlight=False)
    raise typer.Exit(0 if report["ok"] else 1)


def _hooks(s: Scenario, json_out: bool, pause: bool) -> Any:
    from lab.scenario.runner import Hooks

    def before(index: int, step: Step) -> None:
        if pause:
            ui.err.print(f"\n[bold]{index + 1}. {escape(step.name)}[/]"
                         + (f": {escape(step.do)}" if step.do else ""), highlight=False)
            ui.err.print("press Enter to run this step", highlight=False)
            sys.stdin.readline()

    def after(result: dict[str, Any]) -> None:
        if json_out:
            return
        mark = "[green]✓[/]" if result["ok"] else "[red]✗[/]"
        ui.out.print(f"{mark} {result['index']}. {escape(result['name'])} "
                     f"({result['elapsed_s']:.2f} s)", highlight=False)
        action = result.get("action")
        if action:
            ui.out.print(f"    do {escape(result['do'])}: {escape(action['said'])}",
                         highlight=False, soft_wrap=True)
        for v in result["expect"]:
            sign = "ok" if v["ok"] else "[red]FAILED[/]"
            ui.out.print(f"    {sign}: {escape(v['expected'])}; observed "
                         f"{escape(v['observed'])}", highlight=False, soft_wrap=True)
        if not result["ok"] and result.get("message"):
            ui.out.print(f"    [red]{escape(result['message'])}[/]", highlight=False,
                         soft_wrap=True)
        if result.get("explain"):
            ui.out.print(f"    [dim]{escape(result['explain'])}[/]", highlight=False,
                         soft_wrap=True)

    def note(message: str) -> None:
        if not json_out:
            ui.err.print(f"  {message}", highlight=False)

    return Hooks(before=before, after=after, note=note, pauses=pause)


@app.command()
def reset(lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Return the lab to normal: heal every fault, clear impairments, undrain, restore
    every site's revocation list; wait until every client is at its expected site."""
    from lab.host import env, labs
    from lab.host.lock import locked
    from lab.ops import reset as rs

    env.require_linux_root()
    opened = labs.open_lab(lab)
    started = time.monotonic()
    with locked(opened.name, "reset"), \
            ui.progress(f"resetting lab '{opened.name}'", quiet=json_out) as step:
        report = rs.reset(opened, progress=step)
    report["elapsed_s"] = round(time.monotonic() - started, 3)
    if json_out:
        if not report["ok"]:
            report["error"] = {"message": report["problems"][0], "exit_code": 1,
                               "details": report["problems"][1:]}
        ui.emit_json(report)
    elif report["ok"]:
        ui.out.print(f"lab '{opened.name}' is back to normal in {report['elapsed_s']:.2f} s "
                     f"(every client at its expected site)", highlight=False)
    else:
        ui.error(f"lab '{opened.name}' did not return to normal within "
                 f"{rs.RESET_TIMEOUT_S:g} s: {report['problems'][0]}", report["problems"][1:])
    raise typer.Exit(0 if report["ok"] else 1)
