"""Every site's revocation list against the lab's truth: what is revoked anywhere in the
lab, and the revoked canary always, at one version on every site.

`forget` makes one site's list stale on purpose (an empty list at a newer version, as a
broken replication would deliver; the service takes it, since the version moved
forward), so its health daemon sees the revoked canary answered active and withdraws the
site. `restore` puts every list back: the union of every site's revocations and the
canary, written at one version above the highest, on the sites whose list differs.

With an issuer, the issuer's list is the truth, and both the replicas and the service
refuse a list whose version goes back: `restore` writes the issuer's own list (and the
canary) at one version above every version in the lab, and waits (bounded) until every
site's replica holds it."""

from __future__ import annotations

import time
from pathlib import Path

from lab.host.labs import Lab
from lab.model.names import node_dir
from lab.model.plan import require_site
from lab.render.credentials import canaries
from lab.render.introspect import revocation_path
from lab.shared import revocation
from lab.shared.atomic import write_json_atomic
from lab.shared.wait import wait_until


def _path(lab: Lab, site: str) -> Path:
    return revocation_path(node_dir(lab.journal.dir, site))


def lists(lab: Lab) -> dict[str, tuple[int, dict[str, float]]]:
    """Each site's list as its file says: (version, {jti: revoked_at}); an unreadable
    list counts as version 0 and empty (restore rewrites it)."""
    assert lab.plan is not None
    out = {}
    for site in lab.plan.by_role("site"):
        try:
            out[site.name] = revocation.read_revocations(_path(lab, site.name))
        except ValueError:
            out[site.name] = (0, {})
    return out


def _write(path: Path, version: int, revoked: dict[str, float]) -> None:
    write_json_atomic(path, {"version": version, "revoked": revoked}, 0o644, indent=None,
                      durable=True)


def forget(lab: Lab, site: str) -> int:
    """Replace a site's list by an empty one at the next version; returns that version."""
    assert lab.plan is not None
    require_site(lab.plan, site)
    version, _ = lists(lab)[site]
    _write(_path(lab, site), version + 1, {})
    return version + 1


def restore(lab: Lab) -> dict[str, int]:
    """Every site's list to the truth, at one version; returns each site's version
    afterwards (equal on every site). A lab whose lists already agree is left alone."""
    assert lab.plan is not None
    if lab.plan.issuer is not None:
        return _restore_from_issuer(lab)
    found = lists(lab)
    truth: dict[str, float] = {}
    for _, revoked in found.values():
        for jti, at in revoked.items():
            truth[jti] = min(at, truth.get(jti, at))
    canary = canaries(lab.journal.dir)["revoked_jti"]
    truth.setdefault(canary, int(time.time()))
    versions = {v for v, _ in found.values()}
    if len(versions) == 1 and all(set(r) == set(truth) for _, r in found.values()):
        return {site: v for site, (v, _) in found.items()}
    target = max(versions) + 1
    for site in found:
        _write(_path(lab, site), target, dict(truth))
    return dict.fromkeys(found, target)


ISSUER_SYNC_WAIT_S = 10.0


def _restore_from_issuer(lab: Lab) -> dict[str, int]:
    assert lab.plan is not None and lab.plan.issuer is not None
    issuer_path = revocation_path(node_dir(lab.journal.dir, lab.plan.issuer.name))
    version, truth = revocation.read_revocations(issuer_path)
    found = lists(lab)
    canary = canaries(lab.journal.dir)["revoked_jti"]
    if (canary in truth and all(v == version and set(r) == set(truth)
                                for v, r in found.values())):
        return {site: v for site, (v, _) in found.items()}
    truth = {**truth, canary: truth.get(canary, int(time.time()))}
    target = max([version, *(v for v, _ in found.values())]) + 1
    _write(issuer_path, target, truth)  # the issuer's service takes it: the version moved on

    def synced() -> bool:
        return all(v == target for v, _ in lists(lab).values())

    wait_until(synced, ISSUER_SYNC_WAIT_S, 0.05)
    return {site: v for site, (v, _) in lists(lab).items()}
