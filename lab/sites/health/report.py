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
import time
from pathlib import Path
from typing import Any, TextIO

from lab.shared.atomic import write_json_atomic

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


def replace_state_file(path: Path, doc: dict[str, Any]) -> None:
    """Replace the state file with `doc` in one rename (readers see the old or the new
    file). Not fsynced: it is a view the daemon rewrites from memory on every change, and
    a sync must not stand between a failed check and the withdrawal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc, 0o644, indent=1, sort_keys=False, default=str, fsync=False)
