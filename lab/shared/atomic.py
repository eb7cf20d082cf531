"""Replacing a file at once: write a fresh temporary file beside it, then `rename` it over
the old one, so a reader sees the old file or the new one, never half of either.

The one writer of whole files for everybody (orchestrator, site programs): stdlib only.
The temporary file is created exclusively and never through a symlink (`O_EXCL |
O_NOFOLLOW`), and the rename replaces a link planted at the target instead of following
it. Its mode is exactly `mode` (the umask neither loosens nor tightens it).

How durable, the caller says:
* `fsync=True` (the default): the data is on disk before the rename, so a crash leaves
  the old file or the whole new one, never an empty one;
* `durable=True` as well: the directory is synced after the rename, so the new file
  itself survives a crash (for records that must not be lost, such as a revocation or
  an active fault that `heal` must undo);
* `fsync=False`: only atomic for readers (a view rewritten often from memory).

Errors are the OSError of the failing call; the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644, *,
                 fsync: bool = True, durable: bool = False) -> None:
    """Replace `path` with `data` in one rename (see the module's docstring)."""
    target = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if fsync or durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        sync_directory(target.parent)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, mode: int = 0o644, *,
                      indent: int | None = 2, sort_keys: bool = True,
                      default: Callable[[Any], Any] | None = None, fsync: bool = True,
                      durable: bool = False) -> None:
    """`obj` as JSON (one trailing newline), replaced at once like `write_atomic`."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    write_atomic(path, text, mode, fsync=fsync, durable=durable)


def sync_directory(path: str | os.PathLike[str]) -> None:
    """Make the directory's entries (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
