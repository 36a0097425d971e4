"""Lagging-consumer fleets against a real broker: who read what, and what the broker saw."""

from __future__ import annotations

import threading
import time

import pytest

from pytest_logbench.client import HarnessClient, KafkaError, Producer
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
