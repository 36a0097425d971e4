"""The on-disk partition log: append, indexes, roll, reads, retention, fsync policy (recovery:
test_log_recovery.py)."""

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.record.default_records import DefaultRecordBatch

from reference_broker.errors import ErrorCode
from reference_broker.log import (
    FileSlice,
    LogConfig,
    OffsetOutOfRange,
    PartitionLog,
    RecordListTooLarge,
)
from reference_broker.record_codec import build_batch
from reference_broker.records import Compression, InvalidBatch, crc_ok, iter_batches, read_header

VALUE = b"v" * 200


def batch(records: int = 1, timestamp: int = 1_000, value: bytes = VALUE) -> bytes:
    return build_batch([(b"key", value)] * records, base_timestamp=timestamp)


BATCH_SIZE = len(batch())
PER_SEGMENT = 4
SEGMENT_BYTES = PER_SEGMENT * BATCH_SIZE  # rolls after every 4 one-record batches


class Logs:
    """Opens logs in one partition directory and closes whatever a test left open."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.live: list[PartitionLog] = []

    def open(self, **config: object) -> PartitionLog:
        log = PartitionLog(self.directory, LogConfig(**config))
        self.live.append(log)
        return log

    def close(self, log: PartitionLog) -> None:
        self.live.remove(log)
        log.close()

    def crash(self, log: PartitionLog) -> None:
        """Stop using a log as a killed process would: files closed, no clean-shutdown marker."""
        self.live.remove(log)
        for segment in log.segments:
            segment.close()


def open_logs(tmp_path: Path) -> Iterator[Logs]:
    """A ``Logs`` in ``tmp_path``, closing what the test left open (a fixture's body)."""
    logs = Logs(tmp_path / "topic-0")
    yield logs
    for log in list(logs.live):
        logs.close(log)


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Logs]:
    yield from open_logs(tmp_path)


def fill(log: PartitionLog, count: int, records: int = 1, first_timestamp: int = 1_000) -> None:
    for i in range(count):
        log.append(batch(records, timestamp=first_timestamp + i))


def slice_bytes(file_slice: FileSlice) -> bytes:
    return os.pread(file_slice.file.fileno(), file_slice.length, file_slice.position)


def index_entries(path: Path, fmt: str) -> list[tuple[int, int]]:
    return list(struct.iter_unpack(fmt, path.read_bytes()))


# --- append -----------------------------------------------------------------------------------


def test_new_log_is_empty_and_named_like_kafka(logs: Logs) -> None:
    log = logs.open()
    assert (log.topic, log.partition) == ("topic", 0)
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (0, 0, 0)
    assert sorted(p.name for p in log.directory.iterdir()) == [
        "00000000000000000000.index",
        "00000000000000000000.log",
        "00000000000000000000.timeindex",
    ]


def test_append_assigns_offsets_and_leader_epoch_outside_the_crc(logs: Logs) -> None:
    log = logs.open()
    first = log.append(batch(3), leader_epoch=4)
    produced = batch(2) + batch(1)
    second = log.append(memoryview(produced), leader_epoch=5)
    assert (first.base_offset, first.last_offset, first.batch_count, first.record_count) == (
        0,
        2,
        1,
        3,
    )
    assert (second.base_offset, second.last_offset, second.size) == (3, 5, len(produced))
    assert second.batch_count == 2 and second.record_count == 3
    stored = log.segments[0].path.read_bytes()
    headers = [(pos, h) for pos, h in iter_batches(stored)]
    assert [(h.base_offset, h.partition_leader_epoch) for _, h in headers] == [
        (0, 4),
        (3, 5),
        (5, 5),
    ]
    assert all(crc_ok(stored, pos, h) for pos, h in headers)
    # Bytes after the rewritten fields are exactly what the producer sent.
    position, header = headers[1]
    assert stored[position + 16 : position + header.size] == produced[16 : header.size]
    kafka_batch = DefaultRecordBatch(stored[position : position + header.size])
    assert kafka_batch.validate_crc()
    assert [r.offset for r in kafka_batch] == [3, 4]


def test_append_stamps_a_writable_buffer_in_place_and_copies_a_read_only_one(logs: Logs) -> None:
    """The produce path copied every request's records to stamp their offsets; a request
    frame is writable and not read after the append, so it is stamped and written as is."""
    log = logs.open()
    log.append(batch(2))
    frame = bytearray(batch(3))
    log.append(memoryview(frame), leader_epoch=6)
    stamped = read_header(frame)
    assert (stamped.base_offset, stamped.partition_leader_epoch) == (2, 6)
    assert log.segments[0].path.read_bytes()[-len(frame) :] == frame
    produced = memoryview(batch(1)).toreadonly()
    assert log.append(produced, leader_epoch=6).base_offset == 5
    assert read_header(produced).base_offset == 0  # the caller's bytes are left alone


