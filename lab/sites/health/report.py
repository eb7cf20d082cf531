"""What the health daemon tells the outside: a JSON-lines event log, the state file.

Event log: one JSON object per line, appended and flushed at once, e.g.
    {"time": "2025-01-01T10:00:00.123Z", "ts": 1735725600.123, "event": "check",
     "check": "dns", "old": "up", "new": "down", "reason": "timeout (2 consecutive failures)"}
    {"time": ..., "event": "action", "action": "withdraw", "reason": "dns down: ...",
     "ok": true, "answer": {"ok": true, "state": "withdrawn", "detail": ["done", "done"]}}
Events: start, stop, check, site, drain, action, shim, saturation.

State file: one JSON object, replaced atomically (temp file + rename) on every change, so
a reader (`anycast-lab status`) never sees half a file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger("lab.sites.health")


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class EventLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: TextIO | None = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._failed = False

    def write(self, event: str, **fields: Any) -> None:
        now = time.time()
        record = {"time": iso(now), "ts": round(now, 6), "event": event, **fields}
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(record, default=str) + "\n")
            self._file.flush()
        except OSError as exc:  # a full disk must not stop health checking
            if not self._failed:
                log.warning("cannot write the event log %s: %s", self.path, exc)
            self._failed = True

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Replace `path` with `doc` in one rename (readers see the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, default=str)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
