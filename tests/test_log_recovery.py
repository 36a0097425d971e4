"""The on-disk partition log after a crash: torn tails, garbage, bad CRCs, lost or damaged
indexes and segments, the recovery point, and damage confined to its segment."""

import os
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_logbench.strategies import examples
from reference_broker.log import (
    CLEAN_SHUTDOWN_MARKER,
    Hole,
    PartitionLog,
)
from reference_broker.log.recovery import RECOVERY_POINT_FILE
from reference_broker.records import iter_batches
from tests.test_log import (
    BATCH_SIZE,
    PER_SEGMENT,
    SEGMENT_BYTES,
    Logs,
    batch,
    fill,
    index_entries,
    open_logs,
    slice_bytes,
)


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Logs]:
    yield from open_logs(tmp_path)


# --- recovery ---------------------------------------------------------------------------------


def crashed_log(logs: Logs, batches: int = 6) -> tuple[Path, list[int]]:
    """A log of ``batches`` 2-record batches left without a clean shutdown; batch positions."""
    log = logs.open(index_interval_bytes=BATCH_SIZE)
    positions = []
    for _ in range(batches):
        positions.append(log.size_bytes)
        log.append(batch(2))
    logs.crash(log)
    return log.segments[0].path, positions


def assert_recovered_to(logs: Logs, kept_batches: int) -> PartitionLog:
    log = logs.open(index_interval_bytes=BATCH_SIZE)
    assert log.log_end_offset == 2 * kept_batches
    assert log.segments[0].path.stat().st_size == kept_batches * len(batch(2))
    data = b"".join(log.read_batches())
    assert [h.base_offset for _, h in iter_batches(data)] == list(range(0, 2 * kept_batches, 2))
    assert log.append(batch(2)).base_offset == 2 * kept_batches
    assert log.read(2 * kept_batches, 1 << 20).first_offset == 2 * kept_batches
    return log


def test_recovery_truncates_a_torn_tail(logs: Logs) -> None:
    path, positions = crashed_log(logs)
    with open(path, "r+b") as file:
        file.truncate(positions[-1] + 30)
    assert_recovered_to(logs, 5)


def test_recovery_drops_garbage_after_the_last_batch(logs: Logs) -> None:
    path, _ = crashed_log(logs)
    with open(path, "ab") as file:
        file.write(os.urandom(1000))
    assert_recovered_to(logs, 6)


def test_recovery_drops_a_zeroed_page_at_the_end(logs: Logs) -> None:
    path, _ = crashed_log(logs)
    with open(path, "ab") as file:
        file.write(bytes(4096))
    assert_recovered_to(logs, 6)


@pytest.mark.parametrize("byte", [21, 40, 61, -1])
def test_recovery_drops_a_last_batch_with_a_bad_crc(logs: Logs, byte: int) -> None:
    path, positions = crashed_log(logs)
    data = bytearray(path.read_bytes())
    data[positions[-1] + byte if byte >= 0 else byte] ^= 0x40
    path.write_bytes(data)
    assert_recovered_to(logs, 5)


def test_recovery_at_every_cut_point_keeps_every_whole_batch(logs: Logs) -> None:
    path, positions = crashed_log(logs, batches=3)
    original = path.read_bytes()
    for cut in range(0, len(original) + 1, 7):
        path.write_bytes(original[:cut])
        logs.crash(assert_recovered_to(logs, sum(p + len(batch(2)) <= cut for p in positions)))


def test_recovery_rebuilds_deleted_index_files(logs: Logs) -> None:
    log = logs.open(index_interval_bytes=BATCH_SIZE)
    fill(log, 10, records=2)
    logs.close(log)
    segment = log.segments[0].path
    index, time_index = segment.with_suffix(".index"), segment.with_suffix(".timeindex")
    expected = index.read_bytes(), time_index.read_bytes()
    assert len(expected[0]) == 9 * 8 and len(expected[1]) == 9 * 12  # every batch but the first
    for clean in (True, False):
        index.unlink()
        time_index.unlink()
        if not clean:
            (segment.parent / CLEAN_SHUTDOWN_MARKER).unlink()
        reopened = logs.open(index_interval_bytes=BATCH_SIZE)
        assert reopened.log_end_offset == 20
        logs.close(reopened)
        assert (index.read_bytes(), time_index.read_bytes()) == expected


def test_recovery_rebuilds_an_index_pointing_past_the_log(logs: Logs) -> None:
    log = logs.open(index_interval_bytes=BATCH_SIZE)
    fill(log, 10)
    logs.close(log)
    index = log.segments[0].path.with_suffix(".index")
    expected = index.read_bytes()
    with open(index, "ab") as file:
        file.write(struct.pack(">ii", 50, 99_999))
    reopened = logs.open(index_interval_bytes=BATCH_SIZE)
    assert [reopened.read(o, 1).first_offset for o in range(10)] == list(range(10))
    logs.close(reopened)
    assert index.read_bytes() == expected


