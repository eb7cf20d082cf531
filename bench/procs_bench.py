"""Cost of starting a process inside a namespace: the runner's `nsenter --net=... --` argv
prefix against entering the namespace in a preexec_fn (pyroute2 setns in the forked child,
what the runner did before; unsafe while other threads run), 50 starts each.

    python -m bench.procs_bench [--starts N]

Per start: the parent's cost (until Popen returns), the time until the child runs its own
program in the namespace (/proc/PID/exe is the program, polled without sleeping), and a
short command's round trip (`true`, spawn to exit). Runs in a namespace of its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from collections.abc import Callable

from pyroute2 import netns

from bench.common import save, show, stats, unique
from lab.host import procs
from lab.shared.wait import wait_until

PROGRAM = os.path.realpath(shutil.which("sleep") or "/bin/sleep")


def _runs_program(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe") == PROGRAM
    except OSError:
        return False


def preexec_setns(ns: str, argv: list[str]) -> dict:
    return {"args": argv, "preexec_fn": procs.enter_netns(ns)}


def nsenter_prefix(ns: str, argv: list[str]) -> dict:
    return {"args": procs.in_netns(ns, argv)}


def measure(ns: str, how: Callable[[str, list[str]], dict], starts: int) -> dict:
    want = os.stat(f"/run/netns/{ns}").st_ino
    spawn_ms, running_ms, round_trip_ms = [], [], []
    for _ in range(starts):
        t0 = time.perf_counter()
        proc = subprocess.Popen(**how(ns, [PROGRAM, "60"]), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, start_new_session=True)
        t1 = time.perf_counter()
        assert wait_until(lambda pid=proc.pid: _runs_program(pid), 10, interval_s=0)
        t2 = time.perf_counter()
        assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == want
        proc.kill()
        proc.wait()
        t3 = time.perf_counter()
        subprocess.run(**how(ns, ["true"]), check=True)
        t4 = time.perf_counter()
        spawn_ms.append((t1 - t0) * 1000)
        running_ms.append((t2 - t0) * 1000)
        round_trip_ms.append((t4 - t3) * 1000)
    return {"spawn_ms": stats(spawn_ms), "running_ms": stats(running_ms),
            "round_trip_ms": stats(round_trip_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=50)
    args = parser.parse_args()
    ns = unique("procs-bench")
    netns.create(ns)
    try:
        results = {name: measure(ns, how, args.starts)
                   for name, how in (("preexec_setns", preexec_setns),
                                     ("nsenter", nsenter_prefix))}
    finally:
        netns.remove(ns)
    rows = [[name, f"{r['spawn_ms']['median']:.2f}", f"{r['running_ms']['median']:.2f}",
             f"{r['running_ms']['p95']:.2f}", f"{r['round_trip_ms']['median']:.2f}"]
            for name, r in results.items()]
    show(f"start in a namespace, {args.starts} starts (ms)",
         ["mechanism", "spawn median", "running median", "running p95",
          "`true` round trip median"], rows)
    save("process_start", {"starts": args.starts, **results})


if __name__ == "__main__":
    main()
