"""The growth curve: `up` time, converging time, idle CPU and memory (PSS) of generated labs
of 3, 10, 25, 50 and 100 sites, every process of a site counted; writes JSON and a PNG.

    python -m bench.scale_bench [--sizes 3,10,25,50,100] [--idle-s 60] [--compare 50]
                                [--repeat N]

`--repeat N` measures each size N times in a row and reports the median of each figure
(every run is kept under the row's `runs`): this VM's speed varies from one run to the
next, and a single run of a size can be off by a third.

`--compare N` also brings an N-site lab up with every daemon started by exec
(ANYCAST_LAB_LAUNCHER=exec: interpreter start and imports paid per daemon), to show what
the pre-imported launcher gives.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import yaml

from bench.common import save, show, unique
from lab.host import procs
from lab.model import load_text
from lab.model.generate import generate_topology
from lab.ops import lifecycle

ROOT = Path(__file__).resolve().parents[1]
PICTURE = ROOT / "docs" / "scale.png"
HZ = os.sysconf("SC_CLK_TCK")


def _topology(sites: int, name: str):
    data = generate_topology(name, sites, max(1, sites // 10))
    report = load_text(yaml.safe_dump(data), f"generated {sites} sites")
    assert report.ok and report.topology is not None, report.problems
    return report.topology


def _family(pid: int) -> list[int]:
    out = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(k) for k in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# `up`'s progress lines that end a phase: (the phase's name, how its line starts or ends).
PHASES = (("fabric", "addresses and routes"), ("routers", "routers started"),
          ("credentials", "lab CA"), ("configs", "daemon configs rendered and checked"),
          ("start", "daemons started"),
          ("ready", "every daemon ready"), ("converge", "converged in"))


def phase_times(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds each phase of `up` took, from its timed progress lines (pure): a phase
    runs from the end of the one before it (or the start) to its own line."""
    out: dict[str, float] = {}
    before = 0.0
    for name, marker in PHASES:
        at = next((t for t, line in lines if line.startswith(marker) or line.endswith(marker)),
                  None)
        if at is None:
            continue
        out[name] = round(at - before, 2)
        before = at
    return out


def measure(sites: int, idle_s: float, launcher: bool = True) -> dict:
    """One lab of `sites` sites: up, converge, idle CPU and PSS per site and in total."""
    if launcher:
        os.environ.pop(procs.LAUNCHER_ENV, None)
    else:
        os.environ[procs.LAUNCHER_ENV] = "exec"
    topo = _topology(sites, unique("bs"))
    load_before = round(os.getloadavg()[0], 2)  # other people's labs share the machine
    t0 = time.monotonic()
    lines: list[tuple[float, str]] = []
    lab = lifecycle.up(topo, lambda m: lines.append((time.monotonic() - t0, m)),
                       converge_deadline_s=300)
    up_s = time.monotonic() - t0
    load_up = round(os.getloadavg()[0], 2)
    procs.Launcher.close_all()  # as when the `up` command ends
    try:
        records = [r for r in lab.journal.owned().processes
                   if r.name != "launcher" and procs.is_running(r)]
        family = {r.pid: _family(r.pid) for r in records}
        site_of = {r.pid: r.node for r in records}
        routers = {n.name for n in lab.plan.by_role("router")}
        before = {pid: sum(_ticks(p) for p in pids) for pid, pids in family.items()}
        time.sleep(idle_s)  # the lab idles; this is what is measured
        after = {pid: sum(_ticks(p) for p in pids) for pid, pids in family.items()}
        load_idle = round(os.getloadavg()[0], 2)  # at the end of the idle window
        site_cpu = sum(after[p] - before[p] for p in family if site_of[p] not in routers)
        all_cpu = sum(after[p] - before[p] for p in family)
        site_pss = sum(_pss_kib(q) for p, pids in family.items() if site_of[p] not in routers
                       for q in pids)
        all_pss = sum(_pss_kib(q) for pids in family.values() for q in pids)
    finally:
        lifecycle.teardown(lab.journal)
        os.environ.pop(procs.LAUNCHER_ENV, None)
    return {
        "sites": sites, "launcher": launcher, "up_s": round(up_s, 2),
        "converge_s": round(lab.state.get("converge_s", 0.0), 2),
        "idle_cpu_pct_per_site": round(site_cpu / HZ / idle_s * 100 / sites, 3),
        "idle_cpu_pct_total": round(all_cpu / HZ / idle_s * 100, 2),
        "pss_mib_per_site": round(site_pss / 1024 / sites, 1),
        "pss_mib_total": round(all_pss / 1024, 1),
        "processes": sum(len(v) for v in family.values()),
        "load_before": load_before, "load_up": load_up, "load_idle": load_idle,
        "phases_s": phase_times(lines),
    }