def test_invalid_batch_writes_nothing(logs: Logs) -> None:
    log = logs.open()
    log.append(batch())
    corrupt = bytearray(batch())
    corrupt[-1] ^= 1
    with pytest.raises(InvalidBatch) as info:
        log.append(batch() + bytes(corrupt))
    assert info.value.error_code is ErrorCode.CORRUPT_MESSAGE
    assert info.value.position == BATCH_SIZE
    assert log.log_end_offset == 1
    assert log.segments[0].path.stat().st_size == BATCH_SIZE


def test_max_message_bytes_applies_per_batch(logs: Logs) -> None:
    log = logs.open(max_message_bytes=BATCH_SIZE)
    log.append(batch() + batch())
    with pytest.raises(InvalidBatch) as info:
        log.append(batch(records=2))
    assert info.value.error_code is ErrorCode.MESSAGE_TOO_LARGE


def test_append_larger_than_a_segment_is_refused(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES)
    with pytest.raises(RecordListTooLarge) as info:
        log.append(batch() * (PER_SEGMENT + 1))
    assert info.value.error_code is ErrorCode.RECORD_LIST_TOO_LARGE
    assert log.log_end_offset == 0


# --- indexes ----------------------------------------------------------------------------------


def test_offset_index_is_sparse_at_the_interval(logs: Logs) -> None:
    log = logs.open(index_interval_bytes=3 * BATCH_SIZE)
    fill(log, 20)
    log.flush()
    # Kafka's rule: the first batch starting after more than the interval since the last entry.
    expected = [(offset, offset * BATCH_SIZE) for offset in (4, 8, 12, 16)]
    assert index_entries(log.segments[0].path.with_suffix(".index"), ">ii") == expected
    for offset in range(20):
        result = log.read(offset, 1)
        assert result.slice is not None
        assert (result.first_offset, result.slice.position) == (offset, offset * BATCH_SIZE)


