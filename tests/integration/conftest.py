"""Integration fixtures: real labs with real daemons, each with a unique name, always
torn down. On CI (ANYCAST_LAB_REQUIRE_INTEGRATION=1) a missing prerequisite is an error,
not a skip; only a kernel feature this machine lacks (netem) may skip."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab.host import labs
from lab.host.env import tool_path
from lab.host.journal import Journal, lab_dir
from lab.ops import lifecycle

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"
REQUIRED_TOOLS = ["bird", "birdc", "unbound", "unbound-checkconf", "exabgp", "ping", "tc",
                  "dig", "curl", "nft"]


def _missing_prerequisite() -> str | None:
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "not root"
    missing = [t for t in REQUIRED_TOOLS if tool_path(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "integration" not in item.keywords:
        return
    reason = _missing_prerequisite()
    if reason is None:
        return
    if os.environ.get("ANYCAST_LAB_REQUIRE_INTEGRATION"):
        pytest.fail(f"integration prerequisites missing on CI: {reason}", pytrace=False)
    pytest.skip(f"integration test needs root and the lab's tools: {reason}")


def unique_name(prefix: str = "it") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def lab_cli(*args: str, timeout: float = 180, check: bool = False
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True,
                          text=True, timeout=timeout, check=check, cwd=ROOT)


class LabHandle:
    def __init__(self, name: str, topology: Path) -> None:
        self.name = name
        self.topology = topology

    def up(self, timeout: float = 180) -> labs.Lab:
        result = lab_cli("up", str(self.topology), "--name", self.name, "--json",
                         timeout=timeout)
        assert result.returncode == 0, f"up failed: {result.stderr[-3000:]}"
        return labs.open_lab(self.name)

    def down(self) -> None:
        if Journal(self.name).exists():
            lifecycle.teardown(Journal(self.name))

    @property
    def dir(self) -> Path:
        return lab_dir(self.name)


@pytest.fixture
def make_lab() -> Iterator:
    """Factory for labs with unique names; every lab made is torn down afterwards."""
    made: list[LabHandle] = []

    def factory(topology: Path = DEFAULT, prefix: str = "it") -> LabHandle:
        handle = LabHandle(unique_name(prefix), topology)
        made.append(handle)
        return handle

    yield factory
    for handle in made:
        handle.down()


@pytest.fixture(scope="module")
def default_lab() -> Iterator[labs.Lab]:
    """One default lab shared by a module's read-only tests."""
    handle = LabHandle(unique_name("md"), DEFAULT)
    try:
        yield handle.up()
    finally:
        handle.down()


def static_copy(topology: Path, directory: Path) -> Path:
    """The topology with health daemons off: sites announce statically, so a test can
    withdraw and re-announce by hand through the speaker's API (pure BGP behaviour)."""
    data = yaml.safe_load(topology.read_text())
    data.setdefault("health", {})["enabled"] = False
    path = directory / f"static-{topology.name}"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
