"""Identity in `status`: per site the revocation version it holds, the age of its last
successful sync with the issuer, whether the keys it serves are the issuer's, and its
identity check; the issuer's own state (its process, whether it answers, its version).

Each site is asked `GET /identity` at its own unicast address from inside its own
namespace (a site cut off from the issuer still answers here), the issuer `GET /state`
from its router's namespace (`lab.observe.audit.issuer_facts`), all at once and bounded
by TIMEOUT_S. A certificate that does not verify (an expired one) is reported, and the
state is read past it. `summarise` (pure) turns the answers into the JSON `status` shows;
`cell` and `issuer_line` (pure) are its words for the table. Reading only.
"""

from __future__ import annotations

import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab.host import procs
from lab.host.labs import Lab
from lab.model.plan import NodePlan
from lab.render.credentials import SERVICE_NAME, paths
from lab.shared import https

TIMEOUT_S = 1.0
RUNNING, FROZEN, GONE = "running", "frozen", "gone"


def site_document(lab_dir: Path, site: NodePlan) -> tuple[dict[str, Any] | None, str | None]:
    """(the site's /identity document, what went wrong): None and the reason when the site
    does not answer; the document and the TLS problem when its certificate does not
    verify (read again without verifying, to still show its state)."""
    address = str(site.interfaces[0].v4.ip)
    ca = paths(lab_dir).ca_cert
    problem = None
    try:
        answer = https.request(address, 443, "GET", "/identity", ca_file=ca,
                               server_name=SERVICE_NAME, netns=site.netns, timeout_s=TIMEOUT_S)
    except ssl.SSLError as exc:
        problem = f"TLS: {getattr(exc, 'verify_message', None) or exc}"
        unverified = ssl.create_default_context()
        unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
        try:
            answer = https.request(address, 443, "GET", "/identity", ca_file=ca,
                                   server_name=SERVICE_NAME, netns=site.netns,
                                   timeout_s=TIMEOUT_S, context=unverified)
        except (OSError, ValueError) as again:
            return None, f"{problem}; then {again}"
    except (OSError, ValueError) as exc:
        return None, str(exc) or type(exc).__name__
    if answer.status != 200 or not isinstance(answer.body, dict):
        return None, f"/identity answered HTTP {answer.status}"
    return answer.body, problem


def summarise(doc: dict[str, Any] | None, error: str | None, issuer: dict[str, Any] | None,
              check: str | None, max_staleness_s: float) -> dict[str, Any]:
    """A site's identity entry in `status --json` (every key always present; None where
    unknown). `current`: it holds the issuer's revocation version; `keys_match`: the kids
    it serves are the issuer's (the issuer's own word when it answers, else what the site
    last received from it); `check`: its health daemon's identity check (None: the lab
    runs none, identity.coupling off)."""
    out: dict[str, Any] = {"version": None, "issuer_version": None, "current": None,
                           "sync_age_s": None, "ever_synced": None, "stale": None,
                           "keys_match": None, "keys_source": None, "check": check,
                           "sync_error": None, "error": error}
    reachable = bool(issuer and issuer.get("reachable"))
    if reachable and issuer is not None:
        out["issuer_version"] = issuer.get("version")
    if doc is None:
        return out
    rev = doc.get("revocation") if isinstance(doc.get("revocation"), dict) else {}
    version = rev.get("version")
    out["version"] = version if isinstance(version, int) else None
    if out["version"] is not None and out["issuer_version"] is not None:
        out["current"] = out["version"] == out["issuer_version"]
    if not doc.get("replicated"):
        return out
    age = rev.get("age_s")
    if isinstance(age, int | float) and not isinstance(age, bool):
        out["sync_age_s"] = round(float(age), 3)
        out["stale"] = age > max_staleness_s
    out["ever_synced"] = bool(rev.get("ever_synced"))
    kids = sorted(doc.get("kids") or [])
    reference = (issuer or {}).get("kids") if reachable else doc.get("issuer_kids")
    if reference is not None:
        out["keys_match"] = kids == sorted(reference)
    out["keys_source"] = doc.get("keys_source")
    sync = doc.get("sync") if isinstance(doc.get("sync"), dict) else {}
    out["sync_error"] = sync.get("last_error")
    return out