def test_clean_shutdown_skips_the_scan(logs: Logs) -> None:
    log = logs.open()
    fill(log, 4)
    logs.close(log)
    marker = log.directory / CLEAN_SHUTDOWN_MARKER
    assert marker.exists()
    path = log.segments[0].path
    data = bytearray(path.read_bytes())
    data[BATCH_SIZE + 100] ^= 0xFF  # corrupt a record of batch 1: only a CRC scan sees it
    path.write_bytes(data)
    clean = logs.open()
    assert not marker.exists()  # removed at open: a crash from now on means recovery
    assert clean.log_end_offset == 4
    logs.crash(clean)
    assert logs.open().log_end_offset == 1  # unclean: scanned, truncated at batch 1


def test_a_truncated_sealed_segment_keeps_the_later_segments(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES)
    fill(log, 12)
    logs.close(log)
    first = log.segments[0]
    with open(first.path, "r+b") as file:
        file.truncate(first.size - 10)
    reopened = logs.open(segment_bytes=SEGMENT_BYTES)
    assert [s.base_offset for s in reopened.segments] == [0, 4, 8]
    assert reopened.log_end_offset == 12
    assert reopened.holes == [Hole(3, 4)]
    assert reopened.recovery_report.holes == [Hole(3, 4)]
    [truncation] = reopened.recovery_report.truncations
    assert (truncation.segment, truncation.first_lost_offset) == (0, 3)
    assert reopened.read(3, 1 << 20).first_offset == 4  # a fetch in the hole skips it
    assert reopened.append(batch()).base_offset == 12  # no offset of a later segment reused


def test_garbage_from_the_first_byte_recovers_to_an_empty_log(logs: Logs) -> None:
    directory = logs.directory
    directory.mkdir()
    (directory / "00000000000000000000.log").write_bytes(os.urandom(5000))
    (directory / "00000000000000000007.index.deleted").write_bytes(b"")
    (directory / "00000000000000000042.timeindex").write_bytes(b"")  # orphan
    log = logs.open()
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (0, 0, 0)
    assert sorted(p.name for p in directory.iterdir()) == [
        "00000000000000000000.index",
        "00000000000000000000.log",
        "00000000000000000000.timeindex",
    ]
    assert log.append(batch()).base_offset == 0


def test_a_missing_middle_segment_leaves_a_reported_hole(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES)
    fill(log, 12)
    logs.crash(log)
    _, middle, last = log.segments
    middle.path.unlink()
    reopened = logs.open(segment_bytes=SEGMENT_BYTES)
    assert [s.base_offset for s in reopened.segments] == [0, 8]
    assert reopened.recovery_report.holes == [Hole(4, 8)]
    assert [h.base_offset for _, h in iter_batches(b"".join(reopened.read_batches()))] == [
        0,
        1,
        2,
        3,
        8,
        9,
        10,
        11,
    ]
    assert reopened.size_from(5) == last.size
    assert reopened.append(batch()).base_offset == 12


def test_a_slice_ships_with_sendfile(logs: Logs) -> None:
    log = logs.open()
    fill(log, 5)
    result = log.read(2, 1 << 20)
    assert result.slice is not None
    sender, receiver = socket.socketpair()
    with sender, receiver:
        sent = os.sendfile(
            sender.fileno(), result.slice.file.fileno(), result.slice.position, result.slice.length
        )
        assert sent == result.slice.length == 3 * BATCH_SIZE
        received = b""
        while len(received) < sent:
            received += receiver.recv(sent - len(received))
    assert [h.base_offset for _, h in iter_batches(received)] == [2, 3, 4]


# --- index write-through, recovery point, damage confined to its segment ----------------------


def test_index_entries_reach_the_file_as_they_are_made(logs: Logs) -> None:
    log = logs.open(index_interval_bytes=0)
    fill(log, 5)
    # No flush, no close: a process killed now leaves these files as they are.
    path = log.segments[0].path
    assert index_entries(path.with_suffix(".index"), ">ii") == [
        (i, i * BATCH_SIZE) for i in range(1, 5)
    ]
    assert len(path.with_suffix(".timeindex").read_bytes()) == 4 * 12


def sealed_log(logs: Logs, segments: int = 4) -> PartitionLog:
    """A log of ``segments`` full segments (4 batches each) plus an empty active one, left as a
    killed process leaves it."""
    log = logs.open(segment_bytes=SEGMENT_BYTES)
    fill(log, segments * PER_SEGMENT)
    log.roll()
    logs.crash(log)
    return log


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x40
    path.write_bytes(data)


