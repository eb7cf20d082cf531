"""Writing under the run directory as root, safely on a shared machine.

The run root (default `/run/anycast-lab`) and every lab directory in it are created by
us, owned by us and writable by nobody else, and checked to be so (never a symlink).
Every file we write there is created without following symlinks: new files
exclusively (`O_EXCL`), appends and opens with `O_NOFOLLOW`, replacements through a
fresh temporary file and `rename` (which replaces a link rather than following it).
A write that fails for a reason of the machine (disk full, read-only, quota) becomes an
EnvironmentProblem: one sentence, exit 3.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lab.model.errors import EnvironmentProblem
from lab.shared import atomic

# Reasons of the machine, not of the lab: reported as exit 3 with what to do.
MACHINE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def machine_problem(exc: OSError, path: Path | str, doing: str = "write") -> EnvironmentProblem:
    """An OSError of the machine as one sentence naming the path and what to do."""
    why = MACHINE_ERRNOS.get(exc.errno or 0, os.strerror(exc.errno or 0) or str(exc))
    return EnvironmentProblem(f"cannot {doing} {path}: {why}: free space or fix the file "
                              "system, or point ANYCAST_LAB_RUN_DIR at a writable directory")


def is_machine_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in MACHINE_ERRNOS


@contextlib.contextmanager
def machine_errors(path: Path | str, doing: str = "write") -> Iterator[None]:
    """Inside the block, an OSError of the machine becomes its EnvironmentProblem (one
    sentence naming `path`); any other OSError passes unchanged."""
    try:
        yield
    except OSError as exc:
        if is_machine_error(exc):
            raise machine_problem(exc, path, doing) from exc
        raise


def check_private_dir(path: Path) -> None:
    """`path` must be a real directory (no symlink) owned by us and writable only by us."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise EnvironmentProblem(f"{path} vanished while in use: run the command again") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise EnvironmentProblem(f"{path} is not a directory of ours (a symlink or a file): "
                                 "remove it, or point ANYCAST_LAB_RUN_DIR elsewhere")
    if st.st_uid != os.geteuid():
        raise EnvironmentProblem(f"{path} belongs to uid {st.st_uid}, not to us: remove it, "
                                 "or point ANYCAST_LAB_RUN_DIR elsewhere")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise EnvironmentProblem(f"{path} is writable by other users: remove it, or point "
                                 "ANYCAST_LAB_RUN_DIR elsewhere")


def ensure_private_dir(path: Path, mode: int = 0o755) -> Path:
    """Create `path` (one level; its parent must exist) or check an existing one."""
    with machine_errors(path, "create"):
        try:
            os.mkdir(path, mode)
            os.chmod(path, mode)  # the umask must not loosen or tighten what we asked for
        except FileExistsError:
            pass
    check_private_dir(path)
    return path


def _open_new(path: Path, mode: int) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   mode)


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644, fsync: bool = True,
                 durable: bool = False) -> None:
    """Replace `path` with `data` at once (`lab.shared.atomic`): readers see the old or the
    new file, never a half-written one, and a symlink planted at `path` or at a temporary
    name is never followed; a reason of the machine becomes an EnvironmentProblem."""
    with machine_errors(path):
        atomic.write_atomic(path, data, mode, fsync=fsync, durable=durable)


def write_json_atomic(path: Path, obj: Any, mode: int = 0o644, fsync: bool = True,
                      durable: bool = False, sort_keys: bool = True) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n", mode, fsync,
                 durable)


def write_new(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write a file that must not exist yet (configs, keys): a planted one is refused."""
    raw = data.encode() if isinstance(data, str) else data
    with machine_errors(path):
        fd = _open_new(path, mode)
        try:
            os.write(fd, raw)
        finally:
            os.close(fd)


def open_append(path: Path, mode: int = 0o644) -> int:
    """A file descriptor for appending to `path` (created if missing), never via a symlink."""
    with machine_errors(path):
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                       | os.O_CLOEXEC, mode)

