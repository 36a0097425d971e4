"""Tutorial: lagging consumers evict the warm tail that everyone else relies on.

The seed: "Recently written segments are still in the kernel page cache, so consumers reading
the tail almost never touch disk ... This is why lagging consumers hurt: they force cold-segment
reads that evict the hot pages everyone else relies on."

The experiment gives a broker a finite page cache (a 64 MiB cgroup memory budget) and a 256 MiB
topic, then runs the same fleet twice for a few seconds each: a producer appending at a steady
rate with two consumers keeping up with the tail, first alone and then with one consumer
replaying the older half of the log from offset 0. It prints, for both phases, the producer's
acknowledgement latency, the broker's tail-versus-history bytes, and how much of the newest
segments stayed in the page cache.

Expect the replay to show up three ways: history bytes in the broker's counters, the tail
segments dropping out of the page cache, and higher latency for everyone else — the reference
broker has one event loop, so a ``sendfile`` that has to wait for the disk stalls every other
connection, which is what KAFKA-7504 reports for Kafka's network threads.
"""

from __future__ import annotations

import pytest

from pytest_logbench.client import Producer
from pytest_logbench.lag import Fleet, FleetResult
from pytest_logbench.pagecache import eviction_supported

MIB = 1 << 20
BUDGET = 64 * MIB
TOPIC_BYTES = 256 * MIB
PHASE_SECONDS = 4.0
PRODUCE_MB_S = 8.0


def _phase(broker, page_cache, *, replay: bool) -> tuple[FleetResult, float, dict[str, float]]:
    """Run the fleet once; return it, the newest segments' cached fraction, and the broker's
    tail / history fetch bytes during the run."""
    before = {
        read: broker.metric("logbench_fetch_bytes_total", read=read) for read in ("tail", "history")
    }
    fleet = Fleet(broker.bootstrap, "events").producer(rate_mb_s=PRODUCE_MB_S).tail(2)
    if replay:
        fleet.replay(1, start="earliest", until=0.5)  # history only: stop half way
    result = fleet.run(seconds=PHASE_SECONDS)
    tail_segments = broker.segment_files("events", 0)[-2:]
    resident = page_cache.residency(tail_segments).fraction
    read = {r: broker.metric("logbench_fetch_bytes_total", read=r) - before[r] for r in before}
    return result, resident, read


def _latencies(result: FleetResult, role: str) -> tuple[float, float]:
    samples = sorted(x for member in result.by_role(role) for x in member.latencies)
    if not samples:
        return 0.0, 0.0
    return samples[len(samples) // 2] * 1e3, samples[int(len(samples) * 0.99)] * 1e3


def test_a_replay_evicts_the_tail_and_slows_everyone(broker_factory, page_cache):
    broker = broker_factory(
        memory_limit_bytes=BUDGET, segment_bytes=16 * MIB, tail_window_bytes=32 * MIB
    )
    supported, reason = eviction_supported(broker.log_dir)
    if not supported:
        pytest.skip(reason)
    producer = Producer(broker.bootstrap)
    try:
        producer.produce("events", TOPIC_BYTES)
    finally:
        producer.close()

    calm, calm_resident, calm_read = _phase(broker, page_cache, replay=False)
    busy, busy_resident, busy_read = _phase(broker, page_cache, replay=True)

    print(
        f"\n--- lagging consumers: {TOPIC_BYTES // MIB} MiB topic, page cache capped at "
        f"{BUDGET // MIB} MiB, producer at {PRODUCE_MB_S:g} MB/s, 2 tail consumers ---"
    )
    print(
        f"{'phase':<22} {'produce ack p50/p99 ms':>23} {'tail MiB':>9} {'history MiB':>12} "
        f"{'newest segments cached':>23}"
    )
    for name, result, resident, read in (
        ("tail only", calm, calm_resident, calm_read),
        ("tail + 1 replay", busy, busy_resident, busy_read),
    ):
        p50, p99 = _latencies(result, "producer")
        print(
            f"{name:<22} {p50:11.2f} / {p99:8.2f} {read['tail'] / MIB:9.1f} "
            f"{read['history'] / MIB:12.1f} {resident:22.0%}"
        )
    print(busy.report())

    replay = busy.by_role("replay")[0]
    calm_p99, busy_p99 = _latencies(calm, "producer")[1], _latencies(busy, "producer")[1]
    print(
        f"The replay read {replay.bytes / MIB:.0f} MiB of history at {replay.mb_per_s:.0f} MB/s."
        f" Producer ack p99 went from {calm_p99:.1f} ms to {busy_p99:.1f} ms "
        f"({busy_p99 / calm_p99 if calm_p99 else float('inf'):.1f}x)."
    )
    history = page_cache.residency(broker.segment_files("events", 0)[:-2])
    usage = broker.memory_budget.usage()
    print(
        f"Page cache now: newest segments {busy_resident:.0%} resident, older segments "
        f"{history.fraction:.0%} ({history.resident_bytes / MIB:.0f} MiB); the broker's "
        f"cgroup is charged {usage['page_cache_bytes'] / MIB:.0f} MiB of page cache "
        f"(limit {usage['limit_bytes'] / MIB:.0f} MiB)."
    )
    lost = calm_resident - busy_resident
    if lost > 0.1:
        print(
            f"The replay pushed {lost:.0%} of the newest segments out of the page cache: "
            "what the tail consumers read next comes from disk."
        )
    else:
        print(
            "Here the tail survived the replay: pages the tail consumers read again and again "
            "stayed cached while the replay's pages, each read once, were recycled first. "
            "Stop the tail consumers (tests/test_pagecache_broker.py does) and the same "
            "replay evicts the tail."
        )
    assert calm_read["history"] == 0, "tail consumers alone should never read history"
    assert busy_read["history"] > 0 and replay.bytes > 0
