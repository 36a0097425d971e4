"""The charts say what they show: a title, the baseline's spread, the gate's regressions
marked, and residency rows labelled by topic, partition and offset (not random names)."""

from __future__ import annotations

import pytest

from pytest_logbench.baselines import compare, parse_threshold
from pytest_logbench.plots import residency_figure, segment_label, throughput_figure
from pytest_logbench.results import ResidencySample, Result, Round

pytest.importorskip("matplotlib")


def _result(name: str, mb_per_s: list[float], **changes: object) -> Result:
    rounds = tuple(Round(bytes=int(v * 1e6), records=1, seconds=1.0) for v in mb_per_s)
    return Result(name=name, rounds=rounds, nodeid=f"test_x.py::{name}", **changes)


def test_the_throughput_chart_marks_regressions_and_shows_the_baselines_spread():
    steady = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8]
    baseline = {r.key: r for r in (_result("fast", steady), _result("slow", steady))}
    current = [_result("fast", steady), _result("slow", [v / 2 for v in steady])]
    changes = compare(current, baseline, [parse_threshold("throughput:10%")])
    assert [c.regressed for c in changes] == [False, True]

    axes = throughput_figure(current, baseline, changes).axes[0]

    assert "throughput of 2 results against the baseline, 1 regressed" in axes.get_title()
    ticks = axes.get_yticklabels()
    assert "REGRESSED" in ticks[1].get_text() and "REGRESSED" not in ticks[0].get_text()
    assert ticks[1].get_color() != ticks[0].get_color()
    [spread] = [c for c in axes.containers if c.get_label() == "baseline: median (IQR)"]
    assert spread.has_xerr


def test_residency_rows_are_labelled_by_topic_partition_and_offset():
    assert segment_label("test_replay-3f9c2a1b-0/00000000000000001024.log") == (
        "test_replay p0 @1024"
    )
    samples = tuple(
        ResidencySample(
            float(i),
            i,
            "ran",
            {
                "orders-0f0f0f0f-1/00000000000000000000.log": 1.0,
                "plain-0/00000000000000000000.log": 0.5,
            },
        )
        for i in range(2)
    )
    figure = residency_figure(_result("replay", [100.0, 90.0], residency=samples))
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels == ["orders p1 @0", "plain p0 @0"]
