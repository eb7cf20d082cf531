"""Pictures of a lab: the topology graph (with a running lab's state), its DOT and Mermaid
text, rendering by Graphviz, the catchment matrix; and the palette every picture shares."""
