"""Planned maintenance: `drain` writes the site's disable file, which its health daemon
turns into "announce with GRACEFUL_SHUTDOWN (65535:0), then withdraw after a delay";
`undrain` removes it. The file survives daemon restarts, so a drained site stays drained."""

from __future__ import annotations

import time
from pathlib import Path

from lab.host.labs import Lab
from lab.model.plan import require_site
from lab.render.launch import node_dir


def drain_file(lab_dir: Path, site: str) -> Path:
    return node_dir(lab_dir, site) / "drain"


def drain(lab: Lab, site: str) -> bool:
    """Start draining; False if the site was already drained."""
    assert lab.plan is not None
    require_site(lab.plan, site)
    path = drain_file(lab.journal.dir, site)
    if path.exists():
        return False
    path.write_text(f"drained at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    return True


def undrain(lab: Lab, site: str) -> bool:
    """Stop draining; False if the site was not drained."""
    assert lab.plan is not None
    require_site(lab.plan, site)
    path = drain_file(lab.journal.dir, site)
    if not path.exists():
        return False
    path.unlink()
    return True


def is_drained(lab_dir: Path, site: str) -> bool:
    return drain_file(lab_dir, site).exists()