def issuer_entry(facts: dict[str, Any] | None, name: str, router: str | None,
                 process: str) -> dict[str, Any]:
    """The issuer in `status --json`: `up` when its process runs and it answers."""
    facts = facts or {}
    reachable = bool(facts.get("reachable"))
    return {"name": name, "router": router, "process": process, "reachable": reachable,
            "up": process == RUNNING and reachable,
            "version": facts.get("version") if reachable else None,
            "kids": facts.get("kids") if reachable else None,
            "error": facts.get("error")}


def _process(lab: Lab, daemon: str, node: str) -> str:
    record = procs.running(lab.journal, f"{daemon}@{node}")
    if record is None:
        return GONE
    return FROZEN if procs.is_stopped(record.pid) else RUNNING


def collect(lab: Lab, checks: dict[str, str | None],
            max_staleness_s: float) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """({site: its identity entry}, the issuer's entry) for a lab with an issuer; `checks`:
    each site's identity check state from its health daemon. ({}, None) without one."""
    from lab.observe.audit import issuer_facts

    plan = lab.plan
    assert plan is not None
    if plan.issuer is None:
        return {}, None
    sites = plan.by_role("site")
    lab_dir = lab.journal.dir
    with ThreadPoolExecutor(max_workers=min(8, len(sites) + 1)) as pool:
        jobs = {s.name: pool.submit(site_document, lab_dir, s) for s in sites}
        issuer_job = pool.submit(issuer_facts, plan, lab_dir)
        docs = {name: job.result() for name, job in jobs.items()}
        facts = issuer_job.result()
    issuer = issuer_entry(facts, plan.issuer.name, plan.issuer.router,
                          _process(lab, "issuer", plan.issuer.name))
    return {name: summarise(doc, error, facts, checks.get(name), max_staleness_s)
            for name, (doc, error) in docs.items()}, issuer


def cell(entry: dict[str, Any] | None) -> tuple[str, bool]:
    """(a site's identity in a few words, whether anything in it is wrong):
    'v3 0.2 s keys ok', 'v2 of v3 5.1 s stale keys ok', 'v3 0.3 s keys differ', 'no answer'."""
    if not entry:
        return "-", False
    if entry.get("version") is None:
        return "no answer", True
    words = [f"v{entry['version']}"]
    bad = False
    if entry.get("current") is False:
        words[0] += f" of v{entry['issuer_version']}"
        bad = True
    age = entry.get("sync_age_s")
    if age is not None:
        words.append(f"{age:.1f} s" if entry.get("ever_synced") else "never synced")
    if entry.get("stale"):
        words.append("stale")
        bad = True
    if entry.get("keys_match") is False:
        words.append("keys differ" + (" (override)" if entry.get("keys_source") == "override"
                                      else ""))
        bad = True
    elif entry.get("keys_match"):
        words.append("keys ok")
    if entry.get("error"):
        words.append("TLS fails" if str(entry["error"]).startswith("TLS") else "no answer")
        bad = True
    return " ".join(words), bad


def issuer_line(issuer: dict[str, Any]) -> tuple[str, bool]:
    """(the issuer in one line, whether it is down): 'issuer (on r-us): up, v3, 1 key'."""
    where = f" (on {issuer['router']})" if issuer.get("router") else ""
    if issuer.get("up"):
        kids = issuer.get("kids") or []
        return (f"{issuer['name']}{where}: up, revocations v{issuer.get('version')}, "
                f"{len(kids)} key{'s' if len(kids) != 1 else ''} "
                f"({', '.join(k[:8] for k in kids)})"), False
    why = f"process {issuer.get('process')}"
    if issuer.get("process") == RUNNING and not issuer.get("reachable"):
        why = f"running but not answering ({issuer.get('error') or 'no answer'})"
    return f"{issuer['name']}{where}: down, {why}", True
