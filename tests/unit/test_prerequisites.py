"""The CI guard both suites use (tests/prerequisites.py): a missing tool or module is a skip
on a developer's machine and a failure when ANYCAST_LAB_REQUIRE_INTEGRATION is set."""

from __future__ import annotations

import pytest

from ..prerequisites import REQUIRE_ENV, need_module, need_tools, skip_or_fail

MISSING_TOOL = "anycast-lab-no-such-tool"


@pytest.fixture
def developer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)


@pytest.fixture
def ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_ENV, "1")


def test_missing_prerequisite_is_a_skip_for_a_developer(developer) -> None:
    with pytest.raises(pytest.skip.Exception, match="the reason"):
        skip_or_fail("the reason")
    with pytest.raises(pytest.skip.Exception, match=f"tools not installed: {MISSING_TOOL}"):
        need_tools(["sh", MISSING_TOOL])
    with pytest.raises(pytest.skip.Exception, match="cannot import anycast_lab_no_such_mod"):
        need_module("anycast_lab_no_such_mod")


def test_missing_prerequisite_is_a_failure_on_ci(ci) -> None:
    with pytest.raises(pytest.fail.Exception, match=f"the reason .*{REQUIRE_ENV} is set"):
        skip_or_fail("the reason")
    with pytest.raises(pytest.fail.Exception, match=f"tools not installed: {MISSING_TOOL}"):
        need_tools([MISSING_TOOL])
    with pytest.raises(pytest.fail.Exception, match="cannot import anycast_lab_no_such_mod"):
        need_module("anycast_lab_no_such_mod")


def test_present_prerequisites_are_given_back(ci) -> None:
    paths = need_tools(["sh"])
    assert set(paths) == {"sh"} and paths["sh"].endswith("/sh")
    assert need_module("json").dumps([]) == "[]"
