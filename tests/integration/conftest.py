"""Integration fixtures and hooks: real labs with real daemons, each with a unique name,
always torn down. On CI (ANYCAST_LAB_REQUIRE_INTEGRATION=1) a missing prerequisite is an
error, not a skip (tests/prerequisites.py); only a kernel feature this machine lacks (netem)
may skip. Every integration test gets INTEGRATION_TIMEOUT_S, so a hung one fails (and its
fixtures still tear its labs down) instead of hanging CI. Plain helpers are in helpers.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.host import labs

from ..prerequisites import missing_tools, skip_or_fail
from .helpers import DEFAULT, LabHandle, unique_name

REQUIRED_TOOLS = ["bird", "birdc", "unbound", "unbound-checkconf", "exabgp", "ping", "tc",
                  "dig", "curl", "nft"]
# Per test, fixtures included. The slowest test takes ~40 s on a loaded 2-core machine, and
# the longest single wait inside one is a 300 s `measure` run: past this, it is hung. The
# signal method raises in the test, so the lab fixtures' teardown still runs.
INTEGRATION_TIMEOUT_S = 600


def _missing_prerequisite() -> str | None:
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "not root"
    missing = missing_tools(REQUIRED_TOOLS)
    if missing:
        return f"missing tools: {', '.join(missing)}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(INTEGRATION_TIMEOUT_S, method="signal"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "integration" not in item.keywords:
        return
    reason = _missing_prerequisite()
    if reason is not None:
        skip_or_fail(f"integration test needs root and the lab's tools: {reason}")


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
