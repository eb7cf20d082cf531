"""The exposure timeline (matplotlib, no display needed): per client, every introspection
of the revoked token through the anycast address over time -- accepted (`active: true`),
refused, or unanswered -- with the revocation as a vertical line."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

Sample = tuple[float, str | None, bool | None]

SHOWN = ((True, "#d62728", "accepted (active: true)"),
         (False, "#2ca02c", "refused (active: false)"),
         (None, "#7f7f7f", "no answer"))


def timeline(samples: dict[str, list[Sample]], t0: float, path: Path, title: str) -> Path:
    clients = list(samples)
    fig, ax = plt.subplots(figsize=(11, 1.4 + 0.55 * len(clients)))
    for row, client in enumerate(clients):
        for value, colour, _label in SHOWN:
            xs = [t - t0 for t, _site, active in samples[client] if active is value]
            ax.scatter(xs, [row] * len(xs), s=12, marker="|" if value is not None else "x",
                       color=colour, linewidths=1.2)
        sites = sorted({site for t, site, _ in samples[client] if site and t >= t0})
        ax.annotate(", ".join(sites), (1.0, row), xycoords=("axes fraction", "data"),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.axvline(0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(clients)), clients)
    ax.set_ylim(-0.7, len(clients) - 0.3)
    ax.set_xlabel("seconds since the revocation at the issuer (right: sites that answered)")
    ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color=c, marker="|" if v is not None else "x", linestyle="",
                      markersize=10, label=label) for v, c, label in SHOWN]
    handles.append(Line2D([], [], color="black", linestyle="--", label="revoked"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title, y=1.06, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight",
                metadata={"Title": title, "Description": "rows: " + ",".join(clients)})
    plt.close(fig)
    return path