FIGURES = ("up_s", "converge_s", "idle_cpu_pct_per_site", "idle_cpu_pct_total",
           "pss_mib_per_site", "pss_mib_total")


def median_row(runs: list[dict]) -> dict:
    """One row for a size measured several times (pure): each figure is the median of its
    runs (of two, the mean), the rest is the first run's, and every run's figures are
    kept under `runs`."""
    if len(runs) == 1:
        return runs[0]
    row = dict(runs[0])
    for key in FIGURES:
        row[key] = round(statistics.median(r[key] for r in runs), 3)
    row["runs"] = [{k: r[k] for k in (*FIGURES, "load_before")} for r in runs]
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = [r for r in rows if r["launcher"]]
    sites = [r["sites"] for r in curve]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(sites, [r["up_s"] for r in curve], "o-", color="#0072B2", label="up (total)")
    ax1.plot(sites, [r["converge_s"] for r in curve], "s--", color="#E69F00",
             label="of which converging")
    ax1.set_xlabel("sites")
    ax1.set_ylabel("seconds")
    ax1.set_title("time to a converged lab")
    ax1.legend()
    ax2.plot(sites, [r["pss_mib_total"] for r in curve], "o-", color="#009E73",
             label="memory (PSS, MiB)")
    ax2.set_xlabel("sites")
    ax2.set_ylabel("MiB")
    ax3 = ax2.twinx()
    ax3.plot(sites, [r["idle_cpu_pct_total"] for r in curve], "^:", color="#CC79A7",
             label="idle CPU (% of one core)")
    ax3.set_ylabel("% of one core")
    ax2.set_title("idle lab: memory and CPU")
    lines = ax2.get_lines() + ax3.get_lines()
    ax2.legend(lines, [line.get_label() for line in lines], loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,10,25,50,100")
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--compare", type=int, default=50,
                        help="also measure this many sites started by exec (0: skip)")
    parser.add_argument("--plot", type=Path, default=PICTURE)
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each size this many times; report the medians")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    rows: list[dict] = []
    for sites in (int(s) for s in args.sizes.split(",")):
        modes = [True, False] if sites == args.compare else [True]
        for launcher in modes:
            runs = []
            for _ in range(args.repeat):
                runs.append(measure(sites, args.idle_s, launcher))
                # Saved as it goes: a size that fails to come up still leaves the others.
                save("scale", {"idle_s": args.idle_s, "repeat": args.repeat,
                               "rows": [*rows, median_row(runs)], "complete": False})
            rows.append(median_row(runs))
    show(f"growth curve (idle measured over {args.idle_s:.0f} s)",
         ["sites", "start", "up s", "converging s", "idle CPU %/site", "idle CPU % total",
          "PSS MiB/site", "PSS MiB total"],
         [[r["sites"], "launcher" if r["launcher"] else "exec", r["up_s"], r["converge_s"],
           r["idle_cpu_pct_per_site"], r["idle_cpu_pct_total"], r["pss_mib_per_site"],
           r["pss_mib_total"]] for r in rows])
    plot(rows, args.plot)
    save("scale", {"idle_s": args.idle_s, "repeat": args.repeat, "rows": rows,
                   "picture": str(args.plot.name), "complete": True})


if __name__ == "__main__":
    main()
