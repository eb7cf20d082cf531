"""What every daemon says about itself: its config, its dry-run check, how to start it,
and (the types of) how it says it is ready."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.model import names
from lab.model.errors import LabError
from lab.model.plan import AddressPlan, NodePlan


@dataclass(frozen=True)
class Readiness:
    """A daemon's answer to "are you ready?": truthy when it is, with what was seen."""

    ok: bool
    detail: str
    final: bool = False  # no use waiting: the process has exited

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class ReadyTarget:
    """One running daemon instance to ask: where it lives and the PID we started."""

    plan: AddressPlan
    lab_dir: Path
    node: NodePlan
    pid: int
    # Wall-clock instant the daemon was continued or restarted (a heal): a state it
    # reports must have been reached after it, not remembered from before a freeze.
    after: float | None = None

    def dir_of(self, node: str) -> Path:
        return names.node_dir(self.lab_dir, node)

# A config check's runner: (argv, environment or None, timeout in s) -> its result.
CheckRunner = Callable[[list[str], "dict[str, str] | None", float],
                       "subprocess.CompletedProcess[str]"]


@dataclass
class DaemonSpec:
    """One daemon instance for one node, ready to check and start."""

    name: str            # e.g. "bird", "exabgp", "unbound"
    node: str
    netns: str
    config_path: Path
    config: str
    check_argv: list[str]
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    # The dry run accepts several config files at once (check_argv ends with the file),
    # so one process can check every instance: python start-up is paid once.
    batch_check: bool = False
    # Runs the dry run (argv, env, timeout) as subprocess.run(capture_output=True, text=
    # True) would; `up` hands in one that runs the lab's own Python programs in its
    # pre-imported launcher. None: subprocess.run.
    check_runner: CheckRunner | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.node}"

    def write(self) -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config)

    def check(self) -> None:
        """Run the daemon's own dry run on the written config; raise with its words."""
        result = self._run_check(self.check_argv, 60)
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip().splitlines()
            raise LabError(f"{self.label}: config check failed: "
                           f"{output[-1] if output else 'exit ' + str(result.returncode)}",
                           details=output[-10:])

    def check_many(self, others: list[DaemonSpec]) -> None:
        """Check this spec's config and those of `others` (same daemon) in one run; on a
        failure, check one by one so the error names the instance."""
        argv = [*self.check_argv, *(str(o.config_path) for o in others)]
        result = self._run_check(argv, 120)
        if result.returncode != 0:
            for spec in (self, *others):
                spec.check()
            raise LabError(f"{self.name}: config check failed for one of "
                           f"{len(others) + 1} instances",
                           details=(result.stderr or result.stdout).strip().splitlines()[-10:])

    def _run_check(self, argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        if self.check_runner is not None:
            return self.check_runner(argv, self.check_env(), timeout_s)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              check=False, env=self.check_env())

    def check_env(self) -> dict[str, str] | None:
        if not self.env:
            return None
        import os

        return {**os.environ, **self.env}
