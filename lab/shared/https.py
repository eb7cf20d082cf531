"""One HTTPS request with a JSON answer, from this process's namespace or from inside a lab
namespace (`netns`: the socket is made there, no process is forked), checked against the
lab CA. Used by the orchestrator (token commands, audit), the sites (replication) and the
health daemon (peers' identity state). Stdlib only; `Connection: close`, bounded reads.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.shared.nsnet import socket_in

MAX_ANSWER = 8 * 1024 * 1024


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any  # the JSON document, or None
    peer_cert: bytes = b""  # the server's certificate, DER
    elapsed_s: float = 0.0
    raw: bytes = field(default=b"", repr=False)


def _context(ca_file: Path | str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def basic(client_id: str, secret: str) -> str:
    """An HTTP Basic Authorization value."""
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")


def request(address: str, port: int, method: str, path: str, *, ca_file: Path | str,
            server_name: str, netns: str | None = None, body: Any = None,
            form: str | None = None, headers: dict[str, str] | None = None,
            timeout_s: float = 2.0, context: ssl.SSLContext | None = None) -> Answer:
    """One request; OSError / ssl.SSLError / ValueError when there is no HTTP answer.
    `body` is sent as JSON, `form` as application/x-www-form-urlencoded."""
    started = time.monotonic()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raw = (socket_in(netns, family, socket.SOCK_STREAM) if netns
           else socket.socket(family, socket.SOCK_STREAM))
    raw.settimeout(timeout_s)
    payload = b""
    head = {"Host": server_name, "Connection": "close", "Accept": "application/json",
            **(headers or {})}
    if body is not None:
        payload = json.dumps(body).encode()
        head["Content-Type"] = "application/json"
    elif form is not None:
        payload = form.encode()
        head["Content-Type"] = "application/x-www-form-urlencoded"
    if payload or method == "POST":
        head["Content-Length"] = str(len(payload))
    text = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    with raw:
        raw.connect((address, port))
        with (context or _context(ca_file)).wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(text.encode() + b"\r\n" + payload)
            cert = tls.getpeercert(binary_form=True) or b""
            data = bytearray()
            while len(data) <= MAX_ANSWER:
                try:
                    chunk = tls.recv(65536)
                except ssl.SSLError:  # a close without close_notify: what we have counts
                    break
                if not chunk:
                    break
                data += chunk
    top, _, rest = bytes(data).partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status_line = lines[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ValueError(f"not an HTTP answer: {top[:40]!r}")
    answer_headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    length = answer_headers.get("content-length")
    if length is not None and length.isdigit():
        rest = rest[:int(length)]
    try:
        doc = json.loads(rest) if rest else None
    except ValueError:
        doc = None
    return Answer(int(status_line[1]), answer_headers, doc, cert,
                  time.monotonic() - started, rest)
