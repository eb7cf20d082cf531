"""The `anycast-lab` command line: the app, the options every command shares, and
`main()`, the one place where an error becomes one sentence and its exit code:
1 not as expected, 2 bad input, 3 environment. The commands live in their topic
modules (TOPICS)."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from lab.cli import ui
from lab.host.labs import LAB_ENV, env_note
from lab.model.errors import BadInput, LabError
from lab.model.names import valid_lab_name

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"

app = typer.Typer(
    name="anycast-lab", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
    help="A real anycast lab on Linux network namespaces (BIRD 2, ExaBGP 5, Unbound).",
)

def _lab_name(ctx: typer.Context, param: typer.CallbackParam, value: str | None
              ) -> str | None:
    """--lab (or ANYCAST_LAB) is checked against the lab-name rule as it is parsed: before
    root is required or anything is read."""
    if value is not None and not valid_lab_name(value):
        raise BadInput(f"{value!r}{env_note(value)} is not a lab name (lowercase letters, "
                       "digits and '-', starting with a letter, at most 24 characters)")
    return value


JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for machines (errors too)")]
LabOpt = Annotated[str | None, typer.Option(
    "--lab", envvar=LAB_ENV, show_envvar=False, callback=_lab_name,
    help=f"which lab (default: ${LAB_ENV}, else the only one up; see `anycast-lab list`)")]


def default_topology() -> Path:
    env = os.environ.get("ANYCAST_LAB_TOPOLOGY")
    return Path(env) if env else DEFAULT_TOPOLOGY


# Errors that a path itself causes, whichever command met it: the user's input.
PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP, errno.EISDIR})


def main() -> None:
    _register()
    try:
        # Without standalone mode, click returns the code of `typer.Exit` instead of exiting.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except LabError as exc:
        _fail(exc.message, exc.exit_code, exc.details)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as exc:
        from lab.host.safefs import is_machine_error, machine_problem

        if exc.errno in PATH_ERRNOS and exc.filename is not None:  # a path given to us
            _fail(f"'{exc.filename}': {exc.strerror}: check the path", 2)
        if not is_machine_error(exc):
            _internal(exc)
        problem = machine_problem(exc, exc.filename or "the run directory")
        _fail(problem.message, problem.exit_code)
    except Exception as exc:  # usage errors from typer's (vendored) click, and the like
        # Matched by shape: typer ships its own copy of click's exception classes.
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            _fail(exc.format_message() + " (see --help)", exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(130)
        _internal(exc)


def _internal(exc: Exception) -> None:
    if os.environ.get("ANYCAST_LAB_DEBUG"):
        raise exc
    _fail(f"internal error ({type(exc).__name__}: {exc}); run again with "
          "ANYCAST_LAB_DEBUG=1 for the traceback and report it", 1)


def json_requested(argv: list[str]) -> bool:
    """--json among the command's own arguments (not after `--`, where `exec`'s command
    line starts)."""
    own = argv[:argv.index("--")] if "--" in argv else argv
    return "--json" in own


def _fail(message: str, code: int, details: list[str] | None = None) -> None:
    """One sentence on stderr, or the contract's JSON error object on stdout under --json;
    the same exit code either way."""
    if json_requested(sys.argv[1:]):
        ui.emit_json({"ok": False, "error": {"message": message, "exit_code": code,
                                             "details": details or []}})
    else:
        ui.error(message, details)
    sys.exit(code)


# The topic modules add their commands to `app` when imported; --help lists them in
# this order.
TOPICS = ("lab", "faults", "impair", "measure", "tokens", "identity", "scenario", "export",
          "draw", "watch")


def _register() -> None:
    import importlib

    for topic in TOPICS:
        importlib.import_module(f"lab.cli.{topic}")
