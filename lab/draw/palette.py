"""The colours every picture of the lab uses: the Okabe-Ito palette, which stays distinct
for the common forms of colour blindness. Colour is never the only cue: each state also
has a line style (and a word on the node), each marker a line style and a legend entry."""

from __future__ import annotations

BLACK = "#000000"
ORANGE = "#E69F00"
SKY_BLUE = "#56B4E9"
GREEN = "#009E73"  # Okabe-Ito's "bluish green"
YELLOW = "#F0E442"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"  # Okabe-Ito's "reddish purple"
GREY = "#999999"

# Sites in pictures and plots, in this order (then round again).
SITE_COLOURS = [BLUE, ORANGE, GREEN, PURPLE, SKY_BLUE, YELLOW, VERMILLION, BLACK]

# A site's state in the graph: fill, Graphviz border style, Mermaid stroke dash.
STATE_STYLE = {
    "announced": {"fill": GREEN, "style": "solid", "dash": None},
    "withdrawn": {"fill": VERMILLION, "style": "dashed", "dash": "6 3"},
    "drained": {"fill": YELLOW, "style": "dotted", "dash": "2 2"},
    "faulted": {"fill": PURPLE, "style": "bold", "dash": "8 2 2 2"},
    "unknown": {"fill": "#FFFFFF", "style": "solid", "dash": None},
}


def site_colours(sites: list[str]) -> dict[str, str]:
    """A colour for each site, stable for a given list."""
    return {site: SITE_COLOURS[i % len(SITE_COLOURS)] for i, site in enumerate(sites)}
