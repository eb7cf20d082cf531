"""Planned maintenance: `drain` writes the site's disable file, which its health daemon
turns into "announce with GRACEFUL_SHUTDOWN (65535:0), then withdraw after a delay";
`undrain` removes it. The file survives daemon restarts, so a drained site stays drained."""

from __future__ import annotations

import time
from pathlib import Path

from lab.host.labs import Lab
from lab.model import names
from lab.model.plan import require_site


def drain_file(lab_dir: Path, site: str) -> Path:
    return names.node_dir(lab_dir, site) / names.DRAIN


def _site_drain_file(lab: Lab, site: str) -> Path:
    """The drain file of a site of the lab (BadInput for an unknown site)."""
    assert lab.plan is not None
    return drain_file(lab.journal.dir, require_site(lab.plan, site).name)


def drain(lab: Lab, site: str) -> bool:
    """Start draining; False if the site was already drained."""
    path = _site_drain_file(lab, site)
    if path.exists():
        return False
    path.write_text(f"drained at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    return True


def undrain(lab: Lab, site: str) -> bool:
    """Stop draining; False if the site was not drained."""
    path = _site_drain_file(lab, site)
    if not path.exists():
        return False
    path.unlink()
    return True
