"""An export on disk: the containerlab topology file(s), every node's files, the lab's
trust material, the effective topology, and a marker listing what was written.

The only module of `lab.export` that writes. Into a new or empty directory, or over an
earlier export (its marker says which files are ours: those alone are removed first);
anything else is refused. No symlink is ever followed: directories are made one level at
a time and checked (`lab.host.safefs`), files are created new (`O_EXCL | O_NOFOLLOW`)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from lab.export import clab
from lab.export.model import Export, NodeFile
from lab.host import safefs
from lab.model.errors import BadInput

MARKER = ".anycast-lab-export.json"


@dataclass
class Written:
    directory: Path
    files: list[str]
    deploy: dict[str, str]   # host -> topology file it deploys


def render_files(export: Export) -> dict[str, tuple[bytes, int]]:
    """Every file of the export: relative path -> (bytes, mode). Pure."""
    out: dict[str, tuple[bytes, int]] = {}
    for name, doc in clab.documents(export).items():
        out[name] = (yaml.safe_dump(doc, sort_keys=False, width=1 << 20).encode(), 0o644)
    files: list[NodeFile] = [*export.shared_files]
    for node in export.nodes.values():
        files += node.files
    for f in files:
        seen = out.get(f.export_path)
        if seen is not None and seen != (f.data, f.mode):
            raise ValueError(f"two different files for {f.export_path}")
        out[f.export_path] = (f.data, f.mode)
    return out


def write_export(export: Export, directory: Path) -> Written:
    files = render_files(export)
    for rel in files:
        _check_relative(rel)
    _prepare(directory)
    deploy = {h.name: export.topology_file(h.name) for h in export.hosts
              if export.nodes_on(h.name)}
    # The marker first, as an intent: an export cut short (a full disk) is still known
    # as ours, and the next export into the directory replaces it.
    marker = {"lab": export.lab, "files": sorted(files), "deploy": deploy,
              "clabernetes": export.clabernetes}
    safefs.write_new(directory / MARKER, json.dumps(marker, indent=2) + "\n")
    for rel, (data, mode) in sorted(files.items()):
        target = directory
        for part in PurePosixPath(rel).parent.parts:
            target = safefs.ensure_private_dir(target / part)
        safefs.write_new(target / PurePosixPath(rel).name, data, mode)
    return Written(directory, sorted(files), deploy)


def _check_relative(rel: str) -> None:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"not a relative path inside the export: {rel}")


def _prepare(directory: Path) -> None:
    """A new directory (its parent must exist), an empty one, or an earlier export whose
    own files are removed; BadInput for anything else."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        if not directory.parent.is_dir():
            raise BadInput(f"-o {directory}: its parent directory does not exist") from None
        safefs.ensure_private_dir(directory)
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise BadInput(f"-o {directory}: not a directory (a symlink or a file): "
                       "give a new or empty directory")
    safefs.check_private_dir(directory)
    if not any(directory.iterdir()):
        return
    listed = _earlier_export(directory)
    if listed is None:
        raise BadInput(f"-o {directory} is not empty and holds no earlier export: give a "
                       "new or empty directory (nothing was written)")
    _remove_listed(directory, listed)


def _earlier_export(directory: Path) -> list[str] | None:
    try:  # non-blocking: a FIFO planted there would wait for a writer forever
        fd = os.open(directory / MARKER,
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            doc = json.loads(f.read(4 << 20))
        except ValueError:
            return None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list) or not all(isinstance(p, str) for p in files):
        return None
    return files


def _remove_listed(directory: Path, files: list[str]) -> None:
    """Remove the files an earlier export listed (regular files only, each inside the
    directory and reached through real directories), then its emptied directories."""
    parents: set[Path] = set()
    for rel in files:
        try:
            _check_relative(rel)
        except ValueError:
            raise BadInput(f"-o {directory}: its export marker lists {rel!r}, which is not "
                           "inside it: remove the directory yourself") from None
        path = directory
        for part in PurePosixPath(rel).parent.parts:
            path = path / part
            if path.is_symlink():
                raise BadInput(f"-o {directory}: {path} is a symlink: remove the directory "
                               "yourself") from None
            parents.add(path)
        target = directory / rel
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"-o {directory}: {target} is not a regular file: remove the "
                           "directory yourself")
        target.unlink()
    (directory / MARKER).unlink()
    for path in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: someone else's file stays
            path.rmdir()
