"""Running a scenario on a running lab: reset, then each step's action and the polling
of its expectations (lab.shared.wait.wait_until: the real condition, asked again until
it holds or the step's `within` passes), then reset again.

Background probers run from every client for the whole run (DNS by default; HTTPS and
long-lived TCP as the scenario's probe.kinds say: lab.scenario.probing, each bounded by
time), so a step can bound what clients saw: outage, lost queries, time to settle,
broken connections, the share lost. The caller holds the lab's lock; the report is the
`--json` shape."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.host.labs import Lab
from lab.model.errors import EnvironmentProblem, LabError
from lab.ops import reset
from lab.scenario import model as m
from lab.scenario.actions import Tokens, perform
from lab.scenario.evaluate import Observation, Verdict, judge
from lab.scenario.observe import observe
from lab.scenario.probing import Probes, make_probes
from lab.shared.wait import wait_until

POLL_S = 0.2
MAX_RUN_S = 3600.0  # the prober's own bound: no scenario runs longer
WARM_UP_S = 0.3  # every client's prober has this long of answers before the first step
WARM_UP_TIMEOUT_S = 5.0


@dataclass
class Hooks:
    """What the CLI shows while a scenario runs: before each step (and, with --pause,
    waits there), and after it."""

    before: Callable[[int, m.Step], None] = lambda _i, _s: None
    after: Callable[[dict[str, Any]], None] = lambda _r: None
    note: Callable[[str], None] = lambda _msg: None
    pauses: bool = False  # `before` waits for a person: the run has no bound of its own


def run_bound_s(scenario: m.Scenario) -> float:
    """The longest the run can take (the prober stops by itself after it)."""
    steps = sum(s.within_s + m.MAX_EXEC_S for s in scenario.steps)
    waits = sum(m.duration_s(s.action.args[0]) for s in scenario.steps
                if s.action is not None and s.action.verb == "wait")
    resets = (2 + sum(1 for s in scenario.steps
                      if s.action is not None and s.action.verb == "reset")) \
        * reset.RESET_TIMEOUT_S
    return min(MAX_RUN_S, steps + waits + resets + 60)


def run(lab: Lab, scenario: m.Scenario, hooks: Hooks | None = None) -> dict[str, Any]:
    """Run every step; the report says per step the action, each expectation with what was
    observed, ok or not, and how long it took."""
    assert lab.plan is not None
    hooks = hooks or Hooks()
    started = time.monotonic()
    report: dict[str, Any] = {"scenario": scenario.name, "title": scenario.title,
                              "lab": lab.name, "steps": []}
    tokens = Tokens()
    bound = MAX_RUN_S if hooks.pauses else run_bound_s(scenario)
    probes = make_probes(lab, scenario.probe, bound)
    running: list[Any] = []
    try:
        if scenario.reset:
            hooks.note("resetting the lab")
            report["reset_before"] = _reset(lab)
        for kind, by_client in probes.by_kind.items():
            warm = max(3, round(probes.rates[kind] * WARM_UP_S))
            for probe in by_client.values():
                running.append((probe.start(), warm))
        wait_until(lambda: all(sum(1 for x in p.samples if x.site) >= warm
                               for p, warm in running), WARM_UP_TIMEOUT_S, POLL_S)
        stop = False
        for index, step in enumerate(scenario.steps):
            if stop:
                report["steps"].append(_skipped(index, step))
                continue
            hooks.before(index, step)
            result = run_step(lab, scenario, index, step, probes, tokens)
            report["steps"].append(result)
            hooks.after(result)
            halt = step.stop_on_error if step.stop_on_error is not None \
                else scenario.stop_on_error
            stop = not result["ok"] and halt
    finally:
        for probe, _warm in running:
            probe.stop()
        tokens.close()
    after_ok = True
    if scenario.reset:
        hooks.note("resetting the lab")
        after = reset.reset(lab)
        after_ok = after["ok"]
        report["reset_after"] = {"ok": after_ok, "elapsed_s": after["elapsed_s"],
                                 "problems": after.get("problems", [])}
        if not after_ok:  # the steps' results stand; the run still fails
            hooks.note(f"the lab did not return to normal: {after['problems'][0]}")
    report["ok"] = after_ok and all(s["ok"] for s in report["steps"])
    report["passed"] = sum(1 for s in report["steps"] if s["ok"])
    report["failed"] = sum(1 for s in report["steps"] if not s["ok"] and not s.get("skipped"))
    report["skipped"] = sum(1 for s in report["steps"] if s.get("skipped"))
    report["elapsed_s"] = round(time.monotonic() - started, 3)
    counts = probes.counts()
    report["probe"] = {"rate_hz": scenario.probe.rate_hz, "queries": counts.get("dns", {}),
                       "kinds": list(scenario.probe.kinds), "by_kind": counts}
    return report


def _reset(lab: Lab) -> dict[str, Any]:
    """Reset before the first step: a lab that does not return to normal cannot run the
    scenario (LabError, exit 1)."""
    result = reset.reset(lab)
    if not result["ok"]:
        raise LabError(f"lab '{lab.name}' did not return to its normal state within "
                       f"{reset.RESET_TIMEOUT_S:g} s: {result['problems'][0]}",
                       details=result["problems"][1:])
    return {"elapsed_s": result["elapsed_s"]}


def _skipped(index: int, step: m.Step) -> dict[str, Any]:
    return {"index": index + 1, "name": step.name, "do": step.do, "ok": False,
            "skipped": True, "expect": [], "elapsed_s": 0.0, "explain": step.explain}


def run_step(lab: Lab, scenario: m.Scenario, index: int, step: m.Step,
             probes: Probes, tokens: Tokens) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {"index": index + 1, "name": step.name, "do": step.do,
                              "explain": step.explain}
    samples = probes.samples()
    base = Observation(samples=samples.get("dns", {}), t_action=started,
                       rate_hz=scenario.probe.rate_hz, by_kind=samples,
                       rates=dict(probes.rates), breaks=probes.breaks())
    if step.action is not None:
        try:
            said, details = perform(lab, step.action, tokens)
            result["action"] = {"ok": True, "said": said, "details": details}
        except EnvironmentProblem:
            raise  # not the lab's behaviour: this machine cannot do the action (exit 3)
        except LabError as exc:
            result["action"] = {"ok": False, "said": exc.message, "details": exc.details}
            result.update(ok=False, expect=[], timed_out=False,
                          elapsed_s=round(time.monotonic() - started, 3),
                          message=f"step {index + 1} '{step.name}': the action failed: "
                                  f"{exc.message}")
            return result
    verdicts: list[Verdict] = []
    held = {"final": False}

    def holds() -> bool:
        obs = observe(lab, list(step.expect), tokens, base)
        ok, final, found = judge(list(step.expect), obs)
        verdicts[:] = found
        held["final"] = final
        return ok

    ok = True
    if step.expect:
        poll_started = time.monotonic()
        left = max(0.0, step.within_s - (poll_started - started))
        ok = bool(wait_until(holds, left, POLL_S, stop=lambda _v: held["final"]))
    elapsed = round(time.monotonic() - started, 3)
    result.update(ok=ok, expect=[v.to_json() for v in verdicts],
                  timed_out=not ok and not held["final"], elapsed_s=elapsed)
    if not ok:
        wrong = next(v for v in verdicts if not v.ok)
        when = f"not within {step.within}" if result["timed_out"] else "and waiting more " \
            "cannot change it"
        result["message"] = (f"step {index + 1} '{step.name}': expected {wrong.expected}; "
                             f"observed {wrong.observed} ({when})")
    return result
