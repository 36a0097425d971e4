"""One segment of a partition's log: a ``.log`` file of batches plus its two sparse indexes.

The ``.log`` file is opened for append, so every write lands at its end: the only access pattern
the log ever writes with is sequential. Everything else reads with ``os.pread`` (or the broker's
``os.sendfile``) at explicit positions and never moves a file offset.
"""

import logging
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import FileIO
from pathlib import Path

from reference_broker.log.index import IndexInconsistent, OffsetIndex, SparseIndex, TimeIndex
from reference_broker.log.recovery import RecoveryReport, Truncation
from reference_broker.record_codec import iter_records
from reference_broker.records import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
    InvalidBatch,
    crc_ok,
    read_header,
)

log = logging.getLogger(__name__)

DELETED_SUFFIX = ".deleted"
_BATCH_PREFIX = struct.Struct(">qi4xb")
"""A batch's base offset, batch length and (after the leader epoch) magic: its first 17 bytes."""


def segment_name(base_offset: int, suffix: str) -> str:
    """Kafka's file name: the base offset zero-padded to 20 digits, so names sort as offsets."""
    return f"{base_offset:020d}{suffix}"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class SegmentMark:
    """A segment's end before an append, to roll the append back to if any part of it fails."""

    size: int
    next_offset: int
    max_timestamp: int
    max_timestamp_offset: int
    first_batch_timestamp: int
    bytes_since_index: int
    index_entries: int
    time_index_entries: int
    dirty: bool


