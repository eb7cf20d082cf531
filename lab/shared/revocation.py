"""Revocation: owns a site's list of revoked token ids (``jti``) and its file.

File format (JSON)::

    {"version": N, "revoked": {"<jti>": <revoked_at, epoch seconds>, ...}}

``revoke(path, jti)`` is the writer (``revoke_if_new`` the same, but it leaves the
file and its version alone when the jti is already there): under an ``flock`` on ``<path>.lock`` it
reads the file, adds the jti, bumps ``version`` and replaces the file
atomically and durably (``lab.shared.atomic``: temp file, fsync, rename, fsync of
the directory), so a reader only ever sees a whole old file or a whole new one.

``RevocationList(path)`` is the reader used by the service. ``refresh()`` costs
one ``os.stat`` and re-reads the file only when its identity changes (inode,
size, mtime_ns, ctime_ns -- ``os.replace`` always installs a new inode, so a
rewrite is noticed even within one mtime tick). By default it stats on every
call; ``min_interval_s`` can rate-limit that.

Fail-safe rules:

* a missing file is an empty list at version 0 -- unless a list with
  version > 0 was already loaded, which is then kept (deleting the file must
  not un-revoke tokens);
* a corrupt or unreadable file, or one whose version went backwards, is
  ignored with a warning and the last good state is kept;
* ``healthy`` is False until the file has been read successfully once (or
  found missing): a site that cannot know what is revoked is not ready.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from lab.shared.atomic import write_json_atomic

__all__ = ["RevocationList", "read_revocations", "revoke", "revoke_if_new"]

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 64 * 1024 * 1024
_MISSING = ("missing",)
_T = TypeVar("_T")


def _parse(data: bytes) -> tuple[int, dict[str, float]]:
    """Validate a revocation document; raise ValueError if it is not one."""
    try:
        doc: Any = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("top level must be an object")
    version, revoked = doc.get("version"), doc.get("revoked")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError("'version' must be a non-negative integer")
    if not isinstance(revoked, dict):
        raise ValueError("'revoked' must be an object")
    for jti, at in revoked.items():
        if not jti or not isinstance(at, int | float) or isinstance(at, bool):
            raise ValueError("'revoked' must map non-empty jti strings to epoch numbers")
    return version, revoked


def read_revocations(path: str | os.PathLike[str]) -> tuple[int, dict[str, float]]:
    """Read a revocation file: ``(version, {jti: revoked_at})``; missing file -> ``(0, {})``.

    Raises ``ValueError`` if the file exists but is not a valid revocation list.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return 0, {}
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
    return _parse(data)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomic(path: Path, version: int, revoked: Mapping[str, float]) -> None:
    # Not a secret (readable by the service user); a crash must not lose a revocation.
    write_json_atomic(path, {"version": version, "revoked": dict(revoked)}, 0o644,
                      indent=None, durable=True)


def revoke(path: str | os.PathLike[str], jti: str, *, now: float | None = None) -> int:
    """Add ``jti`` to the revocation file at ``path``; return the new version.

    Refuses (``ValueError``) to rewrite a corrupt file, which would silently drop
    the revocations it held. Revoking an already revoked jti keeps its original
    timestamp but still bumps the version.
    """
    if not isinstance(jti, str) or not jti:
        raise ValueError("jti must be a non-empty string")
    target = Path(path)
    with _locked(target):
        version, revoked = read_revocations(target)
        revoked.setdefault(jti, int(time.time() if now is None else now))
        _write_atomic(target, version + 1, revoked)
    return version + 1


def revoke_if_new(path: str | os.PathLike[str], jti: str, *,
                  now: float | None = None) -> tuple[int, bool]:
    """Add ``jti`` unless it is already revoked; return ``(version, added)``.

    An already revoked jti leaves the file untouched, so its version stays where it
    was and no reader re-reads the list for nothing. Refuses a corrupt file as
    ``revoke`` does.
    """
    if not isinstance(jti, str) or not jti:
        raise ValueError("jti must be a non-empty string")
    target = Path(path)
    with _locked(target):
        version, revoked = read_revocations(target)
        if jti in revoked:
            return version, False
        revoked[jti] = int(time.time() if now is None else now)
        _write_atomic(target, version + 1, revoked)
    return version + 1, True


def _signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class RevocationList:
    """A site's revocation list, reloaded from its file when that file changes.

    Supports ``jti in revocation_list``, so it can be passed straight to
    ``tokens.verify_token(revoked=...)``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        min_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = Path(path)
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        # (version, revoked) swapped as one object so readers never see a mix.
        self._state: tuple[int, Mapping[str, float]] = (0, MappingProxyType({}))
        self._healthy = False
        self._seen: tuple[Any, ...] | None = None  # file identity last examined
        self._last_check = -math.inf
        self.refresh(force=True)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def healthy(self) -> bool:
        """True once the list has been loaded successfully (a missing file counts)."""
        return self._healthy

    @property
    def version(self) -> int:
        return self._state[0]

    @property
    def revoked(self) -> Mapping[str, float]:
        """Read-only ``{jti: revoked_at}`` of the current state."""
        return self._state[1]

    def __contains__(self, jti: object) -> bool:
        return jti in self._state[1]

    def __len__(self) -> int:
        return len(self._state[1])

    def refresh(self, *, force: bool = False) -> None:
        """Reload if the file changed (one ``os.stat`` when it did not)."""
        now = self._clock()
        if not force and now - self._last_check < self._min_interval_s:
            return
        with self._lock:
            self._last_check = now
            sig = self._file_op("stat", lambda: _signature(os.stat(self._path)))
            if sig is not None and sig != self._seen:
                self._load()

    def _file_op(self, doing: str, op: Callable[[], _T]) -> _T | None:
        """`op()`'s result; None when the file is missing (`_on_missing`) or the call
        failed (rejected with the error)."""
        try:
            return op()
        except FileNotFoundError:
            self._on_missing()
        except OSError as exc:
            self._reject((f"{doing}-error", str(exc)), f"cannot {doing}: {exc}")
        return None

    def _on_missing(self) -> None:
        if self._seen == _MISSING:
            return
        self._seen = _MISSING
        if self._healthy and self.version > 0:
            log.warning(
                "revocation file %s disappeared; keeping version %d", self._path, self.version
            )
            return
        self._state = (0, MappingProxyType({}))
        self._healthy = True

    def _reject(self, seen: tuple[Any, ...], why: str) -> None:
        if seen == self._seen:
            return
        self._seen = seen
        kept = f"keeping version {self.version}" if self._healthy else "not ready"
        log.warning("revocation file %s rejected (%s); %s", self._path, why, kept)

    def _read(self) -> tuple[tuple[int, ...], bytes]:
        with open(self._path, "rb") as f:
            return _signature(os.fstat(f.fileno())), f.read(MAX_FILE_BYTES + 1)

    def _load(self) -> None:
        read = self._file_op("read", self._read)
        if read is None:
            return
        sig, data = read
        try:
            if len(data) > MAX_FILE_BYTES:
                raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
            version, revoked = _parse(data)
        except ValueError as exc:
            self._reject(sig, str(exc))
            return
        if self._healthy and version < self.version:
            self._reject(sig, f"version went back from {self.version} to {version}")
            return
        self._seen = sig
        self._state = (version, MappingProxyType(revoked))
        self._healthy = True
