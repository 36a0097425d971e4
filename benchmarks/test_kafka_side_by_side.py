"""Benchmarks: the reference broker beside Apache Kafka 4.x on the same machine, in one run.

Both brokers run at once, and every comparison interleaves their rounds (A B A B ...), so a
burst of load on the machine lands on both alike; each prints the round-by-round ratio
(reference / Kafka):

- warm-tail fetch: GB/s and broker CPU-s/GB, read by the harness consumer (splice to
  /dev/null, faster than either broker sends);
- produce: MB/s and records/s of the harness producer (1 KiB records in 256 KiB requests, 5
  in flight, acks=1), and of Kafka's own kafka-producer-perf-test (100-byte records, lz4,
  linger.ms=5, acks=all: the Java client's batching and compression);
- start-up to ready (a fresh log dir each time: Kafka formats it first) and RSS after start.

Only start-up has a direction to assert (the JVM's start alone takes about a second); the
other comparisons are printed: neither broker is expected to win them.

Skips where Kafka cannot run (no Java; no Maven before the jars are cached).
``LOGBENCH_SMOKE=1`` makes every one small (CI); the figures then mean nothing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sizes import scaled

from pytest_logbench import kafka
from pytest_logbench.brokers import BrokerOptions, ReferenceBroker
from pytest_logbench.kafka.perftools import KafkaProducerPerformance
from pytest_logbench.tables import print_comparison
from pytest_logbench.workloads import FetchWorkload, ProduceWorkload

MIB = 1 << 20
FETCH_SIZE = scaled(256 * MIB, 16 * MIB)
PRODUCE_SIZE = scaled(128 * MIB, 8 * MIB)
PERF_RECORDS = scaled(1_000_000, 20_000)
ROUNDS = scaled(7, 2)
STARTS = scaled(5, 1)

UNAVAILABLE = kafka.unavailable_reason()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, object]]:
    """A reference broker and a Kafka, with the same 1 GiB segments, running side by side."""
    work = tmp_path_factory.mktemp("side-by-side")
    options = BrokerOptions().with_(segment_bytes=1 << 30)
    reference = ReferenceBroker(work / "reference", options).start()
    apache = kafka.KafkaBroker(work / "kafka", options, work_dir=work / "kafka-config").start()
    try:
        yield reference, apache
    finally:
        apache.stop()
        reference.stop()


def test_warm_tail_fetch(brokers, measure):
    reference, apache = brokers
    ours, theirs = measure.compare(
        FetchWorkload(reference, FETCH_SIZE),
        FetchWorkload(apache, FETCH_SIZE),
        rounds=ROUNDS,
        names=("reference fetch", "kafka fetch"),
        syscalls=False,
    )
    print_comparison(
        f"warm-tail fetch, {FETCH_SIZE // MIB} MiB per round, splice receiver", ours, theirs
    )


def test_produce_large_batches(brokers, measure):
    reference, apache = brokers
    ours, theirs = measure.compare(
        ProduceWorkload(reference, PRODUCE_SIZE),
        ProduceWorkload(apache, PRODUCE_SIZE),
        rounds=ROUNDS,
        names=("reference produce", "kafka produce"),
        syscalls=False,
    )
    print_comparison(
        f"produce, {PRODUCE_SIZE // MIB} MiB per round, 256 KiB requests of 1 KiB records",
        ours,
        theirs,
        metrics=("throughput", "records", "cpu"),
    )


def test_kafka_producer_perf_test(brokers, measure):
    """The Java client's own perf tool into each broker: small records, lz4, acks=all."""
    reference, apache = brokers
    config = {"compression.type": "lz4", "linger.ms": "5", "acks": "all"}
    tools = [
        KafkaProducerPerformance(broker, records=PERF_RECORDS, config=config)
        for broker in (reference, apache)
    ]
    ours, theirs = measure.compare(
        *tools, rounds=scaled(3, 1), warmup=0, names=("reference", "kafka"), syscalls=False
    )
    print_comparison(
        f"kafka-producer-perf-test, {PERF_RECORDS:,} records of 100 bytes, lz4, linger.ms=5",
        ours,
        theirs,
        metrics=("records", "cpu"),
    )
    for tool in tools:
        report = tool.reports[-1]
        print(
            f"{tool.broker.__class__.__name__:<16} {report.records_per_s:>12,.0f} records/s, "
            f"latency p50 {report.latency_p50_ms:.0f} ms, p99 {report.latency_p99_ms:.0f} ms"
        )
    assert all(report.records == PERF_RECORDS for tool in tools for report in tool.reports)


def _start_seconds(make: object, root: Path, runs: int) -> tuple[list[float], list[float]]:
    """Start-to-ready seconds and RSS (MiB) after start, each start on a fresh log dir."""
    seconds, rss = [], []
    for i in range(runs):
        broker = make(root / f"start{i}")  # type: ignore[operator]
        t0 = time.perf_counter()
        broker.start()
        seconds.append(time.perf_counter() - t0)
        rss.append(psutil.Process(broker.pid).memory_info().rss / MIB)
        broker.stop()
    return seconds, rss


def test_start_up_and_memory(tmp_path):
    runs = {
        "reference": _start_seconds(lambda d: ReferenceBroker(d), tmp_path, STARTS),
        "kafka": _start_seconds(
            lambda d: kafka.KafkaBroker(d / "data", work_dir=d / "config"), tmp_path, STARTS
        ),
    }
    print(f"\n--- start-up to ready and RSS after start, {STARTS} starts each ---")
    for name, (seconds, rss) in runs.items():
        print(
            f"{name:<10} start {statistics.median(seconds):6.2f} s "
            f"({min(seconds):.2f}-{max(seconds):.2f}), RSS {statistics.median(rss):6.0f} MiB"
        )
    ratio = statistics.median(runs["kafka"][0]) / statistics.median(runs["reference"][0])
    print(f"Kafka takes {ratio:.1f}x the reference broker's start-up")
    # Every reference start beat every Kafka start: by chance alone, 1 in C(10, 5) = 252
    # with 5 starts each (the JVM alone starts in about a second, KIP-974).
    assert max(runs["reference"][0]) < min(runs["kafka"][0])
