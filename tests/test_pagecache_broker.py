"""Page-cache controls on a live broker's segments, and a memory budget that makes replays evict.

These are the seed's mechanics made visible: fetches read through the page cache (a cold
segment becomes resident when a consumer reads it), and under a finite page cache a replay of
history pushes out the warm tail that caught-up consumers rely on.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pytest_logbench.client import Consumer, HarnessClient, Producer
from pytest_logbench.pagecache import eviction_supported

MIB = 1024 * 1024


def _filled_broker(broker_factory, topic: str, size: int, **options):
    """A broker (skipped where its log dir cannot be evicted) holding ``size`` bytes of
    ``topic``."""
    broker = broker_factory(**options)
    supported, reason = eviction_supported(broker.log_dir)
    if not supported:
        pytest.skip(reason)
    producer = Producer(broker.bootstrap)
    try:
        producer.produce(topic, size)
    finally:
        producer.close()
    return broker


@pytest.fixture
def loaded_broker(broker_factory):
    """A broker with 32 MiB in 4 MiB segments of topic ``pc``."""
    return _filled_broker(broker_factory, "pc", 32 * MIB, segment_bytes=4 * MIB)


def test_evict_then_fetch_makes_segments_resident(loaded_broker, page_cache):
    broker = loaded_broker
    segments = broker.segment_files("pc", 0)
    assert len(segments) >= 8
    evicted = page_cache.evict(broker)
    assert evicted.after.fraction < 0.05, evicted.report()
    consumer = Consumer(broker.bootstrap)
    try:
        consumer.consume("pc", until_offset=None)
    finally:
        consumer.close()
    after = page_cache.residency(broker)
    assert after.fraction > 0.95, after.report()
    assert [f.path for f in after.files] == segments


def test_residency_agrees_with_fincore(loaded_broker, page_cache):
    fincore = shutil.which("fincore")
    if fincore is None:
        pytest.skip("util-linux fincore is not installed")
    broker = loaded_broker
    page_cache.evict(broker)
    first = broker.segment_files("pc", 0)[0]
    page_cache.warm(first)
    ours = page_cache.residency(broker)
    assert 0 < ours.fraction < 0.5
    for segment in broker.segment_files("pc", 0):
        out = subprocess.run(
            [fincore, "--bytes", "--noheadings", "--raw", "-o", "RES", str(segment)],
            capture_output=True,
            text=True,
            check=True,
        )
        # fincore counts whole pages; resident_bytes stops at the end of the file.
        file = ours[segment]
        assert int(out.stdout.split()[0]) == file.resident_pages * file.page_size, segment


@pytest.mark.slow
def test_memory_budget_replay_evicts_the_tail(broker_factory, page_cache):
    """Under a 64 MiB budget, a 256 MiB topic keeps only about the budget resident, and a
    replay of history from offset 0 pushes the warm tail segments out."""
    budget = 64 * MIB
    broker = _filled_broker(
        broker_factory, "big", 256 * MIB, memory_limit_bytes=budget, segment_bytes=16 * MIB
    )
    segments = broker.segment_files("big", 0)
    tail = segments[-2:]
    before = page_cache.residency(segments)
    assert before.resident_bytes <= budget + 8 * MIB, before.report()
    assert page_cache.residency(tail).fraction > 0.5, before.report()

    with HarnessClient(broker.bootstrap) as client:
        end = client.list_offset("big", 0, -1)[0]
    consumer = Consumer(broker.bootstrap)
    try:
        consumer.consume("big", offset=0, until_offset=end // 2)  # history only
    finally:
        consumer.close()
    after = page_cache.residency(segments)
    assert after.resident_bytes <= budget + 8 * MIB, after.report()
    assert page_cache.residency(tail).fraction < 0.1, (
        "the replay should have evicted the tail:\n" + before.delta(after).report()
    )
    usage = broker.memory_budget.usage()
    assert usage["limit_bytes"] == budget
