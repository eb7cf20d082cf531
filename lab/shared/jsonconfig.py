"""A site program's JSON config file, read the one way both programs (health daemon,
introspection service) read theirs: one object at the top, and relative paths taken
relative to the file's folder. What the object may hold is each program's own model."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def read_object(path: Path) -> dict[str, Any]:
    """The file's top-level object; ValueError naming the file when it cannot be read,
    is not JSON, or is not an object."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the top level must be an object")
    return raw


def resolve_paths(raw: dict[str, Any], keys: Iterable[str], base: Path) -> None:
    """Make each of `keys` that holds a string a path relative to `base` (in place)."""
    for key in keys:
        if isinstance(raw.get(key), str):
            raw[key] = str(base / raw[key])
