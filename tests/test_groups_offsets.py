"""Committed offsets in a real, file-backed offsets log, and the consumer-lag view.

Durability is tested the hard way: commits are made by a child process that then dies without
closing anything, and a fresh store must replay them from the files it left.
"""

import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference_broker.errors import ErrorCode
from reference_broker.groups import GroupCoordinator, LagRow, OffsetStore, consumer_lag
from reference_broker.groups.offset_records import (
    BadOffsetRecord,
    CommittedOffset,
    Layout,
    OffsetKey,
    decode_key,
    decode_value,
    partition_for,
)
from reference_broker.log.config import LogConfig
from reference_broker.log.partition import PartitionLog
from reference_broker.record_codec import build_batch, iter_records
from reference_broker.records import Record

pytestmark = pytest.mark.conformance

CRASHING_COMMITTER = textwrap.dedent("""
    import os, sys
    from reference_broker.groups import OffsetStore
    from reference_broker.log.config import LogConfig
    from reference_broker.log.partition import PartitionLog

    store = OffsetStore([PartitionLog(sys.argv[1], LogConfig())])
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
        store = OffsetStore([log])
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
        assert OffsetStore([reopened]).group_offsets("g2")[("orders", 0)].offset == 4
    finally:
        reopened.close()


def test_a_commit_too_large_for_the_log_is_refused_whole(tmp_path: Path):
    log = PartitionLog(tmp_path / "__consumer_offsets-0", LogConfig(max_message_bytes=300))
    try:
        store = OffsetStore([log])
        many = [("t", partition, 1, "") for partition in range(50)]
        assert store.commit("g", many) is ErrorCode.INVALID_COMMIT_OFFSET_SIZE
        assert store.group_offsets("g") == {}
        assert log.log_end_offset == 0
    finally:
        log.close()


def _kafka_string(text: str) -> bytes:
    return struct.pack(">h", len(text.encode())) + text.encode()


def test_commits_are_stored_in_kafkas_record_layout(tmp_path: Path):
    """Byte for byte as Kafka's OffsetCommitKey (key version 1) and OffsetCommitValue v3
    JSON definitions lay them out, so that tools reading the topic (Burrow) understand it."""
    log = PartitionLog(tmp_path / "__consumer_offsets-0", LogConfig())
    try:
        before = int(time.time() * 1000)
        assert OffsetStore([log]).commit("g1", [("orders", 3, 10, "meta")]) is ErrorCode.NONE
        (record,) = [r for batch in log.read_batches(0) for r in iter_records(batch)]
    finally:
        log.close()
    key = struct.pack(">h", 1) + _kafka_string("g1") + _kafka_string("orders") + b"\0\0\0\3"
    assert record.key == key
    assert record.value is not None
    head = struct.pack(">hqi", 3, 10, -1) + _kafka_string("meta")
    assert record.value[: len(head)] == head
    (timestamp,) = struct.unpack(">q", record.value[len(head) :])
    assert before <= timestamp <= int(time.time() * 1000)


@pytest.mark.parametrize(
    ("version", "fields"),
    [
        (0, struct.pack(">q", 5) + _kafka_string("m") + struct.pack(">q", 1)),
        (1, struct.pack(">q", 5) + _kafka_string("m") + struct.pack(">qq", 1, 99)),
        (2, struct.pack(">q", 5) + _kafka_string("m") + struct.pack(">q", 1)),
        (3, struct.pack(">qi", 5, 7) + _kafka_string("m") + struct.pack(">q", 1)),
        (4, struct.pack(">qi", 5, 7) + b"\x02m" + struct.pack(">q", 1) + b"\x00"),  # flexible
    ],
)
def test_every_value_version_is_read(version: int, fields: bytes):
    epoch = 7 if version >= 3 else -1
    value = struct.pack(">h", version) + fields
    assert decode_value(value, Layout.KAFKA) == CommittedOffset(5, "m", 1, epoch)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (struct.pack(">h", 9) + b"x", b"", "key version 9"),
        (struct.pack(">h", 1) + _kafka_string("g"), b"", "truncated"),
        (struct.pack(">h", 1) + b"\0\x09g", b"", "does not fit"),
        (None, b"v", "key is null"),
    ],
)
def test_records_that_are_not_commits_are_named(key, value, problem, tmp_path: Path):
    log = PartitionLog(tmp_path / "__consumer_offsets-0", LogConfig())
    try:
        log.append(build_batch([(key, value)]))
        with pytest.raises(BadOffsetRecord, match=problem):
            OffsetStore([log])._apply(next(iter_records(next(log.read_batches(0)))), {}, set())
    finally:
        log.close()
    with pytest.raises(BadOffsetRecord, match="value version 5"):
        decode_value(struct.pack(">hqi", 5, 5, 7), Layout.KAFKA)
    with pytest.raises(BadOffsetRecord, match="varint"):
        decode_value(struct.pack(">hqi", 4, 5, 7) + b"\xff", Layout.KAFKA)


def test_groups_are_partitioned_by_javas_string_hash():
    """Values printed by Java for ``Utils.abs(id.hashCode()) % 50`` (Kafka's partitionFor);
    the second hashes to Integer.MIN_VALUE, which Kafka's abs maps to 0."""
    assert partition_for("hello", 50) == 22
    assert partition_for("polygenelubricants", 50) == 0
    assert partition_for("consumer-group-émoji-😀", 50) == 29  # UTF-16 surrogates, as Java
    assert partition_for("zzzzzzzzzz", 50) == 36  # a negative hash


def test_a_group_lives_in_its_partition_and_deletions_are_tombstones(tmp_path: Path):
    logs = [PartitionLog(tmp_path / f"__consumer_offsets-{i}", LogConfig()) for i in range(3)]
    try:
        store = OffsetStore(logs)
        for group in ("a", "b", "c", "d"):
            assert store.commit(group, [("t", 0, 1, ""), ("t", 1, 2, "")]) is ErrorCode.NONE
        assert store.delete("a", [("t", 1)]) is ErrorCode.NONE
        assert store.delete("b", [("t", 0), ("t", 1)]) is ErrorCode.NONE
        for group in ("a", "b", "c", "d"):
            written = logs[partition_for(group, 3)]
            keys = [decode_key(r.key)[1] for b in written.read_batches(0) for r in iter_records(b)]
            assert {k.group_id for k in keys} >= {group}
        reopened = OffsetStore(logs)
        assert sorted(reopened.groups()) == ["a", "c", "d"]
        assert list(reopened.group_offsets("a")) == [("t", 0)]
    finally:
        for each in logs:
            each.close()


def _legacy_key(group: str, topic: str, partition: int) -> bytes:
    """The private layout brokers before Kafka's schema wrote (see offset_records)."""
    out = b"\x01"
    for text in (group, topic):
        out += struct.pack(">H", len(text.encode())) + text.encode()
    return out + struct.pack(">i", partition)


def _legacy_value(offset: int, timestamp: int, metadata: str) -> bytes:
    return struct.pack(">Bqqi", 1, offset, timestamp, len(metadata.encode())) + metadata.encode()


def test_an_old_layout_log_is_migrated_once_and_kept(tmp_path: Path):
    log = PartitionLog(tmp_path / "__consumer_offsets-0", LogConfig())
    try:
        log.append(build_batch([(_legacy_key("g", "t", 0), _legacy_value(4, 111, "old"))]))
        log.append(build_batch([(_legacy_key("g", "t", 0), _legacy_value(5, 222, "newer"))]))
        log.append(build_batch([(_legacy_key("g", "t", 1), b"\x01short")]))  # damaged
        log.append(build_batch([(_legacy_key("gone", "t", 0), _legacy_value(9, 333, ""))]))
        end_before = log.log_end_offset

        store = OffsetStore([log])
        assert store.group_offsets("g") == {("t", 0): CommittedOffset(5, "newer", 222)}
        assert sorted(store.groups()) == ["g", "gone"]
        assert (store.migrated_offsets, store.skipped_records) == (2, 1)
        assert log.log_end_offset == end_before + 2, "old records stay; Kafka records added"
        migrated = [r for b in list(log.read_batches(0))[-2:] for r in iter_records(b)]
        assert sorted(decode_key(r.key) for r in migrated) == [
            (Layout.KAFKA, OffsetKey("g", "t", 0)),
            (Layout.KAFKA, OffsetKey("gone", "t", 0)),
        ]
        assert store.delete("gone", [("t", 0)]) is ErrorCode.NONE

        again = OffsetStore([log])
        assert again.migrated_offsets == 0, "done once; the tombstone beats the old record"
        assert log.log_end_offset == end_before + 3
        assert again.groups() == ["g"]
        assert again.group_offsets("g") == store.group_offsets("g")
    finally:
        log.close()


def test_consumer_lag_in_records_and_bytes(tmp_path: Path):
    offsets_log = PartitionLog(tmp_path / "__consumer_offsets-0", LogConfig())
    topic_log = PartitionLog(tmp_path / "orders-0", LogConfig())
    try:
        for _ in range(5):
            topic_log.append(build_batch([(None, b"x" * 100), (None, b"y" * 100)]))
        store = OffsetStore([offsets_log])
        coordinator = GroupCoordinator(store)
        coordinator.commit_offsets("behind", -1, "", None, [("orders", 0, 4, None)])
        coordinator.commit_offsets("ahead", -1, "", None, [("orders", 0, 12, None)])
        coordinator.commit_offsets("gone", -1, "", None, [("deleted", 0, 1, None)])

        def log_end(topic: str, partition: int, committed: int) -> tuple[int, int] | None:
            if (topic, partition) != ("orders", 0):
                return None
            return topic_log.log_end_offset, topic_log.size_from(committed)

        rows = consumer_lag(store, log_end)
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

    from tests.kafka_group_clients import committed_offsets

    broker.stop()
    offsets_log = PartitionLog(broker.log_dir / "__consumer_offsets-0", LogConfig())
    try:
        OffsetStore([offsets_log]).commit("before", [("t", 0, 7, "")])
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


def test_a_broker_started_on_an_old_layout_log_keeps_its_offsets(broker_factory):
    """A log dir from a broker before Kafka's schema: one offsets partition, private layout,
    and one damaged record, which is named, counted and left in the log, never dropped."""
    from tests.kafka_group_clients import committed_offsets

    broker = broker_factory(offsets_topic_num_partitions=1)
    assert broker.metric("logbench_offsets_skipped_records") == 0  # Kafka: skips (ReferenceOnly)
    broker.stop()
    damaged = (_legacy_key("old-group", "t", 2), b"\x01truncated")
    legacy = [
        (_legacy_key("old-group", "t", 0), _legacy_value(7, 1, "")),
        (_legacy_key("old-group", "t", 1), _legacy_value(8, 1, "")),
        damaged,
    ]
    directory = broker.log_dir / "__consumer_offsets-0"
    offsets_log = PartitionLog(directory, LogConfig())
    try:
        offsets_log.append(build_batch(legacy))
    finally:
        offsets_log.close()
    broker.start()
    stderr = broker.stderr_tail()
    assert "migrated 2 committed offsets of 1 groups" in stderr
    assert "skipped 1 records" in stderr and "record 2: old-layout value of 10 bytes" in stderr
    assert broker.metric("logbench_offsets_skipped_records") == 1
    assert committed_offsets(broker.bootstrap, "old-group", "t", 3) == {0: 7, 1: 8, 2: -1}
    broker.restart()
    assert committed_offsets(broker.bootstrap, "old-group", "t", 3) == {0: 7, 1: 8, 2: -1}
    broker.stop()
    kept = PartitionLog(directory, LogConfig())
    try:
        records = [(r.key, r.value) for b in kept.read_batches(0) for r in iter_records(b)]
    finally:
        kept.close()
    assert records[:3] == legacy, "the old records, the damaged one too, are still there"
    assert [decode_key(key)[0] for key, _ in records[3:]] == [Layout.KAFKA] * 2


@pytest.mark.slow
def test_our_commit_records_are_the_ones_apache_kafka_writes(broker_factory, tmp_path: Path):
    """Cross-check against the real encoder: the same commit made on Apache Kafka and on the
    reference broker leaves the same key bytes in ``__consumer_offsets`` and a value that
    reads the same (both brokers here keep one offsets partition). Kafka 4.2 writes value
    version 4, the flexible form; we write 3, which Burrow 1.2.1 still decodes."""
    from tests.kafka_group_clients import committed_offsets

    def commit_and_read(broker) -> tuple[bytes, bytes]:
        from confluent_kafka import Consumer, TopicPartition

        from pytest_logbench.client import HarnessClient

        with HarnessClient(broker.bootstrap) as harness:
            harness.create_topic("checked", 1)  # Kafka refuses commits for unknown topics
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cross"})
        try:
            tp = TopicPartition("checked", 0, 42, metadata="meta")
            consumer.commit(offsets=[tp], asynchronous=False)
        finally:
            consumer.close()
        assert committed_offsets(broker.bootstrap, "cross", "checked", 1) == {0: 42}
        records = [
            record
            for segment in sorted((broker.log_dir / "__consumer_offsets-0").glob("*.log"))
            for record in _records_of(segment.read_bytes())
            if record.key is not None and decode_key(record.key)[1] == ("cross", "checked", 0)
        ]
        assert records, "no offset commit record for the group"
        assert records[-1].key is not None and records[-1].value is not None
        return records[-1].key, records[-1].value

    kafka_key, kafka_value = commit_and_read(broker_factory(kind="kafka"))
    ours = broker_factory(kind="reference", offsets_topic_num_partitions=1)
    ours_key, ours_value = commit_and_read(ours)
    assert ours_key == kafka_key
    assert (ours_value[:2], kafka_value[:2]) == (b"\0\3", b"\0\4"), "value versions 3 and 4"
    kafka_read, ours_read = (decode_value(v, Layout.KAFKA) for v in (kafka_value, ours_value))
    assert (ours_read.offset, ours_read.metadata) == (kafka_read.offset, kafka_read.metadata)
    assert ours_read.leader_epoch == kafka_read.leader_epoch


def _records_of(segment: bytes) -> Iterator[Record]:
    """Every record of a segment file's bytes, batch after batch (base offset, length, ...)."""
    pos = 0
    while pos + 12 <= len(segment):
        (length,) = struct.unpack_from(">i", segment, pos + 8)
        if length <= 0:
            break
        yield from iter_records(segment[pos : pos + 12 + length])
        pos += 12 + length
