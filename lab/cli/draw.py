"""`graph`: a picture of a topology file, or of a running lab with its live state."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lab.cli import ui
from lab.cli.main import JsonOpt, LabOpt, app, default_topology
from lab.model.errors import BadInput

GRAPH_HELP = """A picture of a lab: routers (boxes, AS number), sites (hexagons), clients
(ellipses), links with their impairments.

From a topology file (no root needed; default: the default topology; a file given wins
over $ANYCAST_LAB), or with --lab from a running lab: each site coloured, bordered and
labelled by its state (announced: solid green; withdrawn: dashed vermillion; drained:
dotted yellow; faulted: double purple), a dashed arrow from each client to the site
that answers it (per family, with shares under ECMP), and the best paths to the anycast
prefixes as thick blue arrows.

Formats: svg and png (drawn by Graphviz; need -o FILE), dot and mermaid (text, to stdout
or -o FILE). Without --format the file's suffix decides (.svg .png .dot .mmd), else dot."""


@app.command(help=GRAPH_HELP)
def graph(topology: Annotated[Path | None, typer.Argument(
              help="topology file (default: the default topology; not with --lab)")] = None,
          lab: LabOpt = None,
          fmt: Annotated[str | None, typer.Option(
              "--format", help="svg, png, dot or mermaid")] = None,
          output: Annotated[Path | None, typer.Option(
              "-o", "--output", help="the file to write (default: stdout, for text)")] = None,
          json_out: JsonOpt = False) -> None:
    from lab.draw import graph as gm
    from lab.draw import render, text

    if topology is not None and lab is not None:
        if not any(a == "--lab" or a.startswith("--lab=") for a in sys.argv[1:]):
            lab = None  # the shell's ANYCAST_LAB: the file given wins
        else:
            raise BadInput("give a topology file or --lab, not both")
    fmt = render.format_for(fmt, output)
    render.check_output(output)
    if lab is not None:
        from lab.host import env, labs
        from lab.observe import status as st

        env.require_linux_root()
        opened = labs.open_lab(lab)
        report = st.collect(opened, fabric=False)
        if opened.topology is None or opened.plan is None:
            raise BadInput(f"lab '{opened.name}' has no topology record: "
                           f"{labs.command(opened.name, 'down')}")
        model = gm.build(opened.topology, opened.plan, report)
    else:
        from lab.model.plan import build_plan
        from lab.ops.lifecycle import validated

        topo = validated(topology or default_topology())
        model = gm.build(topo, build_plan(topo))
    body = text.to_mermaid(model) if fmt == "mermaid" else text.to_dot(model)
    data = render.render(body, fmt) if fmt in render.RENDERED else body.encode()
    if output is not None:
        from lab.host.safefs import write_atomic

        write_atomic(output, data, fsync=False)
    elif not json_out:
        sys.stdout.write(body)
    if json_out:
        result = {"ok": True, "format": fmt, "output": str(output) if output else None,
                  "graph": model.to_json()}
        if output is None:
            result["text"] = body
        ui.emit_json(result)
    elif output is not None:
        ui.err.print(f"{fmt}: {output} ({len(model.nodes)} nodes, "
                     f"{model.count('link')} links"
                     + (f", {model.count('answer')} client answers" if model.live else "")
                     + ")", highlight=False, markup=False)
