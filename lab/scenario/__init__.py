"""Scenarios: a narrative, real faults and checked expectations on a running lab.

`model` (what a scenario file may say), `load` (reading one, every problem at once),
`evaluate` (pure verdicts over observations), `observe` and `actions` (the side effects,
through lab.observe and lab.ops), `runner` (a run, step by step), `junit` (the report CI
systems read), `catalog` (the shipped scenarios)."""
