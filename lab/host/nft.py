"""nftables in a lab namespace. Every nftables rule the lab sets (the blackhole and stale
faults, run-time loss) lives in a table of its own, added whole from a ruleset and deleted
whole, so undoing it never touches anything else in the namespace."""

from __future__ import annotations

from lab.host.procs import run_in
from lab.model.errors import EnvironmentProblem


def add_table(netns: str, ruleset: str, what: str) -> None:
    """Load `ruleset` (one `table ...` block) in `netns`; EnvironmentProblem saying that
    nftables refused `what` ("the blackhole rule") otherwise."""
    result = run_in(netns, ["nft", "-f", "-"], input_text=ruleset)
    if result.returncode != 0:
        raise EnvironmentProblem(f"nftables refused {what}: {result.stderr.strip()}")


def delete_table(netns: str, family: str, table: str) -> None:
    """Delete table `table` of `family` (inet, netdev) in `netns` if it is there;
    EnvironmentProblem if nftables keeps it."""
    if run_in(netns, ["nft", "list", "table", family, table]).returncode != 0:
        return
    result = run_in(netns, ["nft", "delete", "table", family, table])
    if result.returncode != 0:
        raise EnvironmentProblem(f"nftables kept table {table} in {netns}: "
                                 f"{result.stderr.strip()}")
