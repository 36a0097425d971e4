"""Idempotent producers in the log: Kafka's sequence and epoch rules, kept across restarts."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference_broker.errors import ErrorCode
from reference_broker.log import (
    CLEAN_SHUTDOWN_MARKER,
    InvalidProducerEpoch,
    LogConfig,
    LogStore,
    OutOfOrderSequence,
    PartitionLog,
)
from reference_broker.log.producer_ids import BLOCK_SIZE, PRODUCER_ID_BLOCK_FILE
from reference_broker.record_codec import build_batch
from tests.test_log import Logs, open_logs

PID = 7


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Logs]:
    yield from open_logs(tmp_path)


def idempotent(sequence: int, records: int = 1, *, epoch: int = 0, pid: int = PID) -> bytes:
    return build_batch(
        [(b"key", b"v" * 100)] * records,
        base_timestamp=1_000,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=sequence,
    )


def test_a_retried_batch_gets_its_original_offsets_and_appends_nothing(logs: Logs) -> None:
    log = logs.open()
    assert log.append(idempotent(0, 2)).base_offset == 0
    assert log.append(idempotent(2)).base_offset == 2
    size = log.size_bytes
    retry = log.append(idempotent(0, 2))
    assert (retry.base_offset, retry.last_offset, retry.duplicate) == (0, 1, True)
    assert (retry.size, retry.record_count) == (0, 0)
    assert log.append(idempotent(2)).base_offset == 2
    assert (log.size_bytes, log.log_end_offset) == (size, 3)
    assert log.append(idempotent(3)).base_offset == 3


def test_a_sequence_gap_is_out_of_order_and_writes_nothing(logs: Logs) -> None:
    log = logs.open()
    log.append(idempotent(0))
    with pytest.raises(OutOfOrderSequence) as raised:
        log.append(idempotent(2))
    assert raised.value.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER == 45
    assert log.log_end_offset == 1
    assert log.append(idempotent(1)).base_offset == 1


def test_an_older_epoch_is_refused(logs: Logs) -> None:
    log = logs.open()
    log.append(idempotent(0, epoch=1))
    with pytest.raises(InvalidProducerEpoch) as raised:
        log.append(idempotent(1, epoch=0))
    assert raised.value.error_code == ErrorCode.INVALID_PRODUCER_EPOCH == 47
    assert log.log_end_offset == 1


def test_a_new_epoch_starts_at_sequence_zero(logs: Logs) -> None:
    log = logs.open()
    log.append(idempotent(0, epoch=0))
    with pytest.raises(OutOfOrderSequence):
        log.append(idempotent(1, epoch=1))
    assert log.append(idempotent(0, epoch=1)).base_offset == 1
    assert log.append(idempotent(0, epoch=1)).duplicate


def test_only_the_last_five_batches_are_remembered(logs: Logs) -> None:
    log = logs.open()
    for sequence in range(7):
        log.append(idempotent(sequence))
    assert log.append(idempotent(2)).duplicate
    with pytest.raises(OutOfOrderSequence):
        log.append(idempotent(1))  # forgotten: neither a known batch nor the next one
    assert log.log_end_offset == 7


def test_producers_and_plain_batches_do_not_interfere(logs: Logs) -> None:
    log = logs.open()
    assert log.append(idempotent(40, pid=1)).base_offset == 0  # unknown producer: any start
    assert log.append(idempotent(0, pid=2)).base_offset == 1
    plain = build_batch([(b"k", b"v")], base_timestamp=1_000)
    assert log.append(plain).base_offset == 2
    assert log.append(plain).base_offset == 3  # no producer id: never a duplicate
    assert log.append(idempotent(41, pid=1)).base_offset == 4


def test_one_request_may_carry_consecutive_batches_of_a_producer(logs: Logs) -> None:
    log = logs.open()
    assert log.append(idempotent(0, 2) + idempotent(2, 3)).base_offset == 0
    with pytest.raises(OutOfOrderSequence):
        log.append(idempotent(5) + idempotent(7))
    assert log.log_end_offset == 5
    assert log.append(idempotent(2, 3)).base_offset == 2


@pytest.mark.parametrize("shutdown", ["clean", "crash"])
def test_the_state_survives_a_restart(logs: Logs, shutdown: str) -> None:
    log = logs.open(segment_bytes=1024)
    for sequence in range(0, 30, 3):
        log.append(idempotent(sequence, 3))
    assert len(log.segments) > 2
    logs.close(log) if shutdown == "clean" else logs.crash(log)
    reopened = logs.open(segment_bytes=1024)
    assert reopened.append(idempotent(27, 3)).base_offset == 27
    assert reopened.append(idempotent(24, 3)).duplicate
    with pytest.raises(OutOfOrderSequence):
        reopened.append(idempotent(31))
    assert reopened.append(idempotent(30)).base_offset == 30


def test_start_up_reads_the_snapshot_not_the_earlier_segments(logs: Logs) -> None:
    log = logs.open(segment_bytes=1024)
    for sequence in range(10):
        log.append(idempotent(sequence))
    log.roll()  # the snapshot at the log end leaves no header to replay
    logs.crash(log)
    snapshots = sorted(log.directory.glob("*.snapshot"))
    assert len(snapshots) > 1, "a snapshot is written at every roll"
    # Rewrite the newest snapshot to claim epoch 5: only a log that trusts it refuses epoch 0.
    latest = snapshots[-1]
    document = json.loads(latest.read_text())
    for producer in document["producers"]:
        producer[1] = 5
    latest.write_text(json.dumps(document))
    reopened = logs.open(segment_bytes=1024)
    with pytest.raises(InvalidProducerEpoch):
        reopened.append(idempotent(10))
    logs.crash(reopened)
    latest.write_text("{not json")  # an unreadable snapshot is dropped; the log is replayed
    again = logs.open(segment_bytes=1024)
    assert again.append(idempotent(9)).duplicate
    assert again.append(idempotent(10)).base_offset == 10


def test_a_truncated_log_forgets_the_batches_it_lost(logs: Logs) -> None:
    log = logs.open()
    for sequence in range(4):
        log.append(idempotent(sequence))
    logs.close(log)
    (log.directory / CLEAN_SHUTDOWN_MARKER).unlink()
    path = log.segments[0].path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])  # batch 3 torn: the snapshot at 4 is void
    reopened = logs.open()
    assert reopened.log_end_offset == 3
    assert reopened.append(idempotent(3)).base_offset == 3  # not a duplicate of the lost one


def test_retention_forgets_producers_whose_batches_are_gone(logs: Logs) -> None:
    log = logs.open(segment_bytes=1024, retention_bytes=0)
    log.append(idempotent(0, pid=1))
    for sequence in range(10):
        log.append(idempotent(sequence, pid=2))
    log.enforce_retention()
    assert log.log_start_offset > 1
    assert log.append(idempotent(5, pid=1)).base_offset == log.log_end_offset - 1


def test_producer_ids_never_repeat_across_restarts(tmp_path: Path) -> None:
    store = LogStore(tmp_path, LogConfig())
    first = [store.producer_ids.allocate() for _ in range(3)]
    assert first == [0, 1, 2]
    store.close()
    store = LogStore(tmp_path, LogConfig())
    assert store.producer_ids.allocate() >= BLOCK_SIZE
    store.create_topic("t", 1)
    partition = store.partition("t", 0)
    assert isinstance(partition, PartitionLog)
    partition.append(idempotent(0, pid=50 * BLOCK_SIZE))
    store.close()
    (tmp_path / PRODUCER_ID_BLOCK_FILE).unlink()  # lost: the ids in the logs still count
    store = LogStore(tmp_path, LogConfig())
    assert store.producer_ids.allocate() > 50 * BLOCK_SIZE
    store.close()
