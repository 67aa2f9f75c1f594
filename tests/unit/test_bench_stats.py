"""The benchmark's statistics: ratios from alternating pairs, medians with their spread."""

from __future__ import annotations

from bench.common import Runs, alternate, bracketed, ratio_runs, repeat
from bench.compare import Compared


def test_alternate_brackets_each_product_run_between_two_ceiling_runs() -> None:
    calls: list[str] = []

    def ceiling(i: int) -> float:
        calls.append(f"c{i}")
        return [100.0, 100.0, 400.0, 400.0][i]  # the host's speed shifts between runs

    def product(i: int) -> float:
        calls.append(f"p{i}")
        return [50.0, 100.0, 200.0][i]

    pairs = alternate(3, ceiling, product)
    assert calls == ["c0", "p0", "c1", "p1", "c2", "p2", "c3"]
    # p1 ran while the speed shifted: its ceiling is the geometric mean of 100 and 400
    assert pairs.ratios.values == (0.5, 0.5, 0.5)
    assert (pairs.ratios.low, pairs.ratios.median, pairs.ratios.high) == (0.5, 0.5, 0.5)
    assert len(pairs.ceiling.values) == 4 and pairs.product.median == 100.0


def test_a_custom_ratio_divides_the_ceiling_by_the_product_for_costs() -> None:
    steps: list[int] = []
    pairs = alternate(2, lambda i: 4.0, lambda i: 2.0, ratio=lambda c, p: c / p,
                      step=lambda: steps.append(1))
    assert pairs.ratios.values == (2.0, 2.0)
    assert len(steps) == 5  # every run counts in the progress line


def test_a_second_measure_of_the_same_runs_is_bracketed_alike() -> None:
    # CPU seconds taken next to the wall times of alternate's runs: ceilings 2, 8, 8
    assert bracketed([2.0, 8.0, 8.0], [8.0, 4.0]).values == (2.0, 0.5)


def test_repeat_counts_each_run_and_reports_median_and_spread_in_the_figure() -> None:
    done: list[int] = []
    runs = repeat(3, lambda i: [30.0, 10.0, 20.0][i], lambda: done.append(1))
    assert len(done) == 3
    fig = runs.figure("latency", "ms", "<= 25 ms", lambda v: v <= 25, "d")
    assert (fig.value, fig.low, fig.high, fig.runs, fig.met) == (20.0, 10.0, 30.0, 3, True)
    assert fig.spread == "10.0–30.0"
    assert runs.text("{:.0f}") == "20 (10–30 of 3)"


def test_a_single_run_has_no_spread() -> None:
    runs = Runs((7.0,))
    assert runs.text("{:.0f}") == "7"
    fig = runs.figure("x", "s", "-", None, "")
    assert fig.runs == 1 and fig.met is None and fig.spread == ""


def test_ratio_runs_pairs_two_series_run_by_run() -> None:
    assert ratio_runs([10.0, 30.0], [5.0, 10.0]).values == (2.0, 3.0)


def test_compare_calls_a_rate_better_only_when_every_round_is_more_than_5_percent_up() -> None:
    assert Compared("a", "changes/s", 1, 1, (1.10, 1.08, 1.2)).verdict() == "better"
    assert Compared("a", "changes/s", 1, 1, (1.10, 0.99, 1.2)).verdict() == "same"
    assert Compared("a", "changes/s", 1, 1, (0.8, 0.9, 0.7)).verdict() == "worse"


def test_compare_calls_a_cost_worse_when_every_round_takes_longer() -> None:
    assert Compared("a", "s", 1, 1, (1.2, 1.3, 1.1)).verdict() == "worse"
    assert Compared("a", "ms", 1, 1, (0.5, 0.6, 0.7)).verdict() == "better"
    assert Compared("a", "x", 1, 1, (0.5, 0.6, 0.7)).verdict() == "–"
