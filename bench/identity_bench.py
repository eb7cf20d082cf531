"""Identity: revocation propagation from the issuer to every site (over >= 50 revocations,
at the default 500 ms sync interval), the exposure window of a revoked token with
identity coupling off and on (a stale site and a forced failover, 5 trials each), and the
time until a contained site is reached by no client.

    python -m bench.identity_bench
"""

from __future__ import annotations

from bench.common import save, show, stats, unique
from bench.lab_bench import topology
from lab.measure.contain import contain
from lab.measure.exposure import exposure
from lab.ops import faults, lifecycle, tokenstore

REVOCATIONS = 50
TRIALS = 5


def propagation(lab) -> dict:
    delays: list[float] = []
    for _ in range(REVOCATIONS):
        _token, claims = tokenstore.issue(lab.journal.dir, "lab-admin", "bench", 600, None,
                                          lab.plan)
        doc = tokenstore.revoke_via_issuer(lab.journal.dir, lab.plan, claims["jti"])
        delays += [ms for ms in doc["propagated_ms"].values() if ms is not None]
    return {"propagation_ms": stats(delays), "revocations": REVOCATIONS}


def main() -> None:
    results: dict = {}
    for coupling in (True, False):
        topo = topology("default", unique("bi"))
        topo = topo.model_copy(update={"identity": topo.identity.model_copy(
            update={"coupling": coupling})})
        lab = lifecycle.up(topo, lambda _m: None)
        try:
            if coupling:
                results.update(propagation(lab))
                c = contain(lab, "ams")
                results["contain_ms"] = c["unreached_after_ms"]
                faults.heal(lab, "ams")
            e = exposure(lab, "ams", TRIALS, 20.0, 4.0)
            results[f"exposure_coupling_{'on' if coupling else 'off'}_ms"] = \
                e["summary"]["exposure_ms"]
        finally:
            lifecycle.teardown(lab.journal)
    p = results["propagation_ms"]
    show("identity", ["what", "median", "p95", "max"], [
        [f"revocation propagation ms ({REVOCATIONS} revocations x 3 sites)", p["median"],
         p["p95"], p["max"]],
        *[[f"exposure window ms, coupling {k} ({TRIALS} trials, 4 s window)",
           results[f"exposure_coupling_{k}_ms"]["median"], "",
           results[f"exposure_coupling_{k}_ms"]["max"]] for k in ("on", "off")],
        ["contain: until no client reaches the site, ms", results["contain_ms"], "", ""]])
    save("identity", results)


if __name__ == "__main__":
    main()
