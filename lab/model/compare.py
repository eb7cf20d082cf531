"""What differs between two topologies, as a short list of paths a user can read
(`clients.c-eu.expect: ams -> nyc`, `sites.lis: added`). `up` uses it to refuse to
pretend that a lab running with one topology is the lab another file describes.

The `up` section is left out: it says how `up` behaves, not what the lab is."""

from __future__ import annotations

from typing import Any

from lab.model.topology import Topology

IGNORED = frozenset({"up"})
SHOWN = 8  # paths listed before "and N more"


def topology_changes(old: Topology, new: Topology) -> list[str]:
    """Every changed path from `old` to `new`, in the order of the file's sections."""
    before = {k: v for k, v in old.model_dump(mode="json").items() if k not in IGNORED}
    after = {k: v for k, v in new.model_dump(mode="json").items() if k not in IGNORED}
    return changes(before, after)


def changes(old: Any, new: Any, path: str = "") -> list[str]:
    """Paths where two JSON-like values differ: mappings key by key, lists item by item."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in [*old, *(k for k in new if k not in old)]:
            where = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(f"{where}: removed")
            elif key not in old:
                out.append(f"{where}: added")
            else:
                out += changes(old[key], new[key], where)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            where = f"{path}[{i}]"
            if i >= len(new):
                out.append(f"{where}: removed")
            elif i >= len(old):
                out.append(f"{where}: added")
            else:
                out += changes(old[i], new[i], where)
        return out
    if old == new:
        return []
    if old is None and isinstance(new, dict | list):
        return [f"{path}: added"]
    if new is None and isinstance(old, dict | list):
        return [f"{path}: removed"]
    return [f"{path or 'topology'}: {_short(old)} -> {_short(new)}"]


def summary(paths: list[str], shown: int = SHOWN) -> list[str]:
    """The first `shown` paths, and how many more there are."""
    if len(paths) <= shown:
        return list(paths)
    return [*paths[:shown], f"and {len(paths) - shown} more"]


def _short(value: Any, limit: int = 40) -> str:
    if isinstance(value, dict | list):
        return "{...}" if isinstance(value, dict) else "[...]"
    text = "null" if value is None else str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
