"""tools/benchkit/model.py: the verdicts of tools/bench.py's table, judged exactly (pure arithmetic)."""

from __future__ import annotations

import pytest

from tools.benchkit.model import Figure, Target, summarize


def test_ratio_max_met_missed_and_aim() -> None:
    target = Target(kind="ratio_max", limit=0.7, aim=0.5)
    assert target.judge(2.0, 5.0, "ms").text == "met"
    assert target.judge(3.0, 5.0, "ms").text == "met (aim missed by 0.10x)"
    missed = target.judge(29.5, 5.0, "ms")
    assert missed.met is False and missed.text == "missed by 5.20x"


def test_ratio_min_and_plus_max() -> None:
    assert Target(kind="ratio_min", limit=0.5).judge(70.0, 539.0, "calls/s").text == "missed by 0.37x"
    assert Target(kind="ratio_min", limit=0.5).judge(300.0, 539.0, "calls/s").met is True
    assert Target(kind="plus_max", limit=3.0).judge(7.9, 5.0, "ms").met is True
    assert Target(kind="plus_max", limit=3.0).judge(30.0, 5.0, "ms").text == "missed by 22.0 ms"


def test_no_baseline_is_not_judged() -> None:
    figure = Figure(name="spawn", title="t", unit="ms", value=3.0, target=Target(kind="ratio_max", limit=0.7))
    assert figure.ratio is None
    verdict = figure.verdict
    assert verdict is not None and verdict.met is None and verdict.text == "not judged: no baseline"
    data = figure.to_json()
    assert data["met"] is None and data["ratio"] is None and data["target_text"] == "<= 0.70x"


def test_summary_uses_nearest_rank_percentiles() -> None:
    series = summarize([float(x) for x in range(1, 101)], "ms")
    assert (series.median, series.p10, series.p90, series.p99, series.min, series.max) == (50.5, 10, 90, 99, 1, 100)
    assert summarize([4.0], "ms").p99 == 4.0
    with pytest.raises(ValueError, match="no samples"):
        summarize([], "ms")
