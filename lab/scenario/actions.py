"""Doing a step's action on a running lab, through lab.ops (the caller holds the lab's
lock). Each action returns one sentence; a failure raises LabError (a heal whose daemon
did not come back, an exec that did not exit 0)."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.host.labs import Lab
from lab.host.procs import run_in
from lab.model.errors import LabError
from lab.model.topology import Impairment
from lab.ops import drain, faults, impair, reset, revocations, tokenstore
from lab.render.credentials import paths
from lab.scenario import model as m


@dataclass
class Tokens:
    """The tokens a scenario issued, by the names its steps give them, kept in a private
    directory for the introspection probe (removed when the run ends)."""

    files: dict[str, Path] = field(default_factory=dict)
    jtis: dict[str, str] = field(default_factory=dict)
    directory: Path | None = None

    def add(self, name: str, token: str, jti: str) -> None:
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="anycast-lab-scenario-"))
        path = self.directory / f"{name}.jwt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        self.files[name], self.jtis[name] = path, jti

    def file(self, lab: Lab, name: str) -> Path:
        p = paths(lab.journal.dir)
        if name == "canary-active":
            return p.canary_active
        if name == "canary-revoked":
            return p.canary_revoked
        return self.files[name]

    def close(self) -> None:
        if self.directory is not None:
            for path in self.files.values():
                path.unlink(missing_ok=True)
            self.directory.rmdir()
            self.directory = None


def perform(lab: Lab, action: m.Action, tokens: Tokens) -> tuple[str, dict[str, Any]]:
    """Do one action; returns (one sentence, the details for --json)."""
    verb, args = action.verb, action.args
    if verb == "fail":
        entry = faults.inject(lab, args[0], args[1])
        return f"{args[0]}: {faults.REGISTRY[args[1]].description}", {"fault": entry}
    if verb == "heal":
        healed = faults.heal(lab, args[0], args[1] if len(args) > 1 else None)
        failed = [h for h in healed if not h["ready"]]
        if failed:
            raise LabError(f"heal {args[0]}: {failed[0]['detail']}")
        done = ", ".join(h["fault"] for h in healed) or "nothing to heal"
        return f"{args[0]}: healed {done}", {"healed": [h["fault"] for h in healed]}
    if verb in ("drain", "undrain"):
        changed = drain.drain(lab, args[0]) if verb == "drain" else drain.undrain(lab, args[0])
        return f"{args[0]}: {verb}ed" + ("" if changed else " already"), {"changed": changed}
    if verb == "issue":
        token, claims = tokenstore.issue(lab.journal.dir, "lab-admin", "dns:read", 3600,
                                         sub=f"scenario-{args[0]}")
        tokens.add(args[0], token, claims["jti"])
        return f"issued token {args[0]} ({claims['jti']})", {"jti": claims["jti"]}
    if verb == "revoke":
        assert lab.plan is not None
        jti = tokens.jtis.get(args[0])
        if jti is None:  # a canary
            from lab.render.credentials import canaries

            jti = canaries(lab.journal.dir)["revoked_jti" if args[0] == "canary-revoked"
                                            else "active_jti"]
        if lab.plan.issuer is not None:
            doc = tokenstore.revoke_via_issuer(lab.journal.dir, lab.plan, jti)
            return tokenstore.issuer_revoke_text(args[0], doc), {
                "versions": doc["versions"], "issuer_version": doc["version"],
                "propagated_ms": doc["propagated_ms"]}
        versions, already = tokenstore.revoke_sites(lab.journal.dir, lab.plan, jti)
        return tokenstore.revoke_text(args[0], versions, already), {"versions": versions}
    if verb == "forget-revocations":
        version = revocations.forget(lab, args[0])
        return f"{args[0]}: revocation list replaced by an empty one (version {version})", \
            {"version": version}
    if verb == "exec":
        return _exec(lab, args[0], list(args[1:]))
    if verb == "impair":
        return _impair(lab, args)
    if verb == "wait":
        seconds = m.duration_s(args[0])
        time.sleep(seconds)  # the action itself: let time pass (a hold timer, a lesson)
        return f"waited {args[0]}", {"seconds": seconds}
    if verb == "reset":
        report = reset.reset(lab)
        if not report["ok"]:
            raise LabError(f"reset: the lab did not return to normal within "
                           f"{reset.RESET_TIMEOUT_S:g} s: {report['problems'][0]}",
                           details=report["problems"][1:])
        return f"reset in {report['elapsed_s']:.2f} s", report
    raise LabError(f"unknown action '{verb}'")


def _exec(lab: Lab, node: str, argv: list[str]) -> tuple[str, dict[str, Any]]:
    assert lab.plan is not None
    netns = lab.plan.nodes[node].netns
    try:
        result = run_in(netns, argv, timeout=m.MAX_EXEC_S)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"exec {node}: {shlex.join(argv)} did not finish within "
                       f"{m.MAX_EXEC_S:g} s") from exc
    except FileNotFoundError as exc:
        raise LabError(f"exec {node}: command '{argv[0]}' not found") from exc
    out = (result.stdout or "").strip()
    details = {"exit_code": result.returncode, "stdout": out[-2000:],
               "stderr": (result.stderr or "").strip()[-2000:]}
    if result.returncode != 0:
        last = (result.stderr or result.stdout or "").strip().splitlines()
        raise LabError(f"exec {node}: {shlex.join(argv)} exited {result.returncode}"
                       + (f": {last[-1]}" if last else ""))
    shown = out.splitlines()[-1] if out else "no output"
    return f"{node}: {shlex.join(argv)}: {shown}", details


def _impair(lab: Lab, args: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    target, asked = m.impair_request(args)
    if asked is None:
        removed = impair.clear(lab, target)
        return f"{target}: run-time impairment " + ("cleared" if removed else "was none"), \
            {"cleared": removed is not None}
    record = impair.impair(lab, target, Impairment(**asked))
    parts = [f"{k} {record[k]}{'%' if k == 'loss' else ''}" for k in ("loss", "rate", "delay")
             if record.get(k)]
    how = ", ".join(f"{k} by {v}" for k, v in record["mechanisms"].items())
    return f"{record['link']}: {', '.join(parts)} on both ends ({how})", {"impairment": record}
