"""Generated topologies for scale tests and benchmarks: N routers in a ring, M sites.

Site i attaches to router i mod N; one client per router expects the first site on its
router (the lowest link address, hence the lowest BGP router id: BGP's tie-breaker).
Like the default lab, it has an issuer (on the first router) unless asked not to: every
site then runs what a site runs by default, the identity sync and its check included.
"""

from __future__ import annotations

from typing import Any


def generate_topology(name: str, sites: int, routers: int,
                      issuer: bool = True) -> dict[str, Any]:
    if routers < 1 or sites < 1:
        raise ValueError("need at least one router and one site")
    rnames = [f"r{i + 1}" for i in range(routers)]
    snames = [f"s{i + 1:02d}" for i in range(sites)]
    topo: dict[str, Any] = {
        "name": name,
        "description": f"generated: {sites} sites over {routers} routers in a ring",
        "routers": {r: {"asn": 65001 + i} for i, r in enumerate(rnames)},
        "sites": {s: {"router": rnames[i % routers], "asn": 65100}
                  for i, s in enumerate(snames)},
        "clients": {},
        "links": [],
    }
    if issuer:
        topo["issuer"] = {"router": rnames[0]}
    for i, r in enumerate(rnames):
        first = snames[i] if i < sites else None
        if first:
            topo["clients"][f"c{i + 1}"] = {"router": r, "expect": first}
    if routers == 2:
        topo["links"].append({"endpoints": [rnames[0], rnames[1]]})
    elif routers > 2:
        for i, r in enumerate(rnames):
            topo["links"].append({"endpoints": [r, rnames[(i + 1) % routers]]})
    return topo
