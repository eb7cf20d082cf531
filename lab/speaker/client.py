"""Talking to a site's speaker API process over its unix control socket."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


def command(control: Path, text: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one command line and return the JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(control))
        sock.sendall(text.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
