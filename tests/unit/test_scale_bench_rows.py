"""The growth curve's pure parts: a size measured several times becomes one row of
medians (every run kept), and `up`'s timed progress lines become phase durations."""

from __future__ import annotations

from bench.scale_bench import FIGURES, median_row, phase_times


def _run(up: float, cpu: float, load: float) -> dict:
    figures = dict.fromkeys(FIGURES, 1.0)
    return {**figures, "sites": 100, "launcher": True, "up_s": up,
            "idle_cpu_pct_per_site": cpu, "load_before": load}


def test_one_run_is_its_own_row() -> None:
    run = _run(20.0, 1.1, 0.5)
    assert median_row([run]) is run


def test_each_figure_is_the_median_of_its_runs_and_the_runs_are_kept() -> None:
    runs = [_run(24.3, 1.24, 2.3), _run(18.7, 1.30, 0.4), _run(22.0, 1.10, 1.0)]
    row = median_row(runs)
    assert row["up_s"] == 22.0 and row["idle_cpu_pct_per_site"] == 1.24
    assert row["sites"] == 100 and row["launcher"] is True
    assert [r["up_s"] for r in row["runs"]] == [24.3, 18.7, 22.0]
    assert [r["load_before"] for r in row["runs"]] == [2.3, 0.4, 1.0]
    assert "runs" not in runs[0]  # the runs themselves are not changed


def test_two_runs_give_their_mean() -> None:
    assert median_row([_run(20.0, 1.0, 0), _run(30.0, 2.0, 0)])["up_s"] == 25.0


def test_phases_run_from_one_line_to_the_next() -> None:
    lines = [(0.5, "fabric: 3 namespaces, addresses and routes"), (0.6, "routers started"),
             (2.0, "daemons started"), (2.5, "converged in 0.4 s")]
    assert phase_times(lines) == {"fabric": 0.5, "routers": 0.1, "start": 1.4,
                                  "converge": 0.5}
