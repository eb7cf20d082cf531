"""Failover timeline pictures (matplotlib, no display needed): per client, which site
answered each query over time, lost queries marked, fault and heal as vertical lines."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from lab.measure.trials import TrialRecord

PALETTE = ["#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#bcbd22",
           "#e377c2", "#7f7f7f"]


def timeline(records: list[TrialRecord], path: Path, title: str, max_panels: int = 4) -> Path:
    shown = records[:max_panels]
    clients = sorted({c for r in shown for c in r.samples})
    sites = sorted({s.site for r in shown for ss in r.samples.values() for s in ss if s.site})
    colour = {site: PALETTE[i % len(PALETTE)] for i, site in enumerate(sites)}
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 1.1 + 0.55 * len(clients) * len(shown)),
                             squeeze=False, sharex=False)
    for index, (ax, record) in enumerate(zip(axes[:, 0], shown, strict=True)):
        for row, client in enumerate(clients):
            samples = record.samples.get(client, [])
            for site in sites:
                xs = [s.t - record.t_fault for s in samples if s.site == site]
                ax.scatter(xs, [row] * len(xs), s=9, marker="|", color=colour[site],
                           linewidths=1.2)
            lost = [s.t - record.t_fault for s in samples if s.site is None]
            ax.scatter(lost, [row] * len(lost), s=16, marker="x", color="#d62728",
                       linewidths=1.0)
        ax.axvline(0, color="black", linestyle="--", linewidth=1)
        ax.axvline(record.t_heal - record.t_fault, color="#555555", linestyle=":",
                   linewidth=1)
        ax.set_yticks(range(len(clients)), clients)
        ax.set_ylim(-0.7, len(clients) - 0.3)
        ax.set_ylabel(f"trial {index + 1}")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the fault")
    handles = [Line2D([], [], color=colour[s], marker="|", linestyle="", markersize=10,
                      label=f"answered by {s}") for s in sites]
    handles += [Line2D([], [], color="#d62728", marker="x", linestyle="", label="no answer"),
                Line2D([], [], color="black", linestyle="--", label="fault"),
                Line2D([], [], color="#555555", linestyle=":", label="heal")]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6),
               fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title, y=1.04, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # The rows, in the file itself, so a reader (or a test) can check what is drawn.
    fig.savefig(path, dpi=110, bbox_inches="tight",
                metadata={"Title": title, "Description": "rows: " + ",".join(clients)})
    plt.close(fig)
    return path
