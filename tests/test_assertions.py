"""assertions.py: verdicts on synthetic rounds, the messages a failing test prints (through
pytester, as a user sees them), and the page-cache assertions on a real broker."""

from __future__ import annotations

import time

import pytest

from pytest_logbench.assertions import (
    assert_cheaper,
    assert_faster,
    assert_fetch_reads,
    assert_served_from_cache,
    assert_throughput,
)
from pytest_logbench.client import Consumer, Producer, Transfer
from pytest_logbench.measure import Budget, Meter
from pytest_logbench.results import NotInterleaved, Result, Round
from pytest_logbench.stats import InsufficientRounds
from pytest_logbench.syscalls import tracer_support
from pytest_logbench.workloads import FetchWorkload

pytest_plugins = ["pytester"]


def rounds(mb_per_s, cpu_s_per_gb=None, syscalls_per_gb=None):
    """Rounds of 100 MB with the given throughputs (and CPU / syscalls per GB)."""
    n = len(mb_per_s)
    cpu = cpu_s_per_gb or [None] * n
    calls = syscalls_per_gb or [None] * n
    return tuple(
        Round(
            bytes=10**8,
            records=10**5,
            seconds=100 / v,
            cpu_seconds=None if c is None else c / 10,
            syscalls=None if s is None else {"sendfile64": int(s / 10)},
        )
        for v, c, s in zip(mb_per_s, cpu, calls, strict=True)
    )


def test_throughput_passes_on_the_lower_bound_not_the_median():
    steady = Result("fetch", rounds([210, 220, 205, 230, 215]))
    assert_throughput(steady, at_least="200 MB/s")
    assert_throughput(steady, at_least="0.2 GB/s")
    assert_throughput(steady, at_least="200k records/s")  # 10^5 records per 100 MB
    one_slow = Result("fetch", rounds([210, 220, 150, 230, 215]))
    with pytest.raises(AssertionError, match="rounds spread too far"):
        assert_throughput(one_slow, at_least="200 MB/s")
    assert_throughput(one_slow, at_least="200 MB/s", confidence=0.5)  # about the median
    with pytest.raises(InsufficientRounds):
        assert_throughput(Result("fetch", rounds([500, 500])), at_least="200 MB/s")


def test_faster_and_cheaper_decide_on_interleaved_rounds():
    zc = Result(
        "zerocopy",
        rounds([300, 320, 310, 305, 330], [0.5, 0.5, 0.6, 0.5, 0.5], [100, 100, 100, 100, 100]),
        group="g",
    )
    cp = Result(
        "copy",
        rounds(
            [200, 200, 210, 190, 200], [0.8, 0.9, 0.8, 0.8, 0.8], [3000, 3000, 3000, 3000, 3000]
        ),
        group="g",
    )
    assert_faster(zc, cp, by=1.4)
    assert_cheaper(zc, cp, cpu_per_gb_by=1.3, syscalls_per_gb_by=20)
    with pytest.raises(AssertionError, match="not shown to be faster"):
        assert_faster(zc, cp, by=1.6)
    with pytest.raises(AssertionError, match="not shown to be cheaper"):
        assert_cheaper(zc, cp, cpu_per_gb_by=1.5)
    with pytest.raises(NotInterleaved):
        assert_faster(zc, Result("copy", cp.rounds), by=1.1)
    with pytest.raises(ValueError, match="use assert_cheaper"):
        assert_faster(zc, cp, metric="cpu")
    with pytest.raises(ValueError, match="cpu_per_gb_by"):
        assert_cheaper(zc, cp)


def test_cost_assertions_need_measured_costs():
    a = Result("a", rounds([100] * 5), group="g")
    b = Result("b", rounds([100] * 5), group="g")
    with pytest.raises(ValueError, match="cpu was not measured"):
        assert_cheaper(a, b, cpu_per_gb_by=1.1)


FAILING = """
from pytest_logbench.assertions import assert_cheaper, assert_faster, assert_throughput
from pytest_logbench.results import Result, Round


def rounds(values, cpu=None):
    cpu = cpu or [None] * len(values)
    return tuple(Round(bytes=10**8, records=10**5, seconds=100 / v,
                       cpu_seconds=None if c is None else c / 10)
                 for v, c in zip(values, cpu))


def test_slow():
    assert_throughput(Result("fetch", rounds([150, 190, 170, 160, 180])), at_least="200 MB/s")


def test_spread():
    assert_throughput(Result("fetch", rounds([150, 260, 250, 270, 255])), at_least="200 MB/s")


def test_not_faster():
    zc = Result("zerocopy", rounds([300, 310, 150, 305, 300]), group="g")
    cp = Result("copy", rounds([200] * 5), group="g")
    assert_faster(zc, cp, by=1.4)


def test_not_cheaper():
    zc = Result("zerocopy", rounds([100] * 5, [0.5, 0.55, 0.5, 0.52, 0.5]), group="g")
    cp = Result("copy", rounds([100] * 5, [0.6] * 5), group="g")
    assert_cheaper(zc, cp, cpu_per_gb_by=1.5)
"""


def test_failure_messages_give_the_figures(pytester):
    pytester.makepyfile(test_failing=FAILING)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: fetch: throughput not shown to be at least 200 MB/s: the median "
            "itself is below it",
            "*lower bound 150 MB/s (95% lower bound = round 1 of 5 sorted "
            "(sign test on the median))",
            "*median 170 MB/s, min 150, max 190, IQR 20.0",
            "*rounds (MB/s): 150 190 170 160 180",
            "*fetch: throughput not shown to be at least 200 MB/s: the median is above it, but the "
            "rounds spread too far to say so at 95% confidence",
            "*zerocopy not shown to be faster than copy by x1.4 (throughput): x0.75 at 95% "
            "confidence",
            "*per-round ratios (interleaved rounds): 1.5 1.55 0.75 1.52 1.5",
            "*zerocopy: median 300 MB/s; copy: median 200 MB/s",
            "*zerocopy not shown to be cheaper than copy by x1.5 (cpu): x1.09 at 95% confidence",
            "*zerocopy: median 0.500 s/GB; copy: median 0.600 s/GB",
        ]
    )


