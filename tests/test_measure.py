"""measure.py: units, statistics on synthetic rounds, the meter's round structure, and one
measurement of a real broker (behaviour only: no speed is asserted)."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from pytest_logbench.client import Transfer
from pytest_logbench.measure import Budget, Meter
from pytest_logbench.results import NotInterleaved, Result, Round, paired_ratios
from pytest_logbench.stats import (
    InsufficientRounds,
    Rate,
    _mann_whitney_counts,
    median_lower_bound,
    parse_rate,
    parse_size,
    ratio_bounds,
    sign_test_rank,
    summarize,
)
from pytest_logbench.syscalls import tracer_support
from pytest_logbench.workloads import FetchWorkload, ProduceWorkload

# --- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("64 MiB", 64 << 20),
        ("64MiB", 64 << 20),
        ("1.5 GB", 1_500_000_000),
        ("2 kb", 2000),
        ("3 KiB", 3072),
        ("1 gib", 1 << 30),
        ("10 B", 10),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "MiB", "12 parsecs", "-3 MiB", "1.2.3 MB", -1])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200 MB/s", Rate(2e8, "bytes")),
        ("200MB/s", Rate(2e8, "bytes")),
        ("1.5 GiB/s", Rate(1.5 * 2**30, "bytes")),
        ("50k records/s", Rate(5e4, "records")),
        ("1200 records / s", Rate(1200, "records")),
        ("2M records/s", Rate(2e6, "records")),
        ("1e3 kB/s", Rate(1e6, "bytes")),
    ],
)
def test_parse_rate(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("bad", ["200 MB", "fast", "200 Mbit/s", "3 kilorecords/s", "/s"])
def test_parse_rate_rejects_with_an_example(bad):
    with pytest.raises(ValueError, match=r"expected e\.g\. '200 MB/s'"):
        parse_rate(bad)


def test_rate_prints_in_report_units():
    assert str(parse_rate("1.5 GB/s")) == "1,500 MB/s"
    assert str(parse_rate("50k records/s")) == "50,000 records/s"


# --- statistics ------------------------------------------------------------------------------


def test_summarize_quartiles_and_spread():
    s = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s.n, s.median, s.min, s.max, s.mean) == (5, 3.0, 1.0, 5.0, 3.0)
    assert (s.q1, s.q3, s.iqr) == (2.0, 4.0, 2.0)
    assert s.stdev == pytest.approx(statistics.stdev([1, 2, 3, 4, 5]))
    one = summarize([7.0])
    assert (one.median, one.iqr, one.stdev) == (7.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        summarize([])


@pytest.mark.parametrize(
    ("n", "confidence", "rank"),
    [
        (4, 0.95, None),
        (5, 0.95, 1),
        (8, 0.95, 2),
        (9, 0.95, 2),
        (20, 0.95, 6),
        (20, 0.9, 7),
        (3, 0.5, 2),
    ],
)
def test_sign_test_rank_matches_the_binomial_table(n, confidence, rank):
    assert sign_test_rank(n, confidence) == rank


def test_median_lower_bound_needs_enough_rounds():
    assert median_lower_bound([5, 1, 4, 2, 3], 0.95) == 1
    assert median_lower_bound([9, 1, 8, 2, 7, 3, 6, 4, 5], 0.95) == 2
    with pytest.raises(InsufficientRounds, match="at least 5 rounds"):
        median_lower_bound([1, 2, 3, 4], 0.95)
    with pytest.raises(ValueError, match="between 0 and 1"):
        median_lower_bound([1, 2, 3], 1.0)


@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 3), (3, 3), (4, 5), (5, 5)])
def test_mann_whitney_counts_match_enumeration(n, m):
    # U = number of (current, baseline) pairs with current < baseline, over all orderings.
    expected = [0] * (n * m + 1)
    for current in itertools.combinations(range(n + m), n):
        baseline = [i for i in range(n + m) if i not in current]
        expected[sum(c < b for c in current for b in baseline)] += 1
    assert _mann_whitney_counts(n, m) == expected


def test_ratio_bounds_locate_a_shift():
    baseline = [100.0, 104.0, 98.0, 101.0, 97.0]
    same = ratio_bounds([99.0, 103.0, 100.0, 102.0, 96.0], baseline)
    assert same.lower < 1 < same.upper
    halved = ratio_bounds([v / 2 for v in [99.0, 103.0, 100.0, 102.0, 96.0]], baseline)
    assert halved.upper < 0.6 and halved.estimate == pytest.approx(0.5, rel=0.05)
    with pytest.raises(InsufficientRounds, match="at least 3 rounds"):
        ratio_bounds([1.0, 2.0], [1.0, 2.0])


def test_bounds_keep_their_confidence_on_null_data():
    """With no real difference, a 95% bound must be wrong in about 5% of the cases or
    fewer: these are the false alarms a CI compare would raise."""
    rng = random.Random(20261125)
    trials, sign_misses, rank_misses = 2000, 0, 0
    for _ in range(trials):
        sample = [rng.lognormvariate(0, 0.3) for _ in range(7)]
        sign_misses += median_lower_bound(sample, 0.95) > 1.0  # true median is 1
        current = [rng.lognormvariate(0, 0.3) for _ in range(5)]
        baseline = [rng.lognormvariate(0, 0.3) for _ in range(5)]
        rank_misses += ratio_bounds(current, baseline, 0.95).upper < 1.0
    assert sign_misses / trials <= 0.05 + 0.015
    assert rank_misses / trials <= 0.05 + 0.015


# --- results ---------------------------------------------------------------------------------


def _result(name, mb_per_s, cpu=None, group=None):
    rounds = tuple(
        Round(
            bytes=10**8, records=1000, seconds=100 / v, cpu_seconds=None if cpu is None else c / 10
        )
        for v, c in zip(mb_per_s, cpu or [0] * len(mb_per_s), strict=True)
    )
    return Result(name, rounds, group=group)


def test_round_values_per_metric():
    r = Round(
        bytes=2 * 10**9,
        records=4000,
        seconds=2.0,
        cpu_user=0.1,
        cpu_system=0.3,
        cpu_seconds=0.5,
        syscalls={"sendfile64": 30, "read": 10},
    )
    assert r.value("throughput") == 1000.0
    assert r.value("records") == 2000.0
    assert r.value("cpu") == 0.25
    assert r.value("syscalls") == 20.0
    bare = Round(bytes=10, records=1, seconds=1.0)
    assert bare.value("cpu") is None and bare.value("syscalls") is None
    with pytest.raises(KeyError, match="known"):
        r.value("speed")


def test_result_stats_round_trip_and_missing_metrics():
    result = _result("fetch", [100, 200, 300], cpu=[1, 2, 3])
    assert result.mb_per_s.median == pytest.approx(200)
    assert result.cpu_per_gb.median == pytest.approx(2.0)
    assert "median 200 MB/s" in result.describe()
    again = Result.from_dict(result.to_dict())
    assert again == result
    assert set(result.to_dict()["stats"]) == {"throughput", "records", "seconds", "cpu"}
    with pytest.raises(ValueError, match="syscalls not counted"):
        result.stats("syscalls")


def test_paired_ratios_only_for_interleaved_results():
    a = _result("a", [200, 220, 210], group="g1")
    b = _result("b", [100, 100, 105], group="g1")
    assert paired_ratios(a, b) == pytest.approx([2.0, 2.2, 2.0])
    with pytest.raises(NotInterleaved, match=r"measure\.compare"):
        paired_ratios(a, _result("c", [1, 2, 3]))


# --- the meter, with scripted workloads ------------------------------------------------------


class Scripted:
    """A workload that logs its calls; no broker (so no CPU figures)."""

    def __init__(self, name, log, fail_at=None):
        self.broker, self.name, self.log, self.fail_at = object(), name, log, fail_at
        self.runs = 0

    def describe(self):
        return {"kind": "scripted"}

    def setup(self):
        self.log.append(f"setup {self.name}")

    def prepare(self):
        self.log.append(f"prepare {self.name}")

    def run(self):
        self.runs += 1
        self.log.append(f"run {self.name}")
        if self.runs == self.fail_at:
            raise RuntimeError("workload broke")
        return Transfer(bytes=1000, records=10, batches=1, requests=1, seconds=0.0)

    def close(self):
        self.log.append(f"close {self.name}")


def test_compare_interleaves_rounds_after_warmup_and_records_only_rounds():
    log, seen = [], []
    meter = Meter(nodeid="t::x", sink=seen.append)
    a, b = meter.compare(Scripted("a", log), Scripted("b", log), rounds=3, warmup=1)
    meter.close()
    runs = [entry for entry in log if entry.startswith("run")]
    assert runs == ["run a", "run b"] * 4  # 1 warm-up + 3 rounds, A B A B
    assert log[:2] == ["setup a", "setup b"] and sorted(log[-2:]) == ["close a", "close b"]
    assert [len(a.rounds), len(b.rounds)] == [3, 3] and a.warmup == 1
    assert a.group == b.group is not None
    assert seen == [a, b] and a.key == "t::x (a)"
    assert a.rounds[0].cpu_seconds is None  # not a local broker process
    assert "not a local process" in a.syscall_source


def test_an_undecided_verdict_adds_rounds_until_it_decides():
    log, seen = [], []
    meter = Meter(
        sink=seen.append,  # decided once three batches of rounds are in
        decide=lambda result: "ok" if len(result.rounds) >= 6 else "undecided",
    )
    a, b = meter.compare(Scripted("a", log), Scripted("b", log), rounds=2, warmup=1)
    assert [entry for entry in log if entry.startswith("run")] == ["run a", "run b"] * 7
    assert len(a.rounds) == len(b.rounds) == 6  # three batches, still paired
    assert a.uid and a.uid != b.uid and a.looks == Budget().looks(2)
    assert seen[-2:] == [a, b] and {r.uid for r in seen} == {a.uid, b.uid}


def test_the_budget_bounds_an_undecided_measurement():
    log = []
    meter = Meter(decide=lambda result: "undecided", budget=Budget(max_rounds=7))
    result = meter(Scripted("a", log), rounds=3, warmup=0)
    assert len(result.rounds) == 6  # a third batch would pass max_rounds
    assert result.more is not None and result.more() is None


def test_same_named_workloads_get_distinct_names():
    a, b = Meter().compare(Scripted("w", []), Scripted("w", []), rounds=1, warmup=0)
    assert (a.name, b.name) == ("w-a", "w-b")


def test_workloads_are_closed_when_a_round_fails():
    log = []
    meter = Meter()
    with pytest.raises(RuntimeError, match="workload broke"):
        meter(Scripted("a", log, fail_at=2), rounds=3)
    meter.close()  # the fixture's teardown, which runs whatever the test did
    assert log[-1] == "close a"


def test_rounds_and_warmup_are_validated():
    with pytest.raises(ValueError, match="rounds >= 1"):
        Meter()(Scripted("a", []), rounds=0)


# --- a real broker ---------------------------------------------------------------------------


def test_fetch_measurement_records_broker_cpu_and_syscalls(broker, measure):
    counted, _ = tracer_support("perf-stat")
    result = measure(FetchWorkload(broker, "8 MiB"), rounds=2, warmup=1)
    for r in result.rounds:
        assert r.bytes >= 8 << 20 and r.records > 0 and r.seconds > 0
        assert r.cpu_seconds is not None and r.cpu_seconds > 0
        assert r.cpu_user is not None and r.cpu_system is not None
        if counted:
            assert r.syscalls is not None and r.syscalls["sendfile64"] > 0
    assert result.workload["broker"] == "zerocopy"
    assert result.syscall_source.startswith("perf stat" if counted else "not counted")


def test_cold_fleet_and_produce_workloads(broker, measure):
    fleet = measure(
        FetchWorkload(broker, "4 MiB", cache="cold", consumers=2),
        rounds=1,
        warmup=0,
        residency=True,
        syscalls=False,
    )
    [round_] = fleet.rounds
    assert round_.bytes >= 2 * (4 << 20)  # both consumers read everything
    prepared, ran = fleet.residency
    [segment] = [name for name in prepared.segments if name.startswith("logbench-fetch")]
    assert prepared.segments[segment] == 0.0  # evicted before the timed run
    assert ran.segments[segment] > 0.9  # the fetch read it back into the cache
    produced = measure(ProduceWorkload(broker, "4 MiB"), rounds=2, warmup=0, syscalls=False)
    assert all(r.bytes >= 4 << 20 for r in produced.rounds)
    assert fleet.name == "fleet2-cold" and produced.name == "produce"
