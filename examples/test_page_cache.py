"""Tutorial: the OS page cache is the read cache — and why a fleet should read the tail.

The seed: "Kafka does not maintain its own in-process cache. Recently written segments are still
in the kernel page cache, so consumers reading the tail almost never touch disk — they read from
RAM the producer just warmed." And its design consequence: "A fleet reading the tail is cheap;
a fleet replaying history competes for page cache and IO with everyone else."

Two experiments on one reference broker, each in interleaved rounds:

1. One consumer reads 128 MiB that sit in the page cache (warm: what a consumer at the tail
   sees), then the same 128 MiB after they were evicted (cold: a lagging consumer replaying
   history). Before the warm rounds, ``assert_served_from_cache`` proves the warm read really
   touched no disk.
2. A fleet of three consumers reading warm data, against the same fleet reading cold data: the
   cost a replaying fleet puts on the broker, in MB/s and broker CPU seconds per GB.
"""

from __future__ import annotations

import time

from pytest_logbench.assertions import assert_served_from_cache
from pytest_logbench.client import Consumer
from pytest_logbench.tables import print_comparison
from pytest_logbench.workloads import FetchWorkload

SIZE = "128 MiB"
ROUNDS = 5


def test_tail_reads_come_from_memory(broker, measure, page_cache):
    warm, cold = (
        FetchWorkload(broker, SIZE, cache="warm"),
        FetchWorkload(broker, SIZE, cache="cold"),
    )
    a, b = measure.compare(warm, cold, rounds=ROUNDS, names=("warm", "cold"))
    ratios = print_comparison(f"one consumer reading {SIZE}: page cache vs disk", a, b)
    print(
        f"Through the broker, reading from the page cache was {ratios['throughput']:.2f}x as "
        "fast as reading the same segments from disk."
    )

    files = broker.segment_files(warm.topic)
    size = sum(f.stat().st_size for f in files)
    page_cache.evict(files)
    cold_s = _timed(lambda: page_cache.warm(files))
    warm_s = _timed(lambda: page_cache.warm(files))
    warm_ceiling, cold_ceiling = size / warm_s / 1e6, size / cold_s / 1e6
    print(
        f"The same files read directly (no broker, 1 MiB reads): cold {cold_ceiling:,.0f} "
        f"MB/s, warm {warm_ceiling:,.0f} MB/s. Through the broker the consumer reached "
        f"{a.mb_per_s.median:,.0f} MB/s warm ({a.mb_per_s.median / warm_ceiling:.0%} of the "
        f"warm ceiling) and {b.mb_per_s.median:,.0f} MB/s cold."
    )
    if cold_ceiling > b.mb_per_s.median:
        print(
            f"Here the storage reads {cold_ceiling:,.0f} MB/s cold, faster than the broker "
            "sends at all: this machine's disk is not the cellar of the seed (a virtual disk "
            "backed by the host's cache), so warm and cold fetches differ little. On a disk "
            "that reads 150-500 MB/s, the cold rounds would be several times slower. The "
            "check below still tells a page-cache hit from a disk read."
        )
    else:
        print(
            f"The cold rounds ran at the storage's pace ({cold_ceiling:,.0f} MB/s read "
            "directly): a lagging consumer waits for the disk."
        )

    consumer = Consumer(broker.bootstrap)
    try:
        report = assert_served_from_cache(
            broker, during=lambda: consumer.consume(warm.topic), topic=warm.topic
        )
    finally:
        consumer.close()
    print(report.message())


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def test_a_fleet_at_the_tail_is_cheap(broker, measure):
    tail = FetchWorkload(broker, SIZE, cache="warm", consumers=3)
    replay = FetchWorkload(broker, SIZE, cache="cold", consumers=3)
    a, b = measure.compare(tail, replay, rounds=ROUNDS, names=("3 at the tail", "3 replaying"))
    ratios = print_comparison(f"three consumers each reading {SIZE}: tail vs replay", a, b)
    cpu = ratios.get("cpu")
    print(
        f"The replaying fleet got {1 / ratios['throughput']:.2f}x the throughput of the "
        "fleet at the tail"
        + ("." if cpu is None else f", and each GB cost the broker {1 / cpu:.2f}x the CPU.")
    )