class Segment:
    """The batches with offsets [base_offset, next_offset) and their offset and time index.

    Index rule (Kafka's): a batch gets an offset index entry when more than
    ``index_interval_bytes`` were written since the previous entry (or the segment start), and
    at that moment the time index gets (largest timestamp so far, relative offset of the first
    batch that reached it) if that timestamp grew since its last entry.

    A sealed segment opened without recovery loads its indexes on first use (as Kafka's lazy
    indexes do): start-up reads only its last batches. Whenever an index is loaded, every entry
    is checked to land on the batch header it names.
    """

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        index_interval_bytes: int,
        report: RecoveryReport,
        next_base: int | None = None,
    ) -> None:
        """Open (creating if needed) the ``.log`` file; `create` and `open` fill the indexes.

        ``next_base`` is the base offset of the next segment (None for the last one): this
        segment's batches must end at or below it.
        """
        self.base_offset = base_offset
        self.path = directory / segment_name(base_offset, ".log")
        self.file = FileIO(self.path, "a+")
        self._fd = self.file.fileno()
        self._index_interval = index_interval_bytes
        self._report = report
        self._next_base = next_base
        self.offset_index = OffsetIndex(self._index_path(".index"))
        self.time_index = TimeIndex(self._index_path(".timeindex"))
        self.created_ms = wall_clock_ms()
        self.dirty = False
        self._indexes_loaded = True
        self._reset()

    def _reset(self) -> None:
        self.size = 0
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        self._max_timestamp_offset = self.base_offset
        self.first_batch_timestamp = -1
        self._bytes_since_index = 0

    def _index_path(self, suffix: str) -> Path:
        return self.path.parent / segment_name(self.base_offset, suffix)

    @classmethod
    def create(
        cls, directory: Path, base_offset: int, index_interval_bytes: int, report: RecoveryReport
    ) -> "Segment":
        """A new empty segment (existing files of that base offset are emptied).

        On OSError (a full disk) no file of the segment is left behind.
        """
        segment = None
        try:
            segment = cls(directory, base_offset, index_interval_bytes, report)
            os.ftruncate(segment._fd, 0)
            for index in segment.indexes():
                index.reset()
            return segment
        except OSError:
            if segment is not None:
                segment.delete()
            raise

    @classmethod
    def open(
        cls,
        directory: Path,
        base_offset: int,
        index_interval_bytes: int,
        report: RecoveryReport,
        *,
        recover: bool,
        next_base: int | None,
    ) -> "Segment":
        """Open an existing segment, recovering it if asked or if it fails the cheap check.

        With ``recover`` every batch is scanned and CRC-checked. Without it, the batches after
        the last offset index entry must run in sequence exactly to the end of the file (and
        below ``next_base``); the last segment (``next_base`` None) also loads and checks its
        indexes, the others load them on first use.
        """
        segment = cls(directory, base_offset, index_interval_bytes, report, next_base)
        if recover:
            segment.recover("unclean shutdown: scanned")
            return segment
        try:
            if next_base is None:
                segment._load_indexes()
            else:
                segment._check_tail()
        except IndexInconsistent as exc:
            segment.recover(str(exc))
        return segment

    def _check_tail(self) -> None:
        """Find the segment's end from its index's last entry, reading only the batch headers
        after it; the indexes themselves stay unloaded until first used."""
        last = self.offset_index.last_on_disk()
        last_time = self.time_index.last_on_disk()
        self._indexes_loaded = False
        self._walk_from(last)
        if last_time is not None:
            self.max_timestamp = max(self.max_timestamp, last_time[0])

    def _walk_from(self, last: tuple[int, int] | None) -> None:
        """Walk the headers from offset index entry ``last`` (or the start) to the end of the
        file: they must land there exactly, at offsets in sequence, below the next segment."""
        file_size = os.fstat(self._fd).st_size
        position = 0
        self._bytes_since_index = 0  # the walk starts at an indexed batch (or the start)
        if last is not None:
            relative_offset, position = last
            if not 0 <= position < file_size or relative_offset < 0:
                raise IndexInconsistent(f"offset index ends outside the log: {last}")
            self.next_offset = self.base_offset + relative_offset
        self.size = self._index_from(position, verify_crc=False, index=self._indexes_loaded)
        if self.size != file_size:
            raise IndexInconsistent(f"the batches after the last index entry end at {self.size}")
        if self.size and self.first_batch_timestamp < 0:
            self.first_batch_timestamp = self.read_header(0).max_timestamp

    def _load_indexes(self) -> None:
        for index in self.indexes():
            index.load()
        self._indexes_loaded = True
        self._verify_entries()
        last_time = self.time_index.last()
        if last_time is not None:
            self.max_timestamp, relative_offset = last_time
            self._max_timestamp_offset = self.base_offset + relative_offset
        # The batches after the last entry are re-indexed (adding entries a kill between the
        # segment write and the index write may have lost).
        self._walk_from(self.offset_index.last())
        if last_time is not None and self._max_timestamp_offset >= self.next_offset:
            raise IndexInconsistent("time index points past the log")

    def _verify_entries(self) -> None:
        """Every offset index entry must point at the header of the batch with its offset.

        Reads only each batch's first 17 bytes (one ``pread`` per entry, no header object):
        this runs once per segment, for every entry of its index.
        """
        file_size = os.fstat(self._fd).st_size
        for relative_offset, position in self.offset_index.entries():
            prefix = os.pread(self._fd, _BATCH_PREFIX.size, position)
            if len(prefix) == _BATCH_PREFIX.size:
                base_offset, batch_length, magic = _BATCH_PREFIX.unpack(prefix)
                if (
                    magic == MAGIC
                    and base_offset == self.base_offset + relative_offset
                    and position + LOG_OVERHEAD + batch_length <= file_size
                ):
                    continue
            raise IndexInconsistent(
                f"offset index entry ({relative_offset}, {position}) does not land on the "
                f"batch at offset {self.base_offset + relative_offset}"
            )

    def _ensure_indexes(self) -> None:
        if not self._indexes_loaded:
            try:
                self._load_indexes()
            except IndexInconsistent as exc:
                self.recover(str(exc))

    def recover(self, reason: str) -> int:
        """Scan and CRC-check every batch, rebuild both indexes, truncate at the first bad byte.

        Returns the bytes truncated (reported to the partition's RecoveryReport). Never raises
        for bad data: whatever precedes the first torn, corrupt or out-of-sequence batch (or
        the first batch reaching the next segment's base offset) is kept, and nothing after it.
        """
        log.info("%s: recovering (%s)", self.path, reason)
        for index in self.indexes():
            index.reset()
        self._indexes_loaded = True
        self._reset()
        file_size = os.fstat(self._fd).st_size
        self.size = self._index_from(0, verify_crc=True, index=True)
        dropped = file_size - self.size
        if dropped:
            os.ftruncate(self._fd, self.size)
            self._report.truncated(
                Truncation(
                    self.base_offset, self.size, self.next_offset, dropped, reason, self._next_base
                )
            )
        return dropped

    def _index_from(self, position: int, *, verify_crc: bool, index: bool) -> int:
        """Account for the batches from ``position`` on while they are valid and in sequence.

        Valid: a whole header, magic 2, inside the file, base offset == the expected next
        offset, last offset below the next segment's base, and (if asked) a matching CRC-32C.
        Index entries are added only if ``index``. Returns where the valid batches end.
        """
        file_size = os.fstat(self._fd).st_size
        while position < file_size:
            try:
                header = self.read_header(position)
            except InvalidBatch:  # fewer than HEADER_SIZE bytes left: a torn tail
                break
            if (
                header.magic != MAGIC
                or header.size < HEADER_SIZE
                or header.size > file_size - position
                or header.base_offset != self.next_offset
                or header.last_offset_delta < 0
                or (self._next_base is not None and header.last_offset >= self._next_base)
                or (verify_crc and not crc_ok(self.read_bytes(position, header.size), 0, header))
            ):
                break
            self._track(position, header, index=index)
            position += header.size
        return position

    def _track(self, position: int, header: BatchHeader, *, index: bool = True) -> None:
        """Account for a batch written at ``position``: indexes, offsets, timestamps."""
        if position == 0:
            self.first_batch_timestamp = header.max_timestamp
        if header.max_timestamp > self.max_timestamp:
            self.max_timestamp = header.max_timestamp
            self._max_timestamp_offset = header.base_offset
        if index and self._bytes_since_index > self._index_interval:
            self.offset_index.append(header.base_offset - self.base_offset, position)
            last = self.time_index.last()
            if self.max_timestamp >= 0 and (last is None or self.max_timestamp > last[0]):
                self.time_index.append(
                    self.max_timestamp, self._max_timestamp_offset - self.base_offset
                )
            self._bytes_since_index = 0
        self._bytes_since_index += header.size
        self.next_offset = header.next_offset

    def mark(self) -> SegmentMark:
        return SegmentMark(
            self.size,
            self.next_offset,
            self.max_timestamp,
            self._max_timestamp_offset,
            self.first_batch_timestamp,
            self._bytes_since_index,
            len(self.offset_index),
            len(self.time_index),
            self.dirty,
        )

    def rollback(self, mark: SegmentMark) -> None:
        """Undo everything since ``mark``: file bytes, index entries and the in-memory end.

        Raises OSError if the files cannot be cut back (the caller must then stop appending).
        """
        os.ftruncate(self._fd, mark.size)
        self.offset_index.truncate(mark.index_entries)
        self.time_index.truncate(mark.time_index_entries)
        self.size = mark.size
        self.next_offset = mark.next_offset
        self.max_timestamp = mark.max_timestamp
        self._max_timestamp_offset = mark.max_timestamp_offset
        self.first_batch_timestamp = mark.first_batch_timestamp
        self._bytes_since_index = mark.bytes_since_index
        self.dirty = mark.dirty

    def append(self, data: bytes | bytearray | memoryview, batches: list[BatchHeader]) -> None:
        """Write ``data`` (exactly ``batches``, offsets already assigned) in one append, then
        its index entries. On OSError the caller rolls back to a ``mark`` taken before."""
        position = self.size
        self.dirty = True
        written = 0
        with memoryview(data) as view:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        for header in batches:
            self._track(position, header)
            position += header.size
        self.size = position

    def read_header(self, position: int) -> BatchHeader:
        """The header at ``position`` (InvalidBatch if the file ends within it)."""
        return read_header(os.pread(self._fd, HEADER_SIZE, position))

    def headers(self, position: int = 0) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of the batches from ``position`` on, reading only headers."""
        end = self.size
        while position < end:
            header = self.read_header(position)
            yield position, header
            position += header.size

    def read_bytes(self, position: int, length: int) -> bytes:
        return os.pread(self._fd, length, position)

    def find(self, offset: int) -> tuple[int, BatchHeader] | None:
        """The batch holding ``offset``: offset index lookup, then a forward header scan."""
        self._ensure_indexes()
        entry = self.offset_index.floor(offset - self.base_offset)
        for position, header in self.headers(entry[1] if entry else 0):
            if header.last_offset >= offset:
                return position, header
        return None

    def find_timestamp(self, timestamp: int, min_offset: int = 0) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after ``min_offset`` (the log start)
        whose timestamp is >= ``timestamp``.

        Starts from the time index entry just below ``timestamp`` (no batch up to that entry's
        batch can reach it), scans headers to the first batch whose max timestamp reaches it,
        then decodes that one batch to find the record, as Kafka does. ListOffsets by time is
        the only place the broker reads record bytes. A batch that does not decode (damaged on
        disk below the recovery point, where start-up does not check CRCs) answers with its
        base offset and max timestamp instead.
        """
        if self.max_timestamp < timestamp:
            return None
        self._ensure_indexes()
        entry = self.time_index.below(timestamp)
        start = self.offset_index.floor(entry[1]) if entry else None
        for position, header in self.headers(start[1] if start else 0):
            if header.max_timestamp >= timestamp and header.last_offset >= min_offset:
                try:
                    for record in iter_records(self.read_bytes(position, header.size)):
                        if record.timestamp >= timestamp and record.offset >= min_offset:
                            return record.offset, record.timestamp
                except InvalidBatch:
                    return max(header.base_offset, min_offset), header.max_timestamp
        return None

    @property
    def largest_timestamp(self) -> int:
        """What retention.ms compares: the largest batch timestamp, else the file's mtime."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        return os.fstat(self._fd).st_mtime_ns // 1_000_000

    def indexes(self) -> tuple[SparseIndex, SparseIndex]:
        return self.offset_index, self.time_index

    def flush(self, *, indexes: bool = True) -> None:
        """fdatasync the log if it has unsynced appends (and push and sync the indexes)."""
        if self.dirty:
            os.fdatasync(self._fd)
            self.dirty = False
        if indexes:
            for index in self.indexes():
                index.flush()

    def mark_deleted(self) -> None:
        """Rename the files to ``*.deleted``; the open file keeps serving slices already taken."""
        self.path = self.path.rename(self.path.with_name(self.path.name + DELETED_SUFFIX))
        for index in self.indexes():
            index.rename(index.path.with_name(index.path.name + DELETED_SUFFIX))

    def close(self) -> None:
        for index in self.indexes():
            index.close()
        self.file.close()

    def delete(self) -> None:
        self.close()
        for path in (self.path, *(index.path for index in self.indexes())):
            path.unlink(missing_ok=True)
