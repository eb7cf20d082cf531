"""Run-time impairments of a link (`anycast-lab impair`): loss, a rate limit, delay.

A link is a router-to-router link (`A--B`, as the address plan names it) or a site's
link to its router (named by the site). An impairment is applied on both ends, each end
impairing what crosses it, so `--loss 30` drops 30% in each direction (as a topology's
`impair` does). Mechanisms: netem when the kernel has it (loss, delay and rate in one
qdisc); without netem, a rate is a tbf qdisc and loss an nftables table per end
(`numgen random` on the interface's ingress); delay has no substitute and is refused.

Each call replaces the link's earlier run-time impairment; `clear` removes it and puts
back what the topology asked for on that link. What is applied is recorded in
<lab dir>/impairments.json, which `status` shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from lab.host import fabric, nft, safefs
from lab.host.labs import Lab, recorded_impairments
from lab.model import names
from lab.model.errors import BadInput, EnvironmentProblem
from lab.model.plan import AddressPlan, LinkPlan, find_link
from lab.model.topology import Impairment

NFT_TABLE = "anycast_lab_impair_{ifname}"  # one per impaired interface (netdev family)
NFT_LOSS = """table netdev {table} {{
  chain loss {{ type filter hook ingress device "{ifname}" priority -300;
    numgen random mod 10000 < {per_10000} drop; }}
}}
"""

Record = dict[str, Any]


def request(loss: float | None, rate: str | None, delay: str | None,
            clear: bool) -> Impairment | None:
    """The impairment asked for (None: `--clear`), by the topology's own rules; BadInput
    with one sentence otherwise."""
    given = [f"--{n}" for n, v in (("loss", loss), ("rate", rate), ("delay", delay))
             if v is not None]
    if clear:
        if given:
            raise BadInput(f"--clear takes no {', '.join(given)}: clear first, then impair")
        return None
    if not given:
        raise BadInput("say what to impair: --loss PCT, --rate R or --delay D "
                       "(or --clear to remove an impairment)")
    try:
        imp = Impairment(loss=loss, rate=rate, delay=delay)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = error["loc"][0] if error["loc"] else "value"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise BadInput(f"--{field} {_shown(loss, rate, delay, field)}: {message}") from None
    if not (imp.loss or imp.rate or imp.delay):
        raise BadInput("--loss 0 impairs nothing: use --clear to remove an impairment")
    return imp


def _shown(loss: float | None, rate: str | None, delay: str | None, field: object) -> str:
    value = {"loss": loss, "rate": rate, "delay": delay}.get(str(field))
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class End:
    netns: str
    ifname: str  # the interface in `netns` that faces the other end


def ends(plan: AddressPlan, link: LinkPlan) -> list[End]:
    a, b = plan.nodes[link.a], plan.nodes[link.b]
    return [End(a.netns, a.iface(b.name).ifname), End(b.netns, b.iface(a.name).ifname)]


def mechanisms(imp: Impairment, netem: bool) -> dict[str, str]:
    """Which kernel mechanism carries each part of the impairment."""
    if netem:
        return {part: "netem" for part in ("loss", "rate", "delay") if getattr(imp, part)}
    used = {}
    if imp.loss:
        used["loss"] = "nftables"
    if imp.rate:
        used["rate"] = "tbf"
    if imp.delay:
        raise EnvironmentProblem("--delay needs the kernel's netem qdisc (sch_netem), which "
                                 "this kernel lacks: --loss (nftables) and --rate (tbf) work "
                                 "without it")
    return used


def _nft_table(ifname: str) -> str:
    return NFT_TABLE.format(ifname=ifname.replace("-", "_"))  # names never hold '_'


def _nft_loss(end: End, loss: float) -> None:
    rules = NFT_LOSS.format(table=_nft_table(end.ifname), ifname=end.ifname,
                            per_10000=round(loss * 100))
    nft.add_table(end.netns, rules, f"the loss rule in {end.netns}")


def _nft_clear(end: End) -> None:
    nft.delete_table(end.netns, "netdev", _nft_table(end.ifname))


def _restore(link: LinkPlan, end: End) -> None:
    """The end as `up` made it: no loss table, the topology's own qdisc (if any)."""
    _nft_clear(end)
    fabric.set_link_qdisc(end.netns, end.ifname, link.impair)


def _save(lab: Lab, records: dict[str, Record]) -> None:
    safefs.write_json_atomic(lab.journal.dir / names.IMPAIRMENTS, records, durable=True,
                             sort_keys=False)


def impair(lab: Lab, target: str, imp: Impairment) -> Record:
    """Apply `imp` to the link on both ends (replacing an earlier run-time impairment);
    returns its record. On a failure both ends are put back as `up` made them."""
    assert lab.plan is not None
    link = find_link(lab.plan, target)
    netem = fabric.netem_available()
    used = mechanisms(imp, netem)  # refuses before anything changes
    both = ends(lab.plan, link)
    try:
        for end in both:
            _restore(link, end)
            if netem:
                fabric.set_link_qdisc(end.netns, end.ifname, imp)
                continue
            if imp.rate:
                fabric.set_link_qdisc(end.netns, end.ifname, Impairment(rate=imp.rate))
            if imp.loss:
                _nft_loss(end, imp.loss)
    except Exception:
        for end in both:
            _restore(link, end)
        records = recorded_impairments(lab)
        if records.pop(link.name, None) is not None:
            _save(lab, records)
        raise
    record: Record = {"link": link.name, "loss": imp.loss, "rate": imp.rate,
                      "delay": imp.delay, "mechanisms": used,
                      "ends": [f"{e.netns}:{e.ifname}" for e in both], "t": time.time()}
    records = recorded_impairments(lab)
    records[link.name] = record
    _save(lab, records)
    return record


def clear(lab: Lab, target: str) -> Record | None:
    """Remove the link's run-time impairment on both ends (the topology's own stays);
    returns the record removed, or None when there was none (the ends are put back as
    `up` made them either way)."""
    assert lab.plan is not None
    link = find_link(lab.plan, target)
    for end in ends(lab.plan, link):
        _restore(link, end)
    records = recorded_impairments(lab)
    removed = records.pop(link.name, None)
    _save(lab, records)
    return removed

