"""Lagging-consumer fleets against a real broker: who read what, and what the broker saw."""

from __future__ import annotations

import threading
import time

import pytest

from pytest_logbench.client import HarnessClient, KafkaError, Producer, fill
from pytest_logbench.lag import Fleet

MIB = 1024 * 1024


@pytest.fixture
def filled(broker_factory):
    broker = broker_factory(tail_window_bytes=4 * MIB, segment_bytes=8 * MIB)
    producer = Producer(broker.bootstrap)
    try:
        producer.produce("events", 32 * MIB)
    finally:
        producer.close()
    return broker


def test_fleet_tail_and_replay_members_read_where_they_should(filled):
    broker = filled
    fleet = Fleet(broker.bootstrap, "events").producer(rate_mb_s=5).tail(2).replay(1)
    result = fleet.run(seconds=2)
    producer = result.producer
    assert producer is not None and producer.requests > 0 and producer.latencies
    replay = result.by_role("replay")[0]
    assert replay.start_offset == 0 and replay.bytes > 0
    for tail in result.by_role("tail"):
        assert tail.start_offset >= 32 * 1000  # started at the end of the 32 MiB already there
        assert tail.end_offset <= producer.end_offset
    assert broker.metric("logbench_fetch_bytes_total", read="history") > 0
    assert broker.metric("logbench_fetch_bytes_total", read="tail") > 0
    assert "replay-0" in result.report()


def test_fractional_start_and_bad_start(filled):
    with HarnessClient(filled.bootstrap) as client:
        end = client.list_offset("events", 0, -1)[0]
    [member] = Fleet(filled.bootstrap, "events").replay(1, start=0.25).run(seconds=0.5).members
    assert member.start_offset == end - end // 4  # a quarter of the log behind the end
    with pytest.raises(ValueError, match="start must be"):
        Fleet(filled.bootstrap, "events").replay(1, start=10**9).run(seconds=0.1)


def test_member_errors_are_raised_not_lost(filled):
    """A member process that fails (here: the broker is killed under it) fails the run."""
    fleet = Fleet(filled.bootstrap, "events").tail(1)

    def kill_once_the_member_is_connected() -> None:
        deadline = time.monotonic() + 60
        while filled.metric("logbench_connections") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # a spawned member takes a while to start on a busy machine
        time.sleep(0.2)
        filled.kill()

    killer = threading.Thread(target=kill_once_the_member_is_connected, daemon=True)
    killer.start()
    with pytest.raises(RuntimeError, match="fleet member tail-0 failed") as failure:
        fleet.run(seconds=30)
    killer.join(timeout=60)
    assert isinstance(failure.value.__cause__, ConnectionError | OSError)
    assert "Traceback" in str(failure.value)  # the member's own traceback crosses over


def test_unknown_topic_is_reported_before_the_run(broker):
    with pytest.raises(KafkaError, match="UNKNOWN_TOPIC_OR_PARTITION"):
        Fleet(broker.bootstrap, "missing-topic").tail(1).run(seconds=0.5)


def test_replay_until_stops_at_the_bound(filled):
    with HarnessClient(filled.bootstrap) as client:
        end = client.list_offset("events", 0, -1)[0]
    fleet = Fleet(filled.bootstrap, "events").replay(1, start="earliest", until=0.5)
    [member] = fleet.run(seconds=1.5).members
    bound = end - end // 2
    assert 0 <= member.end_offset - bound < 300  # stopped after the batch holding the bound
    assert member.bytes < 20 * MIB


def _in_band(lags: list[int], low: int, high: int) -> float:
    return sum(low <= lag <= high for lag in lags) / len(lags)


def test_a_fixed_lag_consumer_stays_in_its_band(filled):
    """Behind by 4,000 records (~1 s of the producer's 4 MB/s of 1 KiB records): the consumer
    never gets closer, and drifts further only by what arrives between its polls."""
    behind = 4000
    fleet = Fleet(filled.bootstrap, "events").producer(rate_mb_s=4).lagging(1, records=behind)
    result = fleet.run(seconds=3)
    [member] = result.by_role("lagging")
    assert len(member.lags) > 20 and member.bytes > 0
    assert min(member.lags) >= behind  # whole batches: never closer than the lag
    assert _in_band(member.lags, behind, behind * 3 // 2) >= 0.9, member.lags
    assert result.producer is not None and member.end_offset < result.producer.end_offset


def test_a_lag_in_bytes_or_segments_starts_that_far_behind(filled):
    with HarnessClient(filled.bootstrap) as client:
        end = client.list_offset("events", 0, -1)[0]
    fleet = Fleet(filled.bootstrap, "events").lagging(1, bytes=4 * MIB)
    fleet.lagging(1, segments=1, segment_bytes=8 * MIB)
    by_bytes, by_segments = fleet.run(seconds=0.5).members
    per_record = 32 * MIB / end
    assert abs((end - by_bytes.start_offset) * per_record - 4 * MIB) < 256 * 1024
    assert abs((end - by_segments.start_offset) * per_record - 8 * MIB) < 256 * 1024
    assert by_bytes.bytes == 0  # nothing was produced: already as far behind as asked
    with pytest.raises(ValueError, match="exactly one positive lag"):
        Fleet(filled.bootstrap, "events").lagging(records=10, bytes=10)
    with pytest.raises(ValueError, match="segment_bytes"):
        Fleet(filled.bootstrap, "events").lagging(segments=2)


def test_a_paced_replay_keeps_its_rate(filled):
    fleet = Fleet(filled.bootstrap, "events").replay(1, rate_mb_s=4).replay(1)
    paced, free = fleet.run(seconds=2).members
    # ~8 MB in 2 s, give or take one 1 MiB fetch; the unpaced one reads all 32 MiB.
    assert 4 * MIB < paced.bytes <= 8e6 + 2 * MIB
    assert free.bytes > paced.bytes


def test_a_replay_from_a_timestamp_starts_at_the_first_newer_record(filled):
    with HarnessClient(filled.bootstrap) as client:
        before = client.list_offset("events", 0, -1)[0]
        time.sleep(0.01)
        since = int(time.time() * 1000)
        fill(filled.bootstrap, "events", MIB)
        end = client.list_offset("events", 0, -1)[0]
    from pytest_logbench.lag import Timestamp

    fleet = Fleet(filled.bootstrap, "events").replay(1, start=Timestamp(since))
    fleet.replay(1, start=Timestamp(since + 3_600_000))  # nothing that new: the end
    [recent, future] = fleet.run(seconds=0.5).members
    assert recent.start_offset == before
    assert future.start_offset == end


def test_cold_bytes_tell_the_replay_from_the_tail(filled, page_cache):
    broker = filled
    page_cache.evict(broker.segment_files("events"))
    fleet = Fleet(broker.bootstrap, "events", log_dir=broker.log_dir)
    result = fleet.producer(rate_mb_s=4).tail(1).replay(1, until=0.5).run(seconds=2)
    [tail], [replay] = result.by_role("tail"), result.by_role("replay")
    # Everything the replay read was evicted: it brought it from the disk; the tail reads what
    # the producer just wrote into the page cache. The count is an estimate from two looks per
    # fetch: readahead that completes after a fetch's second look is nobody's (seen: 83 % of
    # a replay counted cold on a busy machine), hence "most", against the tail's "almost none".
    assert replay.bytes > 4 * MIB and replay.cold_bytes >= replay.bytes * 0.5, replay.summary()
    assert tail.bytes > 0 and tail.cold_bytes < tail.bytes * 0.1, tail.summary()
    assert result.producer.cold_bytes is None
