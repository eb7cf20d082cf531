"""`anycast-lab export containerlab`: a lab as a containerlab topology (one host, several
hosts joined by VXLAN, or clabernetes on Kubernetes), with the configs `up` renders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lab.cli import ui
from lab.cli.main import JsonOpt, app, default_topology
from lab.model.errors import BadInput

export_app = typer.Typer(no_args_is_help=True, help="Export a lab to run elsewhere.")
app.add_typer(export_app, name="export")


@export_app.command("containerlab")
def containerlab(
        topology: Annotated[Path | None, typer.Argument(help="topology file")] = None,
        out: Annotated[Path | None, typer.Option("-o", "--output",
                                                 help="directory to write (new, empty, or "
                                                      "an earlier export)")] = None,
        image: Annotated[str | None, typer.Option(help="node image (built from the repo's "
                                                       "Containerfile)")] = None,
        hosts: Annotated[int | None, typer.Option("--hosts", help="spread over N hosts, "
                                                  "the routers in file order")] = None,
        split: Annotated[Path | None, typer.Option("--split", help="YAML file: hosts, their "
                                                   "addresses and nodes")] = None,
        clabernetes: Annotated[bool, typer.Option("--clabernetes", help="the variant "
                                                  "clabernetes takes (no host binds)")] = False,
        json_out: JsonOpt = False) -> None:
    """Write a containerlab topology of the lab: `kind: linux` nodes, veth links (VXLAN
    between hosts), each node's configs bound into it and its exec list; no root needed."""
    from lab.export.paths import DEFAULT_IMAGE
    from lab.export.plan import plan_export
    from lab.export.write import write_export
    from lab.ops.lifecycle import validated

    if out is None:
        raise BadInput("give the directory to write with -o DIR")
    if hosts is not None and split is not None:
        raise BadInput("--hosts and --split exclude each other: give one")
    topo = validated(topology or default_topology())
    export = plan_export(topo, image=image or DEFAULT_IMAGE, clabernetes=clabernetes,
                         host_count=hosts, split_file=split)
    written = write_export(export, out)
    placeholders = hosts is not None and hosts > 1
    report = {
        "ok": True, "lab": topo.name, "directory": str(out.resolve()),
        "clabernetes": clabernetes, "image": export.image,
        "nodes": len(export.nodes), "links": len(export.links),
        "vxlan_links": sum(1 for ln in export.links if ln.crosses_hosts),
        "hosts": [{"host": h.name, "address": h.address, "deploys": written.deploy[h.name],
                   "nodes": [n.name for n in export.nodes_on(h.name)]}
                  for h in export.hosts if h.name in written.deploy],
        "placeholder_addresses": placeholders,
        "files": len(written.files),
    }
    if json_out:
        ui.emit_json(report)
        return
    ui.out.print(f"[green]ok[/] lab '{topo.name}' exported to {escape(report['directory'])}: "
                 f"{report['nodes']} nodes, {report['links']} links "
                 f"({report['vxlan_links']} vxlan), {report['files']} files")
    for h in report["hosts"]:
        where = f" ({h['address']})" if h["address"] else ""
        verb = ("containerlab --runtime c9s deploy -t" if clabernetes
                else "containerlab deploy -t")
        ui.out.print(f"  {h['host']}{where}: {verb} {escape(h['deploys'])} "
                     f"({len(h['nodes'])} nodes)", highlight=False)
    if placeholders:
        ui.err.print("  note: --hosts uses placeholder addresses from 198.51.100.0/24 for "
                     "the VXLAN remotes; give the hosts' real addresses with --split FILE",
                     highlight=False)
