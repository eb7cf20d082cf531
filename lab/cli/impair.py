"""`impair`: degrade a link at run time (loss, rate, delay) or clear it again."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lab.cli import ui
from lab.cli.main import JsonOpt, LabOpt, app
from lab.host.lock import locked


def describe(record: dict[str, Any]) -> str:
    """'loss 30% (nftables), rate 10mbit (tbf)'."""
    used = record.get("mechanisms", {})
    parts = []
    if record.get("loss"):
        parts.append(f"loss {record['loss']:g}% ({used.get('loss')})")
    if record.get("rate"):
        parts.append(f"rate {record['rate']} ({used.get('rate')})")
    if record.get("delay"):
        parts.append(f"delay {record['delay']} ({used.get('delay')})")
    return ", ".join(parts)


@app.command()
def impair(link: Annotated[str, typer.Argument(
               metavar="LINK|NODE", help="a link 'A--B', or a site, client or the issuer "
               "(its link to its router)")],
           loss: Annotated[float | None, typer.Option(
               "--loss", metavar="PCT", help="random loss in percent, each direction")] = None,
           rate: Annotated[str | None, typer.Option(
               "--rate", metavar="R", help="rate limit, e.g. 10mbit (tbf)")] = None,
           delay: Annotated[str | None, typer.Option(
               "--delay", metavar="D", help="one-way delay, e.g. 20ms (needs netem)")] = None,
           clear: Annotated[bool, typer.Option(
               "--clear", help="remove the link's run-time impairment")] = False,
           lab: LabOpt = None, json_out: JsonOpt = False) -> None:
    """Impair a link at run time on both ends (replacing an earlier run-time impairment):
    netem where the kernel has it, else loss by nftables and rate by tbf; delay needs
    netem. Listed in `status`; `--clear` removes it."""
    from lab.host import env, labs
    from lab.ops import impair as ops

    wanted = ops.request(loss, rate, delay, clear)
    env.require_linux_root()
    opened = labs.open_lab(lab)
    assert opened.plan is not None
    name = ops.find_link(opened.plan, link).name
    with locked(opened.name, "impair"):
        record = ops.clear(opened, link) if wanted is None else ops.impair(opened, link, wanted)
    if json_out:
        ui.emit_json({"ok": True, "lab": opened.name, "link": name,
                      "cleared": wanted is None, "impairment": record})
    elif wanted is None:
        ui.out.print(f"{name}: cleared {describe(record)}" if record
                     else f"{name}: no run-time impairment to clear", highlight=False)
    else:
        assert record is not None
        ui.out.print(f"{name}: {describe(record)} on both ends", highlight=False)
