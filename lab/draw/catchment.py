"""The catchment as a picture: clients x sites, one matrix per family, the way RIPE Atlas
and Verfploeter show which anycast instance each vantage point reaches. A filled cell is
the site that answered the client (its share of the queries under ECMP, and the RTT); a
heavy border marks the client's expected site(s). Fill and border differ in kind, not
only in colour; an unanswered client gets a row note."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lab.draw import palette

FAMILIES = ("ipv4", "ipv6")


def shares(entry: dict[str, Any]) -> dict[str, float]:
    """Site -> share of a client's answers in one family of the catchment report: its
    `sites` distribution when there is one (ECMP), else 1.0 for the site that answered."""
    spread = {s: n for s, n in (entry.get("sites") or {}).items() if s != "none"}
    total = sum((entry.get("sites") or {}).values())
    if spread and total:
        return {s: n / total for s, n in spread.items()}
    return {entry["site"]: 1.0} if entry.get("site") else {}


def figure(report: dict[str, Any], sites: list[str]) -> Figure:
    clients = list(report["clients"])
    fig, axes = plt.subplots(1, len(FAMILIES), figsize=(2.2 + 1.1 * len(sites) * 2,
                                                          1.4 + 0.5 * len(clients)),
                             squeeze=False)
    for ax, fam in zip(axes[0], FAMILIES, strict=True):
        for row, client in enumerate(clients):
            c = report["clients"][client]
            entry = c.get(fam) or {}
            got = shares(entry)
            expected = c.get("expected")
            expected = [expected] if isinstance(expected, str) else list(expected or [])
            for col, site in enumerate(sites):
                share = got.get(site, 0.0)
                face = palette.BLUE if share else "#FFFFFF"
                ax.add_patch(Rectangle((col, row), 1, 1, facecolor=face, alpha=max(share, 0.0)
                                       if share else 1.0, edgecolor=palette.GREY,
                                       linewidth=0.5, gid=f"cell:{fam}:{client}:{site}"))
                if site in expected:
                    ax.add_patch(Rectangle((col + 0.04, row + 0.04), 0.92, 0.92, fill=False,
                                           edgecolor=palette.BLACK, linewidth=2.2,
                                           linestyle="--", gid=f"expected:{fam}:{client}"
                                                               f":{site}"))
                if share:
                    rtt = entry.get("rtt_ms")
                    text = f"{share:.0%}" if share < 1 else "answers"
                    if rtt is not None and site == entry.get("site"):
                        text += f"\n{rtt:.1f} ms"
                    ax.text(col + 0.5, row + 0.5, text, ha="center", va="center",
                            fontsize=8, color="#FFFFFF" if share >= 0.5 else palette.BLACK)
            if not got:
                ax.text(len(sites) + 0.1, row + 0.5, "no answer", va="center", fontsize=8,
                        color=palette.VERMILLION, gid=f"unanswered:{fam}:{client}")
        ax.set_xlim(0, len(sites))
        ax.set_ylim(len(clients), 0)
        ax.set_xticks([i + 0.5 for i in range(len(sites))], sites, rotation=45 if len(
            sites) > 6 else 0, fontsize=8)
        ax.set_yticks([i + 0.5 for i in range(len(clients))], clients, fontsize=8)
        ax.set_title(f"{fam.replace('ip', 'IP')}: {report['anycast'][FAMILIES.index(fam)]}",
                     fontsize=10)
        ax.tick_params(length=0)
        ax.set_aspect("equal")
    fig.suptitle(f"catchment of lab '{report['lab']}': which site answers each client "
                 "(dashed border: expected)", fontsize=10)
    fig.tight_layout()
    return fig


def draw(report: dict[str, Any], sites: list[str], path: Path) -> Path:
    fig = figure(report, sites)
    fig.savefig(path, dpi=110, bbox_inches="tight",
                metadata={"Title": f"catchment of {report['lab']}",
                          "Description": "clients: " + ",".join(report["clients"])})
    plt.close(fig)
    return path
