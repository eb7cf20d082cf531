"""A topology graph (`lab.draw.graph.Graph`) as DOT (for Graphviz: SVG, PNG) and as Mermaid
(renders on GitHub). Pure text; `lab.draw.render` turns DOT into pictures.

Roles by shape: routers are boxes, sites hexagons, clients ellipses, the token issuer a
cylinder (it holds the keys and the revocation list). A site's state is its
fill colour, its border style and a word under its name, so colour is never the only cue.
Links carrying a best path to the anycast prefixes are thick blue arrows pointing where
the path goes (labelled with the families); a client's answering site is a dashed arrow
(labelled with the families, and their shares under ECMP)."""

from __future__ import annotations

from lab.draw import palette
from lab.draw.graph import Edge, Graph, Node

ROLE_SHAPE = {"router": "box", "site": "hexagon", "client": "ellipse", "issuer": "cylinder"}
ROLE_FILL = {"router": palette.SKY_BLUE, "site": "#FFFFFF", "client": "#FFFFFF",
             "issuer": palette.YELLOW}
RANKS = ("client", "router", "site", "issuer")  # top to bottom


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(node: Node) -> str:
    lines = [node.name]
    if node.asn is not None:
        lines.append(f"AS{node.asn}")
    if node.state and node.state != "unknown":
        if not node.detail:
            lines.append(node.state)
        elif node.state == "faulted":
            lines.append(f"faulted: {node.detail}")
        else:
            lines.append(f"{node.state} ({node.detail})")
    return "\n".join(lines)


def _node_attrs(node: Node) -> dict[str, str]:
    attrs = {"label": _label(node), "shape": ROLE_SHAPE[node.role],
             "style": "filled", "fillcolor": ROLE_FILL[node.role]}
    if node.role == "site" and node.state:
        style = palette.STATE_STYLE[node.state]
        attrs["fillcolor"] = style["fill"]
        attrs["style"] = f"filled,{style['style']}"
        if node.state == "faulted":
            attrs["peripheries"] = "2"
        if node.state in ("withdrawn", "faulted"):
            attrs["fontcolor"] = "#FFFFFF" if node.state == "withdrawn" else palette.BLACK
    return attrs


def _edge_attrs(edge: Edge) -> dict[str, str]:
    if edge.kind == "answer":
        return {"label": edge.label, "style": "dashed", "color": palette.VERMILLION,
                "fontcolor": palette.VERMILLION, "constraint": "false", "arrowhead": "vee",
                "tailport": "s", "headport": "n"}
    attrs = {"dir": "none", "color": palette.BLACK if edge.link == "core" else palette.GREY}
    label = edge.label
    if edge.best:
        attrs.update({"dir": "forward", "penwidth": "3", "color": palette.BLUE,
                      "arrowhead": "normal"})
        label = " ".join([label, "best " + "+".join(f.replace("ip", "") for f in edge.best)]
                         ).strip()
    if label:
        attrs["label"] = label
    return attrs


def _attrs(attrs: dict[str, str]) -> str:
    return ", ".join(f"{k}={_q(v)}" for k, v in attrs.items())


def to_dot(graph: Graph) -> str:
    """The graph as a Graphviz digraph (clients on top, routers, sites below)."""
    state = "live state" if graph.live else "topology"
    title = f"lab {graph.lab}: {state}, anycast " + ", ".join(graph.anycast)
    lines = [f"digraph {_q(graph.lab)} {{",
             f"  graph [label={_q(title)}, "
             'labelloc="t", fontname="Helvetica", rankdir="TB", nodesep="0.5", ranksep="0.8"];',
             '  node [fontname="Helvetica", fontsize="11"];',
             '  edge [fontname="Helvetica", fontsize="9"];']
    for role in RANKS:
        members = [n for n in graph.nodes if n.role == role]
        if not members:
            continue
        lines.append("  { rank=same;")
        lines += [f"    {_q(n.name)} [{_attrs(_node_attrs(n))}];" for n in members]
        lines.append("  }")
    for edge in graph.edges:
        a, b = edge.a, edge.b
        if edge.kind == "link" and edge.best and edge.towards == a:
            a, b = b, a  # the arrow points where the best path goes
        elif edge.link == "client":
            a, b = b, a  # clients above their routers
        lines.append(f"  {_q(a)} -> {_q(b)} [{_attrs(_edge_attrs(edge))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mid(name: str) -> str:
    """A Mermaid node id: names hold '-', which Mermaid's link syntax could misread."""
    return "n_" + name.replace("-", "_")


def _mtext(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


MERMAID_SHAPE = {"router": ('["', '"]'), "site": ('{{"', '"}}'), "client": ('(["', '"])'),
                 "issuer": ('[("', '")]')}


def to_mermaid(graph: Graph) -> str:
    """The graph as a Mermaid flowchart: the same shapes, state classes (fill and dash)
    and arrows as the DOT picture."""
    lines = ["flowchart TB"]
    for node in graph.nodes:
        left, right = MERMAID_SHAPE[node.role]
        cls = f":::{node.state}" if node.role == "site" and node.state else f":::{node.role}"
        lines.append(f"  {_mid(node.name)}{left}{_mtext(_label(node))}{right}{cls}")
    styles = []
    for index, edge in enumerate(graph.edges):
        a, b = edge.a, edge.b
        if edge.kind == "answer":
            arrow = f"-. {_mtext(edge.label)} .->" if edge.label else "-.->"
            styles.append(f"  linkStyle {index} stroke:{palette.VERMILLION}")
        elif edge.best:
            if edge.towards == a:
                a, b = b, a
            text = " ".join([edge.label, "best " + "+".join(
                f.replace("ip", "") for f in edge.best)]).strip()
            arrow = f"== {_mtext(text)} ==>"
            styles.append(f"  linkStyle {index} stroke:{palette.BLUE},stroke-width:3px")
        else:
            arrow = f"---|{_mtext(edge.label)}|" if edge.label else "---"
        lines.append(f"  {_mid(a)} {arrow} {_mid(b)}")
    lines.append(f"  classDef router fill:{palette.SKY_BLUE},stroke:{palette.BLACK}")
    lines.append(f"  classDef client fill:#FFFFFF,stroke:{palette.BLACK}")
    lines.append(f"  classDef site fill:#FFFFFF,stroke:{palette.BLACK}")
    lines.append(f"  classDef issuer fill:{palette.YELLOW},stroke:{palette.BLACK}")
    for state, style in palette.STATE_STYLE.items():
        dash = f",stroke-dasharray:{style['dash']}" if style["dash"] else ""
        width = ",stroke-width:3px" if state == "faulted" else ""
        colour = ",color:#FFFFFF" if state == "withdrawn" else ""
        lines.append(f"  classDef {state} fill:{style['fill']},stroke:{palette.BLACK}"
                     f"{dash}{width}{colour}")
    return "\n".join(lines + styles) + "\n"