# --- page cache and tail/history, on a real broker ------------------------------------------


def test_served_from_cache_passes_warm_and_fails_cold(broker, page_cache):
    Producer(broker.bootstrap).produce("pc", 8 << 20)
    consumer = Consumer(broker.bootstrap)
    try:
        page_cache.warm(broker)
        report = assert_served_from_cache(broker, during=lambda: consumer.consume("pc"), topic="pc")
        assert report.payload_bytes >= 8 << 20 and report.gained_pages == 0
        evicted = page_cache.evict(broker)
        if not evicted.complete:
            pytest.skip(f"cannot make the segments cold here: {evicted.report()}")
        with pytest.raises(AssertionError) as failure:
            assert_served_from_cache(broker, during=lambda: consumer.consume("pc"))
        message = str(failure.value)
        assert "NOT served from the page cache" in message
        assert "segment pages brought into the cache: 0 " not in message
        assert "pc-0/00000000000000000000.log: +" in message
    finally:
        consumer.close()


def test_tail_and_history_reads_by_the_brokers_counters(broker_factory):
    broker = broker_factory(tail_window_bytes=1 << 20)
    producer = Producer(broker.bootstrap)
    consumer = Consumer(broker.bootstrap)
    try:
        producer.produce("th", 8 << 20)
        read = assert_fetch_reads(
            broker,
            "history",
            during=lambda: consumer.consume("th", max_bytes=1 << 20),
            at_least=0.8,
        )
        assert read["history"] > read["tail"]
        end, _ = producer.client.list_offset("th", 0, -1)
        producer.produce("th", 256 << 10)
        assert_fetch_reads(broker, "tail", during=lambda: consumer.consume("th", offset=end))
        with pytest.raises(AssertionError, match=r"0\.0% of the fetched bytes were tail"):
            assert_fetch_reads(
                broker,
                "tail",
                during=lambda: consumer.consume("th", until_offset=1000, max_bytes=64 << 10),
            )
        with pytest.raises(AssertionError, match=r"wanted at least 100\.0%"):
            assert_fetch_reads(broker, "history", during=lambda: None)
    finally:
        producer.close()
        consumer.close()


@pytest.mark.slow
def test_zero_copy_costs_fewer_syscalls_per_gb_than_copy(broker_factory, measure):
    """Counting, not timing: the copy path makes a pread and a send per 256 KiB where sendfile
    ships a whole slice, so its syscalls per GB are several times higher whatever the load."""
    supported, reason = tracer_support("perf-stat")
    if not supported:
        pytest.skip(reason)
    zc, cp = measure.compare(
        FetchWorkload(broker_factory(), "16 MiB"),
        FetchWorkload(broker_factory(copy=True), "16 MiB"),
        rounds=5,
        names=("zerocopy", "copy"),
        syscalls=True,
    )
    assert_cheaper(zc, cp, syscalls_per_gb_by=3)
    assert all(r.syscalls["sendfile64"] == 0 for r in cp.rounds)
    assert all(r.syscalls["sendfile64"] > 0 for r in zc.rounds)


class Paced:
    """Each run moves 10 MB in the time the test sets (by sleeping): a workload whose speed
    is known, so the sequential logic can be checked without timing a real broker."""

    name = "paced"

    def __init__(self, seconds):
        self.broker, self.seconds, self.runs = object(), list(seconds), 0

    def describe(self):
        return {"kind": "paced"}

    def setup(self):
        pass

    def prepare(self):
        pass

    def close(self):
        pass

    def run(self):
        delay = self.seconds[min(self.runs, len(self.seconds) - 1)]
        self.runs += 1
        time.sleep(delay)
        return Transfer(bytes=10**7, records=10, batches=1, requests=1, seconds=delay)


def test_an_undecided_assertion_takes_more_rounds_and_then_passes():
    """Four fast rounds and one 20x slower (a descheduled round) do not bound the median at
    the confidence left per look; later fast rounds do. A plain list of rounds would fail."""
    meter = Meter(budget=Budget(max_rounds=20))
    result = meter(Paced([0.01] * 4 + [0.2] + [0.01] * 20), rounds=5, warmup=0, syscalls=False)
    assert_throughput(result, at_least="100 MB/s")
    assert len(result.more() or []) == 1  # the assertion extended it; the budget remains
    meter.close()


def test_a_refuted_assertion_fails_without_more_rounds():
    meter = Meter(budget=Budget(max_rounds=20))
    workload = Paced([0.2])
    # 7 rounds: enough to bound a median at the 98.75 % left for each of 3 looks.
    result = meter(workload, rounds=7, warmup=0, syscalls=False)
    with pytest.raises(AssertionError, match="the median itself is below it"):
        assert_throughput(result, at_least="100 MB/s")
    assert workload.runs == 7  # every round was 50 MB/s: no reason to look further
    meter.close()


def test_an_assertion_undecided_when_the_budget_is_spent_fails():
    meter = Meter(budget=Budget(max_rounds=10))
    workload = Paced([0.01, 0.2])  # alternating would never bound the median above 100 MB/s
    workload.seconds = [0.01, 0.2] * 10
    result = meter(workload, rounds=5, warmup=0, syscalls=False)
    with pytest.raises(AssertionError, match="spread too far"):
        assert_throughput(result, at_least="100 MB/s")
    assert workload.runs == 10
    meter.close()
