"""A lab that exists on this machine, as its run directory describes it: its journal,
its state and (from the topology copy `up` keeps there) its topology and address plan.
Read-only: opening a lab changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.host.journal import Journal, existing_labs, require_lab_name, valid_lab_name
from lab.model import Topology, load_text, names
from lab.model.errors import BadInput, LabError
from lab.model.plan import AddressPlan, build_plan


@dataclass
class Lab:
    """A lab that exists (or existed) on this machine, as its run directory describes it."""

    journal: Journal
    topology: Topology | None = None
    plan: AddressPlan | None = None
    state: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.journal.lab


def open_lab(name: str | None, need_topology: bool = True) -> Lab:
    """The named lab, or the only one that exists; BadInput when that is ambiguous.
    LabError when the lab's topology record is gone (unless `need_topology` is off)."""
    labs = existing_labs()
    if name is None:
        if not labs:
            raise LabError("no lab is up: start one with `anycast-lab up`")
        if len(labs) > 1:
            raise BadInput(f"several labs are up ({', '.join(labs)}): choose one with --lab")
        name = labs[0]
    elif not valid_lab_name(name):
        require_lab_name(name)
    elif name not in labs:
        raise LabError(f"lab '{name}' is not up (labs up: {', '.join(labs) or 'none'})")
    journal = Journal(name)
    lab = Lab(journal, state=journal.state())
    copy = journal.dir / names.TOPOLOGY_COPY
    try:
        report = load_text(copy.read_text(), str(copy)) if copy.is_file() else None
    except (OSError, UnicodeDecodeError):
        report = None
    if report is not None and report.ok and report.topology is not None:
        lab.topology = report.topology
        lab.plan = build_plan(report.topology)
    elif need_topology:
        raise LabError(f"lab '{name}' has lost its topology record ({copy}): run "
                       f"`anycast-lab down --lab {name}` and bring it up again")
    return lab
