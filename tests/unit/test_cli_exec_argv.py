"""`exec` passes the command through as given: only the separating `--` is dropped."""

from __future__ import annotations

import pytest

from lab.cli.lab import command_argv


@pytest.mark.parametrize(("args", "argv"), [
    (["--", "dig", "+short", "x"], ["dig", "+short", "x"]),
    (["dig", "x"], ["dig", "x"]),
    (["--", "sh", "-c", "echo a", "--", "b"], ["sh", "-c", "echo a", "--", "b"]),
    (["--", "--"], ["--"]),
    (["--"], []),
])
def test_only_the_separator_is_dropped(args: list[str], argv: list[str]) -> None:
    assert command_argv(args) == argv
