"""A prober in a thread of its own: what the background probes (DNS, HTTPS, TCP streams)
share. `start()` it, read `samples` live (one per query, appended as it is sent),
`stop()` it (returns them). A probe's `_run()` is the thread's body: it sends until
`_stop` is set or its own bound is reached."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from probes.dns import Sample


class BackgroundThread:
    """The thread, its stop flag and the samples of one background probe."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join()
        return self.samples
