"""Sockets inside a lab namespace, without forking a process.

A socket belongs to the network namespace its creating thread was in. `entered()` moves
only the calling thread into the namespace (setns) for a block and straight back;
`socket_in()` makes one socket that way, so probes and checks can talk from a client's
namespace at no cost, and the fabric opens its netlink sockets and writes sysctls the
same way. The thread is always returned to where it was, or the process stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """The calling thread inside `netns` (which must exist: it is never created) for the
    block, then back where it was. Sockets made inside stay in `netns`; other threads are
    not moved."""
    target = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    except BaseException:
        os.close(target)
        raise
    try:
        try:  # the move inside: an exception raised just after it still moves back
            _setns(target)
            yield
        finally:
            go_home(home)
    finally:
        os.close(home)
        os.close(target)


def unshare_net() -> None:
    """Move the calling thread into a new network namespace of its own (unshare); the
    caller names it (a bind mount) and moves back with `go_home`."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def go_home(home: int) -> None:
    """Move the calling thread back to the namespace open as `home`."""
    try:
        _setns(home)
    except OSError:  # never carry on in the wrong namespace
        os._exit(70)


def socket_in(netns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A new socket living in `netns` (which must exist: it is never created)."""
    with _lock, entered(netns):
        return socket.socket(family, kind, proto)
