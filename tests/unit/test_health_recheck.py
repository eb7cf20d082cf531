"""When a check runs next: its interval, its fast interval, or sooner when the probe knows
when its answer changes -- the identity check looks again just when the state it saw turns
stale (pure: no sockets, no daemon)."""

from __future__ import annotations

import pytest

from lab.sites.health.daemon import run_gap_s
from lab.sites.health.identity import RECHECK_MARGIN_S, stale_in_s


def state(age_s: float, ever_synced: bool = True) -> dict:
    return {"replicated": True, "revocation": {"age_s": age_s, "ever_synced": ever_synced}}


def test_a_fresh_state_is_looked_at_again_when_it_turns_stale() -> None:
    assert stale_in_s(state(0.4), 2.0) == pytest.approx(1.6 + RECHECK_MARGIN_S)
    assert stale_in_s(state(2.0), 2.0) == pytest.approx(RECHECK_MARGIN_S)


def test_a_stale_or_unknown_state_leaves_the_pace_to_the_check() -> None:
    assert stale_in_s(state(2.5), 2.0) is None
    assert stale_in_s(state(0.1, ever_synced=False), 2.0) is None
    assert stale_in_s({"replicated": True}, 2.0) is None


def test_the_gap_is_the_interval_or_the_fast_one_or_the_probes_recheck() -> None:
    assert run_gap_s(1.0, 0.1, fast=False, recheck_s=None) == 1.0
    assert run_gap_s(1.0, 0.1, fast=True, recheck_s=None) == 0.1
    assert run_gap_s(1.0, 0.1, fast=False, recheck_s=0.37) == 0.37  # sooner: it turns stale
    assert run_gap_s(1.0, 0.1, fast=False, recheck_s=5.0) == 1.0  # never later than the interval
    assert run_gap_s(1.0, 0.1, fast=False, recheck_s=0.001) == 0.1  # never below the fast pace
