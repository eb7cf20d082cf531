"""What a missing prerequisite (a tool, a module, the console script, root) means for a
test: a skip on a developer's machine, a failure on CI. CI (.ci/run) sets
ANYCAST_LAB_REQUIRE_INTEGRATION=1, so a green CI run has run every test; locally a test
that cannot run says why and is skipped. Both suites ask here, never `pytest.skip`
directly."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from types import ModuleType
from typing import NoReturn

import pytest

from lab.host.env import tool_path

REQUIRE_ENV = "ANYCAST_LAB_REQUIRE_INTEGRATION"


def required() -> bool:
    """True on CI: nothing may be skipped for want of a prerequisite."""
    return bool(os.environ.get(REQUIRE_ENV))


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with `reason`, or fail with it when REQUIRE_ENV is set. Usable in a test, a
    fixture, a hook or at module level."""
    if required():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set: a missing prerequisite is a failure)",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def missing_tools(tools: Iterable[str]) -> list[str]:
    return [t for t in tools if tool_path(t) is None]


def need_tools(tools: Iterable[str]) -> dict[str, str]:
    """The path of every tool in `tools`; skip_or_fail naming those not installed."""
    tools = list(tools)
    missing = missing_tools(tools)
    if missing:
        skip_or_fail(f"tools not installed: {', '.join(missing)}")
    return {t: str(tool_path(t)) for t in tools}


def need_module(name: str) -> ModuleType:
    """The module `name`, imported; skip_or_fail if it cannot be."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        skip_or_fail(f"cannot import {name}: {exc}")
