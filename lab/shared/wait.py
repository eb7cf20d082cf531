"""Waiting for a condition with a deadline: the one poller the lab's own code uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, interval_s: float = 0.05,
               stop: Callable[[T], bool] | None = None) -> T:
    """Call `condition` until it returns something truthy, `stop(value)` says waiting is
    pointless, or `timeout_s` has passed; returns the last value (falsy if it never held).
    The condition is always asked at least once, and once more at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or (stop is not None and stop(value)):
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            return value
        time.sleep(min(interval_s, left))
