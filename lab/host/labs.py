"""A lab that exists on this machine, as its run directory describes it: its journal,
its state and (from the topology copy `up` keeps there) its topology and address plan.
Read-only: opening a lab changes nothing."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lab.host.journal import Journal, existing_labs, require_lab_name, valid_lab_name
from lab.model import names
from lab.model.errors import BadInput, LabError

if TYPE_CHECKING:
    from lab.model.plan import AddressPlan
    from lab.model.topology import Topology

# The default `--lab` of every command (as `ANYCAST_LAB=NAME anycast-lab status`). Our
# daemons carry the same variable as their marker; a shell that has it set is not one of
# them (lab.host.procs counts markers only on root processes inside lab namespaces).
LAB_ENV = "ANYCAST_LAB"  # = lab.host.procs.MARKER


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


def command(lab: str, verb: str) -> str:
    """`anycast-lab VERB` as a hint to type, naming `--lab LAB` when more than one lab
    exists on this machine (with one, the command finds it by itself)."""
    others = [name for name in existing_labs() if name != lab]
    return f"`anycast-lab {verb}" + (f" --lab {lab}`" if others else "`")


def env_note(name: str) -> str:
    """' (from ANYCAST_LAB)' when that is where the name came from, for messages."""
    return f" (from {LAB_ENV})" if os.environ.get(LAB_ENV) == name else ""


def open_lab(name: str | None, need_topology: bool = True) -> Lab:
    """The named lab, or the only one that exists; BadInput when that is ambiguous.
    LabError when the lab's topology record is gone (unless `need_topology` is off)."""
    labs = existing_labs()
    if name is None:
        if not labs:
            raise LabError("no lab is up: start one with `anycast-lab up`")
        if len(labs) > 1:
            raise BadInput(f"several labs are up ({', '.join(labs)}): choose one with "
                           f"--lab NAME or {LAB_ENV}=NAME (see `anycast-lab list`)")
        name = labs[0]
    elif not valid_lab_name(name):
        require_lab_name(name)
    elif name not in labs:
        raise LabError(f"lab '{name}'{env_note(name)} is not up (labs up: "
                       f"{', '.join(labs) or 'none'})")
    from lab.model.load import load_text  # the topology model: only once a lab is opened
    from lab.model.plan import build_plan

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


def recorded_impairments(lab: Lab) -> dict:
    """The lab's run-time impairments as recorded ({} when there are none)."""
    try:
        data = json.loads((lab.journal.dir / names.IMPAIRMENTS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
