"""Committed offsets in a real, file-backed offsets log, and the consumer-lag view.

Durability is tested the hard way: commits are made by a child process that then dies without
closing anything, and a fresh store must replay them from the files it left.
"""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reference_broker.errors import ErrorCode
from reference_broker.groups import GroupCoordinator, LagRow, OffsetStore, consumer_lag
from reference_broker.groups.offsets import CommittedOffset, decode_value, encode_value
from reference_broker.log.config import LogConfig
from reference_broker.log.partition import PartitionLog
from reference_broker.record_codec import build_batch

pytestmark = pytest.mark.conformance

CRASHING_COMMITTER = textwrap.dedent("""
    import os, sys
    from reference_broker.groups import OffsetStore
    from reference_broker.log.config import LogConfig
    from reference_broker.log.partition import PartitionLog

    store = OffsetStore(PartitionLog(sys.argv[1], LogConfig()))
    store.commit("g1", [("orders", 0, 10, "first"), ("orders", 1, 20, "")])
    store.commit("g2", [("orders", 0, 3, "other group")])
    store.commit("g1", [("orders", 0, 11, "last write wins")])
    os._exit(0)  # no close(): no clean-shutdown marker, nothing flushed by us
""")


def test_offsets_survive_a_crash_and_reopening(tmp_path: Path):
    directory = tmp_path / "__consumer_offsets-0"
    before = int(time.time() * 1000)
    subprocess.run([sys.executable, "-c", CRASHING_COMMITTER, str(directory)], check=True)

    log = PartitionLog(directory, LogConfig())
    try:
        store = OffsetStore(log)
        assert sorted(store.groups()) == ["g1", "g2"]
        g1 = store.group_offsets("g1")
        assert {key: (c.offset, c.metadata) for key, c in g1.items()} == {
            ("orders", 0): (11, "last write wins"),
            ("orders", 1): (20, ""),
        }
        assert before <= g1[("orders", 0)].commit_timestamp_ms <= int(time.time() * 1000)
        assert store.group_offsets("g2")[("orders", 0)].offset == 3

        assert store.commit("g2", [("orders", 0, 4, "")]) is ErrorCode.NONE
    finally:
        log.close()
    reopened = PartitionLog(directory, LogConfig())
    try:
        assert OffsetStore(reopened).group_offsets("g2")[("orders", 0)].offset == 4
    finally:
        reopened.close()


def test_a_commit_too_large_for_the_log_is_refused_whole(tmp_path: Path):
    log = PartitionLog(tmp_path / "__consumer_offsets-0", LogConfig(max_message_bytes=300))
    try:
        store = OffsetStore(log)
        many = [("t", partition, 1, "") for partition in range(50)]
        assert store.commit("g", many) is ErrorCode.INVALID_COMMIT_OFFSET_SIZE
        assert store.group_offsets("g") == {}
        assert log.log_end_offset == 0
    finally:
        log.close()


def test_unknown_record_versions_are_refused():
    value = bytearray(encode_value(CommittedOffset(5, "m", 1)))
    assert decode_value(bytes(value)) == CommittedOffset(5, "m", 1)
    value[0] = 9
    with pytest.raises(ValueError, match="unknown value version 9"):
        decode_value(bytes(value))


def test_consumer_lag_in_records_and_bytes(tmp_path: Path):
    offsets_log = PartitionLog(tmp_path / "__consumer_offsets-0", LogConfig())
    topic_log = PartitionLog(tmp_path / "orders-0", LogConfig())
    try:
        for _ in range(5):
            topic_log.append(build_batch([(None, b"x" * 100), (None, b"y" * 100)]))
        coordinator = GroupCoordinator(OffsetStore(offsets_log))
        coordinator.commit_offsets("behind", -1, "", None, [("orders", 0, 4, None)])
        coordinator.commit_offsets("ahead", -1, "", None, [("orders", 0, 12, None)])
        coordinator.commit_offsets("gone", -1, "", None, [("deleted", 0, 1, None)])

        def log_end(topic: str, partition: int, committed: int) -> tuple[int, int] | None:
            if (topic, partition) != ("orders", 0):
                return None
            return topic_log.log_end_offset, topic_log.size_from(committed)

        rows = consumer_lag(coordinator, log_end)
        assert rows == [
            LagRow("ahead", "orders", 0, 12, 10, 0, 0),
            LagRow("behind", "orders", 0, 4, 10, 6, topic_log.size_from(4)),
        ]
        assert rows[1].lag_bytes == 3 * topic_log.size_bytes // 5, "three of five equal batches"
    finally:
        offsets_log.close()
        topic_log.close()


def test_a_broker_starts_over_records_that_are_not_commits(broker):
    """An older broker let clients write __consumer_offsets; its next start then failed with
    "record N lacks key or value" until the log was edited by hand. The loader now skips what
    is not a commit, says so once, counts it, and keeps every real commit."""
    from confluent_kafka import Consumer, TopicPartition

    from tests.kafka_clients import committed_offsets

    broker.stop()
    offsets_log = PartitionLog(broker.log_dir / "__consumer_offsets-0", LogConfig())
    try:
        OffsetStore(offsets_log).commit("before", [("t", 0, 7, "")])
        offsets_log.append(build_batch([(None, b"x")]))  # what a client's produce stored
        offsets_log.append(build_batch([(b"\x09not a key", b"v"), (b"\x01", b"")]))
    finally:
        offsets_log.close()
    broker.start()
    assert broker.metric("logbench_offsets_skipped_records") == 3
    assert "skipped 3 records" in broker.stderr_tail()
    assert committed_offsets(broker.bootstrap, "before", "t", 1) == {0: 7}
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "after"})
    try:
        consumer.commit(offsets=[TopicPartition("t", 0, 5)], asynchronous=False)
    finally:
        consumer.close()
    assert committed_offsets(broker.bootstrap, "after", "t", 1) == {0: 5}
