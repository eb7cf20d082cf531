"""`measure failover` and its table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lab.cli import ui
from lab.cli.main import JsonOpt, LabOpt, app
from lab.model.errors import BadInput


def print_failover(report: dict[str, Any]) -> None:
    rows = []
    for i, trial in enumerate(report["trials"], 1):
        for c in trial["clients"]:
            moved = c["site_after"] != c["site_before"] or c["lost"]
            rows.append([i, c["client"], c.get("family", "ipv4"), c["site_before"],
                         c["site_after"],
                         "never" if c["outage_ms"] is None else c["outage_ms"], c["lost"],
                         c["recovery_ms"] if moved else "-"])
    streams = any(c.get("broken") is not None for t in report["trials"] for c in t["clients"])
    if streams:
        rows = [[*row, c["broken"], c["reconnect_ms"]] for row, c in zip(
            rows, (c for t in report["trials"] for c in t["clients"]), strict=True)]
    ui.out.print(ui.table(f"failover: {report['fault']} at {report['site']} "
                          f"({report.get('probe', 'dns')})",
                          ["trial", "client", "family", "before", "after", "outage ms",
                           "lost", "recovery ms",
                           *(["broken", "reconnect ms"] if streams else [])], rows))
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


FAILOVER_HELP = """Probe every client, inject the fault, heal it, repeat; report the outage.

Each client asks the anycast DNS address (id.server) --rate times a second
from its own namespace, over IPv4, IPv6 or both (--family).
The table has a row per trial, client and family:

\b
before: the site answering most queries in the second before the fault.
after: the site that answered the last query before the heal.
outage ms: from the first query after the fault that failed (or was
  answered by another site) to the first answer from `after`; 0 if the
  client moved without a failed query; `never`: no answer before the heal.
lost: queries without an answer between the fault and the heal.
recovery ms: from the heal to the first answer from `before` again;
  `-` for a client the fault did not touch (it never left).

--plot draws every trial on one time axis (0: the fault) with markers:
health check down, withdraw sent, route changed at each client's router,
client answered elsewhere, fault healed, re-announced. Past 6 trials: a
summary panel of every trial and the worst trials."""


@measure_app.command("failover", help=FAILOVER_HELP)
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
        plot: Annotated[Path | None, typer.Option("--plot", help="timeline PNG")] = None,
        family: Annotated[str, typer.Option(
            "--family", help="ipv4 (or 4), ipv6 (or 6) or both: which anycast address "
                             "the clients probe")] = "ipv4",
        lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    from lab.host import env, labs
    from lab.measure import failover as mr

    families = {"ipv4": ("ipv4",), "4": ("ipv4",), "ipv6": ("ipv6",), "6": ("ipv6",),
                "both": ("ipv4", "ipv6")}.get(family)
    if families is None:
        raise BadInput(f"--family {family}: give ipv4, ipv6 or both")
    plot = mr.check_plot_path(plot)  # before anything is measured
    mr.check_probe(probe, rate)
    env.require_linux_root()
    opened = labs.open_lab(lab)
    with ui.progress(f"measuring {fault} at {site}", quiet=json_out) as step:
        report = mr.failover(opened, site, fault, trials, rate, plot, step, families,
                             probe)
    if json_out:
        ui.emit_json(report)
    else:
        print_failover(report)


@measure_app.command("exposure")
def measure_exposure(
        site: Annotated[str, typer.Option("--site", help="the site cut off from the issuer, "
                                          "onto which a failover is forced")],
        trials: Annotated[int, typer.Option("--trials", min=1, max=50)] = 1,
        rate: Annotated[float, typer.Option("--rate", help="introspections/s per client",
                                            min=1, max=200)] = 20.0,
        window: Annotated[float, typer.Option("--window", help="seconds probed after the "
                                              "revocation", min=1, max=120)] = 4.0,
        plot: Annotated[Path | None, typer.Option("--plot", help="timeline PNG")] = None,
        lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Revoke a token while every client introspects it through the anycast address, with
    SITE stale and a failover forced onto it: how long the revoked token is still accepted
    (the lab's identity.coupling decides whether SITE withdrew first)."""
    from lab.host import env, labs
    from lab.host.lock import locked
    from lab.measure.exposure import exposure
    from lab.measure.failover import check_plot_path

    plot = check_plot_path(plot)  # before anything is measured
    opened = labs.open_lab(lab)
    env.require_linux_root()
    with locked(opened.name, "measure exposure"), \
            ui.progress(f"measuring exposure at {site}", quiet=json_out):
        report = exposure(opened, site, trials, rate, window, plot)
    if json_out:
        ui.emit_json(report)
        return
    rows = []
    for i, t in enumerate(report["trials"], 1):
        for client, c in t["clients"].items():
            rows.append([i, client, ", ".join(c["sites"]) or "-", c["accepted_after_revocation"],
                         ", ".join(c["accepted_by"]) or "-",
                         "-" if c["first_inactive_ms"] is None else c["first_inactive_ms"],
                         "-" if c["last_active_ms"] is None else c["last_active_ms"]])
    coupling = "on" if report["coupling"] else "off"
    ui.out.print(ui.table(f"exposure: revoked token, {site} stale, coupling {coupling}",
                          ["trial", "client", "answered by", "accepted after revocation",
                           "accepted by", "first inactive ms", "last active ms"], rows))
    s = report["summary"]["exposure_ms"]
    still = any(t["open_at_end"] for t in report["trials"])
    ui.out.print(f"exposure window ms: median {s['median']}, max {s['max']}"
                 + (" (still open when probing stopped: at least the window)" if still else ""),
                 highlight=False)
    if report.get("plot"):
        ui.out.print(f"timeline: {report['plot']}")
