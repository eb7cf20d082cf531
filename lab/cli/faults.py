"""Commands that break and mend a site: fail, heal, drain, undrain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperCommand

from lab.cli import ui
from lab.cli.main import JsonOpt, LabOpt, app
from lab.host.labs import command
from lab.host.lock import locked
from lab.model.errors import BadInput

if TYPE_CHECKING:
    from lab.host.labs import Lab


class _FaultHelp(TyperCommand):
    """`fail --help` lists the faults from the registry (asked only when help is shown:
    the registry imports the fault machinery, which other commands do not need)."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        from lab.ops import faults

        for param in self.params:
            if param.name == "what":
                param.help = ", ".join(faults.fault_names())  # type: ignore[attr-defined]
        width = max(map(len, faults.REGISTRY))
        self.epilog = "\n".join(["Faults:"] + [f"{name:<{width}}  {escape(fault.description)}"
                                               for name, fault in faults.REGISTRY.items()])
        super().format_help(ctx, formatter)


@app.command(cls=_FaultHelp)
def fail(site: Annotated[str, typer.Argument(help="site name")],
         what: Annotated[str, typer.Argument(help="the fault (listed below)")],
         lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Inject a real fault at a site (kill or freeze a process, drop packets, link down)."""
    from lab.ops import faults

    opened = _open_as_root(lab)
    with locked(opened.name, "fail"):
        entry = faults.inject(opened, site, what)
    if json_out:
        ui.emit_json(entry)
    else:
        ui.out.print(f"{site}: {faults.REGISTRY[what].description}", highlight=False)


@app.command()
def heal(site: Annotated[str, typer.Argument(help="site name")],
         what: Annotated[str | None, typer.Argument(help="the fault (default: all)")] = None,
         lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Clear a fault at a site (or every fault there); a restarted or continued daemon
    must be up and ready (bounded wait), else exit 1 naming it, and the fault stays."""
    from lab.ops import faults

    opened = _open_as_root(lab)
    with locked(opened.name, "heal"):
        healed = faults.heal(opened, site, what)
    failed = [h for h in healed if not h["ready"]]
    # One sentence per daemon (a daemon both frozen and killed has two faults).
    by_detail: dict[str, list[str]] = {}
    for h in failed:
        by_detail.setdefault(h["detail"], []).append(h["fault"])
    again = command(opened.name, f"heal {site}")
    problems = [f"{detail} (still recorded: {', '.join(names)}; {again} tries again)"
                for detail, names in by_detail.items()]
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
def drain(site: Annotated[str, typer.Argument(help="site name")], lab: LabOpt = None,
          json_out: JsonOpt = False) -> None:
    """Planned maintenance: GRACEFUL_SHUTDOWN first (traffic moves), then withdraw."""
    opened, drained = _maintenance("drain", site, lab)
    assert opened.topology is not None
    delay_ms = opened.topology.health.drain_delay_ms
    if json_out:
        ui.emit_json({"ok": True, "lab": opened.name, "site": site, "drained": True,
                      "already_drained": not drained, "withdrawal_in_ms": delay_ms})
    elif drained:
        ui.out.print(f"{site}: draining: re-announced with GRACEFUL_SHUTDOWN (65535:0), "
                     f"withdrawal in {delay_ms} ms")
    else:
        ui.out.print(f"{site}: already drained")


@app.command()
def undrain(site: Annotated[str, typer.Argument(help="site name")],
            lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """End maintenance: announce again once the site's checks pass."""
    opened, undrained = _maintenance("undrain", site, lab)
    if json_out:
        ui.emit_json({"ok": True, "lab": opened.name, "site": site, "drained": False,
                      "was_drained": undrained})
    elif undrained:
        ui.out.print(f"{site}: undrained: announced again once its checks pass")
    else:
        ui.out.print(f"{site}: was not drained")


def _open_as_root(lab: str | None) -> Lab:
    """The lab these commands change; they need root (EnvironmentProblem otherwise)."""
    from lab.host import env, labs

    env.require_linux_root()
    return labs.open_lab(lab)


def _maintenance(verb: str, site: str, lab: str | None) -> tuple[Lab, bool]:
    """`drain` or `undrain` a site of the lab, under its lock; returns the lab and whether
    anything changed. Only health daemons drain, so a lab without them refuses."""
    from lab.ops import drain as dr

    opened = _open_as_root(lab)
    if opened.topology is not None and not opened.topology.health.enabled:
        raise BadInput(f"lab '{opened.name}' runs without health daemons (health.enabled: "
                       f"false), and {verb} is their job: enable health in the topology")
    with locked(opened.name, verb):
        changed = dr.drain(opened, site) if verb == "drain" else dr.undrain(opened, site)
    return opened, changed
