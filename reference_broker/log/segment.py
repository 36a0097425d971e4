"""One segment of a partition's log: a ``.log`` file of batches plus its two sparse indexes.

The ``.log`` file is opened for append, so every write lands at its end: the only access pattern
the log ever writes with is sequential. Everything else reads with ``os.pread`` (or the broker's
``os.sendfile``) at explicit positions and never moves a file offset.
"""

import logging
import os
import time
from collections.abc import Iterator
from io import FileIO
from pathlib import Path

from reference_broker.log.index import IndexInconsistent, OffsetIndex, SparseIndex, TimeIndex
from reference_broker.records import (
    HEADER_SIZE,
    MAGIC,
    BatchHeader,
    CompressionUnavailable,
    InvalidBatch,
    crc_ok,
    iter_records,
    read_header,
)

log = logging.getLogger(__name__)

DELETED_SUFFIX = ".deleted"


def segment_name(base_offset: int, suffix: str) -> str:
    """Kafka's file name: the base offset zero-padded to 20 digits, so names sort as offsets."""
    return f"{base_offset:020d}{suffix}"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Segment:
    """The batches with offsets [base_offset, next_offset) and their offset and time index.

    Index rule (Kafka's): a batch gets an offset index entry when more than
    ``index_interval_bytes`` were written since the previous entry (or the segment start), and
    at that moment the time index gets (largest timestamp so far, relative offset of the first
    batch that reached it) if that timestamp grew since its last entry.
    """

    def __init__(self, directory: Path, base_offset: int, index_interval_bytes: int) -> None:
        """Open (creating if needed) the ``.log`` file; `create` and `open` fill the indexes."""
        self.base_offset = base_offset
        self.path = directory / segment_name(base_offset, ".log")
        self.file = FileIO(self.path, "a+")
        self._fd = self.file.fileno()
        self._index_interval = index_interval_bytes
        self.offset_index = OffsetIndex(self._index_path(".index"))
        self.time_index = TimeIndex(self._index_path(".timeindex"))
        self.created_ms = wall_clock_ms()
        self.dirty = False
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
    def create(cls, directory: Path, base_offset: int, index_interval_bytes: int) -> "Segment":
        """A new empty segment (existing files of that base offset are emptied)."""
        segment = cls(directory, base_offset, index_interval_bytes)
        os.ftruncate(segment._fd, 0)
        for index in segment.indexes():
            index.reset()
        return segment

    @classmethod
    def open(
        cls, directory: Path, base_offset: int, index_interval_bytes: int, *, recover: bool
    ) -> tuple["Segment", bool]:
        """Open an existing segment; return it and whether recovery truncated it.

        With ``recover`` every batch is scanned and CRC-checked. Without it the indexes are
        loaded and checked against the log cheaply (well-formed, and the batches after the last
        offset index entry run in sequence exactly to the end of the file); a segment failing
        that check is recovered anyway.
        """
        segment = cls(directory, base_offset, index_interval_bytes)
        if not recover:
            try:
                segment._load_indexes()
                return segment, False
            except IndexInconsistent as exc:
                log.warning("%s: %s; recovering the segment", segment.path, exc)
        return segment, segment.recover()

    def _load_indexes(self) -> None:
        for index in self.indexes():
            index.load()
        file_size = os.fstat(self._fd).st_size
        position = 0
        last = self.offset_index.last()
        if last is not None:
            relative_offset, position = last
            if position >= file_size:
                raise IndexInconsistent(f"offset index points past the log, to byte {position}")
            self.next_offset = self.base_offset + relative_offset
        last_time = self.time_index.last()
        if last_time is not None:
            self.max_timestamp, relative_offset = last_time
            self._max_timestamp_offset = self.base_offset + relative_offset
        # The batches after the last entry are re-indexed (adding entries an earlier run may
        # have lost) and must run in sequence exactly to the end of the file.
        self.size = self._index_from(position, verify_crc=False)
        if self.size != file_size:
            raise IndexInconsistent(f"the batches after the last index entry end at {self.size}")
        if last_time is not None and self._max_timestamp_offset >= self.next_offset:
            raise IndexInconsistent("time index points past the log")
        if position > 0:
            self.first_batch_timestamp = self.read_header(0).max_timestamp

    def recover(self) -> bool:
        """Scan and CRC-check every batch, rebuild both indexes, truncate at the first bad byte.

        Returns whether bytes were truncated. Never raises for bad data: whatever precedes the
        first torn, corrupt or out-of-sequence batch is kept, and nothing after it.
        """
        for index in self.indexes():
            index.reset()
        self._reset()
        file_size = os.fstat(self._fd).st_size
        self.size = self._index_from(0, verify_crc=True)
        if self.size == file_size:
            return False
        log.warning(
            "%s: invalid data at byte %d (next offset %d), truncating %d bytes",
            self.path,
            self.size,
            self.next_offset,
            file_size - self.size,
        )
        os.ftruncate(self._fd, self.size)
        return True

    def _index_from(self, position: int, *, verify_crc: bool) -> int:
        """Index the batches from ``position`` on while they are valid and in offset sequence.

        Valid: a whole header, magic 2, inside the file, base offset == the expected next
        offset, and (if asked) a matching CRC-32C. Returns where the valid batches end.
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
                or (verify_crc and not crc_ok(self.read_bytes(position, header.size), 0, header))
            ):
                break
            self._track(position, header)
            position += header.size
        return position

    def _track(self, position: int, header: BatchHeader) -> None:
        """Account for a batch written at ``position``: indexes, offsets, timestamps."""
        if position == 0:
            self.first_batch_timestamp = header.max_timestamp
        if header.max_timestamp > self.max_timestamp:
            self.max_timestamp = header.max_timestamp
            self._max_timestamp_offset = header.base_offset
        if self._bytes_since_index > self._index_interval:
            self.offset_index.append(header.base_offset - self.base_offset, position)
            last = self.time_index.last()
            if self.max_timestamp >= 0 and (last is None or self.max_timestamp > last[0]):
                self.time_index.append(
                    self.max_timestamp, self._max_timestamp_offset - self.base_offset
                )
            self._bytes_since_index = 0
        self._bytes_since_index += header.size
        self.next_offset = header.next_offset

    def append(self, data: bytes | bytearray, batches: list[BatchHeader]) -> None:
        """Write ``data`` (exactly ``batches``, offsets already assigned) in one append."""
        position = self.size
        try:
            written = 0
            with memoryview(data) as view:
                while written < len(view):
                    written += os.write(self._fd, view[written:])
        except OSError:
            os.ftruncate(self._fd, position)  # e.g. ENOSPC mid-write: leave no torn batch
            raise
        for header in batches:
            self._track(position, header)
            position += header.size
        self.size = position
        self.dirty = True

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
        entry = self.offset_index.floor(offset - self.base_offset)
        for position, header in self.headers(entry[1] if entry else 0):
            if header.last_offset >= offset:
                return position, header
        return None

    def find_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record whose timestamp is >= ``timestamp``.

        Starts from the time index entry just below ``timestamp`` (no batch up to that entry's
        batch can reach it), scans headers to the first batch whose max timestamp reaches it,
        then decodes that one batch to find the record, as Kafka does. ListOffsets by time is
        the only place the broker reads record bytes. A batch whose codec is not installed
        (snappy) answers with its base offset and max timestamp instead.
        """
        if self.max_timestamp < timestamp:
            return None
        entry = self.time_index.below(timestamp)
        start = self.offset_index.floor(entry[1]) if entry else None
        for position, header in self.headers(start[1] if start else 0):
            if header.max_timestamp >= timestamp:
                try:
                    for record in iter_records(self.read_bytes(position, header.size)):
                        if record.timestamp >= timestamp:
                            return record.offset, record.timestamp
                except CompressionUnavailable:
                    pass
                return header.base_offset, header.max_timestamp
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
                index.flush(fsync=True)

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