def test_lookup_between_entries_of_multi_record_batches(logs: Logs) -> None:
    log = logs.open(index_interval_bytes=0)  # an entry for every batch but the first
    fill(log, 6, records=4)
    log.flush()
    size = len(batch(4))
    assert index_entries(log.segments[0].path.with_suffix(".index"), ">ii") == [
        (4 * i, size * i) for i in range(1, 6)
    ]
    for offset in range(24):
        result = log.read(offset, 1)
        assert result.first_offset == offset - offset % 4
        assert result.slice is not None and result.slice.position == size * (offset // 4)


def test_time_index_and_offset_for_timestamp(logs: Logs) -> None:
    log = logs.open(index_interval_bytes=BATCH_SIZE, segment_bytes=6 * BATCH_SIZE)
    timestamps = [100, 300, 200, 300, 500, 400, 400, 900, 600, 700, 1000, 50, 1200, 1100]
    for timestamp in timestamps:
        log.append(batch(timestamp=timestamp))
    log.flush()
    time_entries = index_entries(log.segments[0].path.with_suffix(".timeindex"), ">qi")
    assert time_entries == [(300, 1), (500, 4)]  # entries at batches 2 and 4: 300, then 500
    for target in range(0, 1300, 25):
        brute = next(((offset, ts) for offset, ts in enumerate(timestamps) if ts >= target), None)
        assert log.offset_for_timestamp(target) == brute, target


@pytest.mark.parametrize("codec", [Compression.NONE, Compression.GZIP, Compression.LZ4])
def test_offset_for_timestamp_finds_the_record_inside_a_batch(logs: Logs, codec) -> None:
    """Kafka answers ListOffsets by time with the exact record, not its batch's base offset."""
    log = logs.open()
    stamps = [10 * i for i in range(50)]
    for start in (0, 25):
        log.append(
            build_batch(
                [(b"k", VALUE)] * 25, timestamps=stamps[start : start + 25], compression=codec
            )
        )
    for target in (0, 1, 10, 95, 240, 250, 251, 490):
        brute = next(((o, ts) for o, ts in enumerate(stamps) if ts >= target), None)
        assert log.offset_for_timestamp(target) == brute, target
    assert log.offset_for_timestamp(491) is None


def test_offset_of_max_timestamp_is_the_first_record_holding_it(logs: Logs) -> None:
    log = logs.open(segment_bytes=1024)
    assert log.offset_of_max_timestamp() is None
    for timestamp in [100, 700, 300, 700, 200]:
        log.append(batch(timestamp=timestamp))
    assert len(log.segments) > 1
    assert log.offset_of_max_timestamp() == (1, 700)


def test_deleted_records_are_not_found_by_time_nor_read(logs: Logs) -> None:
    log = logs.open()
    log.append(build_batch([(b"k", VALUE)] * 10, timestamps=list(range(100, 110))))
    assert log.delete_records(5) == 5
    assert log.offset_for_timestamp(102) == (5, 105)
    with pytest.raises(OffsetOutOfRange):
        log.read(4, 1000)
    assert log.read(5, 1000).slice is not None  # the batch holding 5, whole (KIP-74)
    with pytest.raises(OffsetOutOfRange):
        log.delete_records(11)
    logs.close(log)
    assert logs.open().log_start_offset == 5


def test_offset_for_timestamp_in_a_batch_damaged_on_disk_answers_the_batch(logs: Logs) -> None:
    """A batch whose bytes rotted after the append (below the recovery point its CRC is not
    checked at start-up) cannot be decoded: ListOffsets answers its base offset and maximum
    timestamp, as before records were decoded, instead of failing the request."""
    log = logs.open()
    log.append(build_batch([(b"k", VALUE)] * 5, timestamps=[10, 20, 30, 40, 50]))
    log.flush()
    path = log.segments[0].path
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last record's value: the CRC no longer matches
    path.write_bytes(bytes(data))
    assert log.offset_for_timestamp(25) == (0, 50)


# --- roll -------------------------------------------------------------------------------------


def test_roll_at_segment_bytes(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES)
    fill(log, 12)
    per_segment = PER_SEGMENT
    assert [s.base_offset for s in log.segments] == list(range(0, 12, per_segment))
    assert all(s.size <= SEGMENT_BYTES for s in log.segments)
    assert [s.path.name for s in log.segments][:2] == [
        "00000000000000000000.log",
        f"{per_segment:020d}.log",
    ]
    assert sum(s.size for s in log.segments) == log.size_bytes == 12 * BATCH_SIZE


def test_roll_when_segment_ms_passed_between_batch_timestamps(logs: Logs) -> None:
    log = logs.open(segment_ms=1000)
    log.append(batch(timestamp=10_000))
    log.append(batch(timestamp=11_000))  # exactly segment.ms: no roll yet
    log.append(batch(timestamp=11_001))
    assert [s.base_offset for s in log.segments] == [0, 2]


def test_explicit_roll_and_empty_roll(logs: Logs) -> None:
    log = logs.open()
    log.roll()
    assert len(log.segments) == 1  # nothing to seal
    log.append(batch())
    log.roll()
    log.append(batch())
    assert [(s.base_offset, s.size) for s in log.segments] == [(0, BATCH_SIZE), (1, BATCH_SIZE)]


# --- reads ------------------------------------------------------------------------------------


def test_read_from_the_middle_of_a_batch_starts_at_the_batch(logs: Logs) -> None:
    log = logs.open()
    fill(log, 3, records=5)
    result = log.read(7, 1 << 20)
    assert result.slice is not None
    assert (result.first_offset, result.high_watermark, result.log_start_offset) == (5, 15, 0)
    data = slice_bytes(result.slice)
    assert [h.base_offset for _, h in iter_batches(data)] == [5, 10]
    assert result.tail_distance == len(data) == log.size_from(7)


def test_read_at_exact_segment_boundary_returns_one_segment(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES)
    fill(log, 12)
    second = log.segments[1]
    at_boundary = log.read(second.base_offset, 1 << 20)
    assert at_boundary.slice is not None
    assert at_boundary.slice.path == second.path and at_boundary.slice.position == 0
    assert at_boundary.slice.length == second.size  # never past the segment end
    before = log.read(second.base_offset - 1, 1 << 20)
    assert before.slice is not None and before.slice.path == log.segments[0].path
    assert before.slice.position + before.slice.length == log.segments[0].size
    assert before.tail_distance == at_boundary.tail_distance + BATCH_SIZE


def test_first_batch_is_whole_even_above_max_bytes(logs: Logs) -> None:
    log = logs.open()
    log.append(batch(records=10))
    log.append(batch())
    result = log.read(3, 10)
    assert result.slice is not None and result.slice.length == len(batch(records=10))
    assert result.first_offset == 0


def test_later_batches_are_cut_at_max_bytes(logs: Logs) -> None:
    log = logs.open()
    fill(log, 4)
    result = log.read(0, BATCH_SIZE * 2 + 30)
    assert result.slice is not None and result.slice.length == BATCH_SIZE * 2 + 30
    data = slice_bytes(result.slice)
    assert [h.base_offset for _, h in iter_batches(data)] == [0, 1]  # the partial one is ignored


def test_read_at_log_end_is_empty(logs: Logs) -> None:
    log = logs.open()
    assert log.read(0, 100).slice is None
    fill(log, 2)
    result = log.read(2, 100)
    assert result.slice is None
    assert (result.high_watermark, result.tail_distance) == (2, 0)


def test_read_out_of_range_on_both_sides(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES)
    fill(log, 12)
    log.enforce_retention(now_ms=0)  # nothing expires at time 0
    with pytest.raises(OffsetOutOfRange, match=r"offset 13 is outside the log \[0, 12\]") as info:
        log.read(13, 100)
    assert info.value.error_code is ErrorCode.OFFSET_OUT_OF_RANGE
    with pytest.raises(OffsetOutOfRange, match=r"offset -1 is outside"):
        log.read(-1, 100)


def test_read_stops_before_max_position_offset(logs: Logs) -> None:
    log = logs.open()
    fill(log, 5, records=2)
    bounded = log.read(2, 1 << 20, max_position_offset=6)
    assert bounded.slice is not None and bounded.slice.length == 2 * len(batch(2))
    assert [h.base_offset for _, h in iter_batches(slice_bytes(bounded.slice))] == [2, 4]
    assert log.read(6, 1 << 20, max_position_offset=6).slice is None
    assert log.read(5, 1 << 20, max_position_offset=5).slice is None  # the bound cuts the batch
    assert log.read(8, 1 << 20, max_position_offset=6).slice is None  # above the bound: no error


def test_size_from_counts_to_the_log_end(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES)
    fill(log, 12)
    assert log.size_from(0) == log.size_from(-5) == log.size_bytes
    assert log.size_from(11) == BATCH_SIZE
    assert log.size_from(12) == log.size_from(50) == 0


def test_read_batches_replays_whole_batches(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES)
    fill(log, 12)
    replayed = list(log.read_batches())
    assert [read_header(b).base_offset for b in replayed] == list(range(12))
    assert [read_header(b).base_offset for b in log.read_batches(10)] == [10, 11]
    assert list(log.read_batches(12)) == []


# --- retention --------------------------------------------------------------------------------


def test_retention_by_bytes_moves_log_start_and_keeps_slices_readable(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES, retention_bytes=2048, file_delete_delay_ms=100)
    fill(log, 16)
    per_segment = PER_SEGMENT
    early = log.read(0, 1 << 20).slice
    assert early is not None
    expected = slice_bytes(early)
    deleted = log.enforce_retention(now_ms=5_000)
    # 4 segments of 4 batches: drop the oldest while the rest still holds >= 2048 bytes.
    assert deleted == 2
    assert log.log_start_offset == 2 * per_segment
    assert log.size_bytes >= 2048
    assert sorted(p.name for p in log.directory.glob("*.deleted"))[:1] == [
        "00000000000000000000.index.deleted"
    ]
    with pytest.raises(OffsetOutOfRange):
        log.read(0, 100)
    assert log.read(log.log_start_offset, 100).first_offset == log.log_start_offset
    assert slice_bytes(early) == expected  # the slice taken before deletion still reads
    assert log.enforce_retention(now_ms=5_050) == 0
    assert slice_bytes(early) == expected  # not yet past file.delete.delay.ms
    log.enforce_retention(now_ms=5_100)
    assert not list(log.directory.glob("*.deleted"))
    assert early.file.closed


def test_retention_by_time_can_empty_the_log_and_appends_continue(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES, retention_ms=1_000)
    fill(log, 12, first_timestamp=10_000)
    assert log.enforce_retention(now_ms=10_000 + 1_000) == 0
    # Segment maxima are 10_003, 10_007, 10_011: at 11_005 only the first is too old.
    assert log.enforce_retention(now_ms=11_005) == 1
    assert log.log_start_offset == 4
    assert log.enforce_retention(now_ms=20_000) == 2  # the active one too, after a roll
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (12, 12, 0)
    assert log.read(12, 100).slice is None
    with pytest.raises(OffsetOutOfRange):
        log.read(11, 100)
    assert log.append(batch(timestamp=20_000)).base_offset == 12
    logs.close(log)
    reopened = logs.open(segment_bytes=SEGMENT_BYTES, retention_ms=1_000)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (12, 13)


def test_close_removes_deleted_segments(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES, retention_bytes=0)
    fill(log, 12)
    assert log.enforce_retention(now_ms=0) == 2
    assert list(log.directory.glob("*.deleted"))
    logs.close(log)
    assert not list(log.directory.glob("*.deleted"))


# --- fsync policy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "interval_ms", "syncs"),
    [("never", 0, 0), ("always", 0, 3), ("interval", 0, 3), ("interval", 3_600_000, 0)],
)
def test_fsync_policy(logs: Logs, monkeypatch, policy: str, interval_ms: int, syncs: int):
    calls = []
    monkeypatch.setattr(os, "fdatasync", calls.append)
    log = logs.open(fsync=policy, fsync_interval_ms=interval_ms)
    fill(log, 3)
    assert len(calls) == syncs
    log.flush()
    assert len(calls) == syncs + (syncs == 0)  # flush syncs whatever is left unsynced