def test_a_crash_scans_only_the_segments_after_the_recovery_point(logs: Logs) -> None:
    log = sealed_log(logs)
    flip(log.segments[1].path, BATCH_SIZE + 100)  # a record byte: only a CRC scan sees it
    reopened = logs.open(segment_bytes=SEGMENT_BYTES)
    assert reopened.log_end_offset == 16
    assert reopened.recovery_report.truncations == []  # segment 1 was not read
    logs.crash(reopened)
    (log.directory / RECOVERY_POINT_FILE).unlink()  # no checkpoint: every segment is scanned
    rescanned = logs.open(segment_bytes=SEGMENT_BYTES)
    [truncation] = rescanned.recovery_report.truncations
    assert (truncation.segment, truncation.first_lost_offset) == (4, 5)
    assert rescanned.holes == [Hole(5, 8)]
    assert rescanned.log_end_offset == 16


def test_an_index_entry_off_its_batch_is_caught_after_a_clean_shutdown(logs: Logs) -> None:
    log = logs.open(segment_bytes=SEGMENT_BYTES, index_interval_bytes=0)
    fill(log, 14)
    logs.close(log)
    expected = [s.path.with_suffix(".index").read_bytes() for s in log.segments]
    for segment in (log.segments[1], log.segments[-1]):  # a sealed one and the active one
        index = segment.path.with_suffix(".index")
        data = bytearray(index.read_bytes())
        struct.pack_into(">ii", data, 0, 1, BATCH_SIZE + 1)  # still increasing, off the batch
        index.write_bytes(data)
    reopened = logs.open(segment_bytes=SEGMENT_BYTES, index_interval_bytes=0)
    for offset in range(14):
        result = reopened.read(offset, 1)
        assert result.slice is not None, f"offset {offset} not served"
        [(_, header)] = iter_batches(slice_bytes(result.slice))
        assert header.base_offset == offset
    assert [s.path.with_suffix(".index").read_bytes() for s in reopened.segments] == expected
    assert reopened.recovery_report.truncations == []  # rebuilt, no data lost


@examples(60, deadline=None)
@given(
    segment=st.integers(0, 3),
    damage=st.sampled_from(
        ["flip", "truncate", "zero", "garbage", "delete", ".index", ".timeindex"]
    ),
    where=st.floats(0, 1, exclude_max=True),
    clean=st.booleans(),
    checkpoint=st.booleans(),
)
def test_damage_to_one_segment_never_removes_a_batch_of_another(
    segment: int, damage: str, where: float, clean: bool, checkpoint: bool
) -> None:
    """Whatever happens to one segment's file while the broker is down, every batch of every
    other segment is still served at its offset after the restart, and the next append lands
    after all of them. Garbage in a segment's indexes loses nothing at all."""
    with tempfile.TemporaryDirectory() as directory:
        logs = Logs(Path(directory) / "topic-0")
        log = logs.open(segment_bytes=SEGMENT_BYTES, index_interval_bytes=0)
        fill(log, 4 * PER_SEGMENT)
        logs.close(log) if clean else logs.crash(log)
        if not clean:
            (log.directory / CLEAN_SHUTDOWN_MARKER).unlink(missing_ok=True)
        if not checkpoint:
            (log.directory / RECOVERY_POINT_FILE).unlink(missing_ok=True)
        expected = {h.base_offset: bytes(b) for h, b in batches_by_offset(log.directory)}
        path = log.segments[segment].path
        if damage.startswith("."):  # any bytes in an index: it is rebuilt, never trusted
            path = path.with_suffix(damage)
        data = bytearray(path.read_bytes())
        at = int(where * len(data))
        if damage == "flip":
            data[at] ^= 0xFF
        elif damage == "truncate":
            del data[at:]
        elif damage == "zero":
            data[at : at + 100] = bytes(len(data[at : at + 100]))
        elif damage in ("garbage", ".index", ".timeindex"):
            data[at:] = os.urandom(len(data) - at)
        if damage == "delete":
            path.unlink()
        else:
            path.write_bytes(data)
        reopened = logs.open(segment_bytes=SEGMENT_BYTES, index_interval_bytes=0)
        damaged = range(segment * PER_SEGMENT, (segment + 1) * PER_SEGMENT)
        served = {}
        for offset in range(reopened.log_start_offset, reopened.log_end_offset):
            result = reopened.read(offset, 1)
            if result.slice is not None and result.first_offset == offset:
                served[offset] = slice_bytes(result.slice)
        for offset, batch_bytes in expected.items():
            if offset not in damaged or damage.startswith("."):
                assert served.get(offset, b"")[8:] == batch_bytes[8:], f"batch {offset} lost"
        assert reopened.append(batch()).base_offset >= (16 if segment < 3 else 12)
        for live in list(logs.live):
            logs.close(live)


def batches_by_offset(directory: Path) -> Iterator[tuple[Any, memoryview]]:
    for path in sorted(directory.glob("*.log")):
        data = memoryview(path.read_bytes())
        for position, header in iter_batches(data):
            yield header, data[position : position + header.size]
