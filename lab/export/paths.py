"""Where things live inside a node's container: the image's programs (see the repo's
`Containerfile`) and the lab's files, laid out as `up` lays out its run directory, so
the same renderers give the same configs for the same paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

IMAGE_ROOT = PurePosixPath("/opt/anycast-lab")
VENV = IMAGE_ROOT / "venv"              # this package and its pinned dependencies
LAB_DIR = IMAGE_ROOT / "run"            # the node's view of a lab directory (nodes/, pki/)
DEFAULT_IMAGE = "anycast-lab-node:latest"


@dataclass(frozen=True)
class Runtime:
    """The programs a node runs, by their path inside the container."""

    python: str = str(VENV / "bin" / "python")
    tools: dict[str, str] = field(default_factory=lambda: {
        "bird": "/usr/sbin/bird",
        "unbound": "/usr/sbin/unbound",
        "unbound-checkconf": "/usr/sbin/unbound-checkconf",
        "exabgp": str(VENV / "bin" / "exabgp"),
    })
    # ExaBGP's API process as a module of the image's installed package (None), not by a
    # start file's path: no path of the exporting machine reaches a node.
    speaker_run: str | None = None


IMAGE_RUNTIME = Runtime()


def relative_to_lab(container_path: str) -> str:
    """A file under LAB_DIR as its path in the export directory (`nodes/ams/unbound.conf`)."""
    return str(PurePosixPath(container_path).relative_to(LAB_DIR))
