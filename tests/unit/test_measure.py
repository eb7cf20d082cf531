"""The failover analysis on synthetic probe samples (pure)."""

from lab.measure.trials import analyse, summarise
from probes.dns import Sample

RATE = 100  # queries/s: one sample every 10 ms


def samples(pattern: list[tuple[float, float, str | None]]) -> list[Sample]:
    """[(from_s, to_s, site)] -> samples every 10 ms with that site (None = lost)."""
    out = []
    for start, end, site in pattern:
        t = start
        while t < end - 1e-9:
            out.append(Sample(len(out), round(t, 4), 1.0 if site else None, site,
                              None if site else "timeout"))
            t += 1 / RATE
    return out


def test_clean_failover_with_lost_queries():
    s = samples([(0, 1.0, "ams"), (1.0, 1.3, None), (1.3, 3.0, "nyc"), (3.0, 4.0, "ams")])
    trial = analyse("c-eu", s, t_fault=1.0, t_heal=3.0)
    assert (trial.site_before, trial.site_after) == ("ams", "nyc")
    assert abs(trial.outage_ms - 300) < 1e-6
    assert trial.lost == 30
    assert trial.recovery_ms == 0.0


def test_move_without_loss_is_zero_outage():
    s = samples([(0, 1.05, "ams"), (1.05, 3.0, "nyc"), (3.0, 4.0, "ams")])
    trial = analyse("c-eu", s, t_fault=1.0, t_heal=3.0)
    assert trial.outage_ms == 0.0 and trial.lost == 0 and trial.site_after == "nyc"


def test_unaffected_client():
    s = samples([(0, 4.0, "sin")])
    trial = analyse("c-ap", s, t_fault=1.0, t_heal=3.0)
    assert trial.site_before == trial.site_after == "sin"
    assert trial.outage_ms == 0.0 and trial.lost == 0


def test_never_recovered_client():
    s = samples([(0, 1.0, "ams"), (1.0, 3.0, None), (3.0, 3.5, None), (3.5, 4.0, "ams")])
    trial = analyse("c-eu", s, t_fault=1.0, t_heal=3.0)
    assert trial.site_after is None and trial.outage_ms is None
    assert abs(trial.recovery_ms - 500) < 1e-6


def test_a_loss_just_before_the_heal_is_an_outage_that_ends_at_the_next_answer():
    # c-ap stays with sin throughout; its last two queries before the heal are lost, and
    # sin answers it again right after: it had settled, so it recovered (20 ms out).
    s = samples([(0, 2.98, "sin"), (2.98, 3.0, None), (3.0, 4.0, "sin")])
    trial = analyse("c-ap", s, t_fault=1.0, t_heal=3.0)
    assert trial.site_before == trial.site_after == "sin" and trial.lost == 2
    assert trial.outage_ms is not None and abs(trial.outage_ms - 20) < 1e-6
    summary = summarise([[trial]])
    assert summary["affected_client_trials"] == 1 and summary["never_recovered"] == 0


def test_losing_everything_after_a_few_answers_until_the_heal_is_never_recovered():
    # The fault took a moment to bite (two answers from ams after it), then nothing was
    # answered until the heal: the client never settled anywhere.
    s = samples([(0, 1.02, "ams"), (1.02, 3.0, None), (3.0, 4.0, "ams")])
    trial = analyse("c-eu", s, t_fault=1.0, t_heal=3.0)
    assert trial.site_after == "ams" and trial.outage_ms is None
    assert summarise([[trial]])["never_recovered"] == 1


def test_summary_counts_only_affected_clients():
    moved = analyse("a", samples([(0, 1, "x"), (1, 1.2, None), (1.2, 3, "y"), (3, 4, "x")]),
                    1.0, 3.0)
    still = analyse("b", samples([(0, 4, "z")]), 1.0, 3.0)
    summary = summarise([[moved, still], [moved, still]])
    assert summary["affected_client_trials"] == 2
    assert abs(summary["outage_ms"]["median"] - 200) < 1e-6
    assert summary["lost"]["max"] == 20
    assert summary["never_recovered"] == 0
