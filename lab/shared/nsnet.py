"""Sockets inside a lab namespace, without forking a process.

A socket belongs to the network namespace its creating thread was in. `socket_in()`
moves only the calling thread into the namespace (setns), creates the socket and moves
the thread straight back, so probes and checks can talk from a client's namespace at
no cost. The thread is always returned to where it was, or the process stops.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in(netns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A new socket living in `netns` (which must exist: it is never created)."""
    target = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
    try:
        with _lock:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                _setns(target)
                try:
                    return socket.socket(family, kind, proto)
                finally:
                    try:
                        _setns(home)
                    except OSError:  # never carry on in the wrong namespace
                        os._exit(70)
            finally:
                os.close(home)
    finally:
        os.close(target)
