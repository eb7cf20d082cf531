"""Exporting a lab to containerlab: the same daemons with the same configs, as `kind: linux`
containers on one host, on several hosts joined by VXLAN, or on Kubernetes (clabernetes).

`model` is what an export is, `paths` where things live inside a node's container,
`commands` the shell commands a node runs (what the fabric and the launcher do here),
`hosts` which host runs which node, `plan` a topology -> an export (pure), `clab` an
export -> containerlab topology documents (pure), `write` the export on disk (the only
module that writes).
"""
