"""`measure failover` and its table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lab.cli import ui
from lab.cli.main import JsonOpt, LabOpt, app


def print_failover(report: dict[str, Any]) -> None:
    rows = []
    for i, trial in enumerate(report["trials"], 1):
        for c in trial["clients"]:
            rows.append([i, c["client"], c["site_before"], c["site_after"],
                         "never" if c["outage_ms"] is None else c["outage_ms"], c["lost"],
                         c["recovery_ms"]])
    streams = any(c.get("broken") is not None for t in report["trials"] for c in t["clients"])
    if streams:
        rows = [[*row, c["broken"], c["reconnect_ms"]] for row, c in zip(
            rows, (c for t in report["trials"] for c in t["clients"]), strict=True)]
    probe = f" ({report.get('probe', 'dns')}, IPv{report.get('family', 4)})"
    ui.out.print(ui.table(f"failover: {report['fault']} at {report['site']}{probe}",
                          ["trial", "client", "before", "after", "outage ms", "lost",
                           "recovery ms", *(["broken", "reconnect ms"] if streams else [])],
                          rows))
    s = report["summary"]
    ui.out.print(f"outage ms over {s['affected_client_trials']} affected client-trials: "
                 f"median {s['outage_ms']['median']}, p95 {s['outage_ms']['p95']}, "
                 f"max {s['outage_ms']['max']}; lost queries median {s['lost']['median']}, "
                 f"max {s['lost']['max']}", highlight=False)
    if "broken" in s:
        ui.out.print(f"connections broken: {s['broken_total']} in all (per client-trial "
                     f"median {s['broken']['median']}, max {s['broken']['max']}); answered "
                     f"again on a new connection after median {s['reconnect_ms']['median']} "
                     f"ms, max {s['reconnect_ms']['max']} ms", highlight=False)
    if report.get("plot"):
        ui.out.print(f"timeline: {report['plot']}")


measure_app = typer.Typer(help="Measure what clients see.", no_args_is_help=True)
app.add_typer(measure_app, name="measure")


@measure_app.command("failover")
def measure_failover(
        site: Annotated[str, typer.Option("--site", help="the site to fail")],
        fault: Annotated[str, typer.Option("--fault", help="a fault (see `fail`) or drain")],
        trials: Annotated[int, typer.Option("--trials", min=1, max=100)] = 3,
        rate: Annotated[float, typer.Option("--rate", help="queries/s per client",
                                            min=1, max=1000)] = 100.0,
        probe: Annotated[str, typer.Option("--probe", help="dns (UDP), https (a new TLS "
                                           "connection per request), https-keepalive, tcp "
                                           "(long-lived DNS-over-TCP streams: broken "
                                           "connections)")] = "dns",
        family: Annotated[int, typer.Option("--family", help="4 or 6")] = 4,
        plot: Annotated[Path | None, typer.Option("--plot", help="timeline PNG")] = None,
        lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Probe every client, inject the fault, heal it, repeat; report the outage."""
    from lab.host import env, labs
    from lab.measure import failover as mr

    plot = mr.check_plot_path(plot)  # before anything is measured
    mr.check_probe(probe, family, rate)
    env.require_linux_root()
    opened = labs.open_lab(lab)
    with ui.progress(f"measuring {fault} at {site}", quiet=json_out) as step:
        report = mr.failover(opened, site, fault, trials, rate, plot, step, probe, family)
    if json_out:
        ui.emit_json(report)
    else:
        print_failover(report)
