"""One partition's log: a directory of segments, appended at the end, read by file slices.

This is the part of the broker the seed article is about. Produce appends each request's batches
to the active segment with one sequential write; fetch answers with a `FileSlice` the transport
ships with ``os.sendfile``, so record bytes reach the socket from the page cache without ever
entering Python. There is one replica, so the high watermark is the log end offset.
"""

import logging
import os
import time
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from io import FileIO
from pathlib import Path

from reference_broker.log.config import INT32_MAX, LogConfig
from reference_broker.log.errors import OffsetOutOfRange, RecordListTooLarge
from reference_broker.log.segment import DELETED_SUFFIX, Segment, wall_clock_ms
from reference_broker.records import BatchHeader, read_header, set_base_offset, validate_batches

log = logging.getLogger(__name__)

CLEAN_SHUTDOWN_MARKER = ".clean_shutdown"
_INDEX_SUFFIXES = (".index", ".timeindex")


@dataclass(frozen=True)
class AppendResult:
    base_offset: int
    last_offset: int
    size: int
    batch_count: int
    record_count: int


@dataclass(frozen=True)
class FileSlice:
    """Bytes of one segment file to ship with ``os.sendfile(out, file.fileno(), position, length)``.

    ``file`` stays open while the segment is deleted by retention (renamed ``.deleted``, closed
    only after file_delete_delay_ms), so a slice taken before the deletion still reads.
    ``base_offset`` and ``path`` name the segment for diagnostics.
    """

    file: FileIO
    position: int
    length: int
    base_offset: int
    path: Path


@dataclass(frozen=True)
class ReadResult:
    """A fetch's answer for one partition.

    ``first_offset`` is the base offset of the first batch in the slice (it may be below the
    requested offset: clients skip the records they did not ask for). ``tail_distance`` is the
    number of bytes from the start of the slice to the end of the log across segments: 0 reads
    the tail, large values replay history that is likely no longer in the page cache.
    """

    slice: FileSlice | None
    high_watermark: int
    log_start_offset: int
    first_offset: int
    tail_distance: int


class PartitionLog:
    """A partition's segments on disk, with Kafka's append, read, retention and recovery."""

    def __init__(
        self,
        directory: Path | str,
        config: LogConfig,
        *,
        topic: str | None = None,
        partition: int | None = None,
    ) -> None:
        """Open the log in ``directory`` (created if needed), recovering it if needed.

        ``topic`` and ``partition`` default to the ``<topic>-<partition>`` directory name. Without
        the clean-shutdown marker the active segment is scanned and CRC-checked, and the log is
        truncated at its first invalid byte; other segments (synced when they were rolled unless
        fsync is "never") only get the cheap index check and are recovered if they fail it.
        """
        self.directory = Path(directory)
        name, _, number = self.directory.name.rpartition("-")
        if not (name and number.isdigit()):
            name, number = self.directory.name, "0"
        self.topic = name if topic is None else topic
        self.partition = int(number) if partition is None else partition
        self.config = config
        self._deleted: list[tuple[int, Segment]] = []  # (close-after ms, renamed segment)
        self._last_sync = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        marker = self.directory / CLEAN_SHUTDOWN_MARKER
        clean = marker.exists()
        self._segments = self._open_segments(clean)
        if clean:
            marker.unlink()
            fsync_directory(self.directory)

    def _open_segments(self, clean: bool) -> list[Segment]:
        for path in self.directory.iterdir():
            if path.name.endswith(DELETED_SUFFIX) or (
                path.suffix in _INDEX_SUFFIXES and not path.with_suffix(".log").exists()
            ):
                path.unlink()  # left by an earlier run: deleted segments, orphan indexes
        bases = sorted(
            int(path.stem)
            for path in self.directory.glob("*.log")
            if len(path.stem) == 20 and path.stem.isdigit()
        )
        segments: list[Segment] = []
        interval = self.config.index_interval_bytes
        for i, base in enumerate(bases):
            is_active = i == len(bases) - 1
            if segments and base != segments[-1].next_offset:
                self._discard_from(bases[i:], f"offset gap before segment {base}")
                break
            segment, truncated = Segment.open(
                self.directory, base, interval, recover=not clean and is_active
            )
            segments.append(segment)
            if truncated and not is_active:
                self._discard_from(bases[i + 1 :], f"segment {base} was truncated")
                break
        if not segments:
            return [Segment.create(self.directory, 0, interval)]
        if not clean and segments[-1].base_offset != bases[-1]:
            segments[-1].recover()  # a hole made a sealed, unscanned segment the active one
        return segments

    def _discard_from(self, bases: list[int], reason: str) -> None:
        """Delete segments that follow a hole in the log: their offsets can no longer follow."""
        log.warning("%s: %s; deleting segments from %d on", self.directory, reason, bases[0])
        for base in bases:
            for suffix in (".log", *_INDEX_SUFFIXES):
                (self.directory / f"{base:020d}{suffix}").unlink(missing_ok=True)

    # --- state ---------------------------------------------------------------------------------

    @property
    def segments(self) -> list[Segment]:
        """The live segments, oldest first (each with base_offset, path, size)."""
        return list(self._segments)

    @property
    def _active(self) -> Segment:
        return self._segments[-1]

    @property
    def log_start_offset(self) -> int:
        return self._segments[0].base_offset

    @property
    def log_end_offset(self) -> int:
        return self._active.next_offset

    @property
    def high_watermark(self) -> int:
        """One replica: every appended record is committed, so the high watermark is the end."""
        return self.log_end_offset

    @property
    def size_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    # --- append --------------------------------------------------------------------------------

    def append(self, records: bytes | memoryview, *, leader_epoch: int = 0) -> AppendResult:
        """Validate a produce request's batches, give them offsets, append them in one write.

        Nothing is written if any batch is invalid (InvalidBatch) or the request is larger than
        a segment (RecordListTooLarge). The bytearray copy is the only one: the base offsets and
        leader epoch have to be written somewhere before the bytes go to the page cache.
        """
        view = memoryview(records)
        headers = validate_batches(view, self.config.max_message_bytes)
        size = len(view)
        if size > self.config.segment_bytes:
            raise RecordListTooLarge(
                f"{size} bytes of records exceed segment.bytes {self.config.segment_bytes}"
            )
        data = bytearray(view)
        base_offset = offset = self.log_end_offset
        position = 0
        stamped = []
        for header in headers:
            set_base_offset(data, position, offset, leader_epoch)
            stamped.append(read_header(data, position))
            offset += header.record_count
            position += header.size
        max_timestamp = max(header.max_timestamp for header in headers)
        if self._should_roll(size, offset - 1, max_timestamp):
            self.roll()
        self._active.append(data, stamped)
        self._sync_per_policy()
        return AppendResult(base_offset, offset - 1, size, len(headers), offset - base_offset)

    def _should_roll(self, size: int, last_offset: int, max_timestamp: int) -> bool:
        """Kafka's roll rules for a non-empty active segment.

        Roll if the append would take it past segment.bytes, if relative offsets would overflow
        int32, or if segment.ms has passed: measured as Kafka does, from the segment's first
        batch timestamp to the new batches' max timestamp (the wall clock since the segment was
        created or opened when there are no timestamps).
        """
        active = self._active
        if active.size == 0:
            return False
        if active.first_batch_timestamp >= 0 and max_timestamp >= 0:
            waited = max_timestamp - active.first_batch_timestamp
        else:
            waited = wall_clock_ms() - active.created_ms
        return (
            active.size + size > self.config.segment_bytes
            or last_offset - active.base_offset > INT32_MAX
            or waited > self.config.segment_ms
        )

    def _sync_per_policy(self) -> None:
        policy = self.config.fsync
        if policy == "never":
            return
        now = time.monotonic()
        if policy == "always" or (now - self._last_sync) * 1000 >= self.config.fsync_interval_ms:
            self._active.flush(indexes=False)  # indexes are rebuilt by recovery
            self._last_sync = now

    def roll(self) -> None:
        """Start a new active segment at the log end offset (no-op if the active one is empty).

        Unless fsync is "never", the sealed segment is synced first: recovery after a crash
        then only needs to scan the active segment.
        """
        if self._active.size == 0:
            return
        if self.config.fsync != "never":
            self._active.flush()
        self._segments.append(
            Segment.create(self.directory, self.log_end_offset, self.config.index_interval_bytes)
        )
        if self.config.fsync != "never":
            fsync_directory(self.directory)

    # --- read ----------------------------------------------------------------------------------

    def read(
        self, offset: int, max_bytes: int, *, max_position_offset: int | None = None
    ) -> ReadResult:
        """A slice of one segment starting at the batch that holds ``offset``.

        Raises OffsetOutOfRange below the log start or above the log end; at the log end (or at
        or past ``max_position_offset``, an exclusive bound at a batch boundary such as a high
        watermark snapshot) the slice is None. Length, as Kafka's LogSegment.read: the bytes up
        to the segment end (or the bound), at most ``max_bytes``, except that the first batch is
        always whole (KIP-74). So the last batch may be cut at ``max_bytes``; clients ignore a
        partial batch at the end of a response. Only batch headers are read from the file.
        """
        start, end = self.log_start_offset, self.log_end_offset
        if not start <= offset <= end:
            raise OffsetOutOfRange(offset, start, end)
        bound = end if max_position_offset is None else min(end, max_position_offset)
        found = self._find(offset) if offset < bound else None
        if found is None:
            return ReadResult(None, end, start, offset, self.size_from(offset))
        index, position, header = found
        segment = self._segments[index]
        stop = segment.size
        bound_batch = segment.find(bound) if bound < segment.next_offset else None
        if bound_batch is not None:
            stop = bound_batch[0]
        if stop - position < header.size:  # the bound cuts the first batch: nothing to send
            return ReadResult(None, end, start, offset, self.size_from(offset))
        length = min(stop - position, max(max_bytes, header.size))
        return ReadResult(
            FileSlice(segment.file, position, length, segment.base_offset, segment.path),
            end,
            start,
            header.base_offset,
            self._distance_to_end(index, position),
        )

    def _find(self, offset: int) -> tuple[int, int, BatchHeader] | None:
        """(segment index, position, header) of the batch holding ``offset``, if any."""
        index = bisect_right(self._segments, offset, key=lambda s: s.base_offset) - 1
        if index < 0:
            return None
        found = self._segments[index].find(offset)
        return None if found is None else (index, *found)

    def _distance_to_end(self, index: int, position: int) -> int:
        return sum(s.size for s in self._segments[index:]) - position

    def size_from(self, offset: int) -> int:
        """Bytes from the batch holding ``offset`` to the log end: a consumer's lag in bytes.

        Offsets below the log start count the whole log; at or past the end, 0.
        """
        if offset >= self.log_end_offset:
            return 0
        found = self._find(max(offset, self.log_start_offset))
        assert found is not None, "an offset inside the log is in some batch"
        index, position, _ = found
        return self._distance_to_end(index, position)

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record whose timestamp is >= ``timestamp``.

        None if no record is that recent (see ``Segment.find_timestamp``). ListOffsets' special
        timestamps (-1 latest, -2 earliest) are the caller's: log_end_offset, log_start_offset.
        """
        for segment in self._segments:
            found = segment.find_timestamp(timestamp)
            if found is not None:
                return found
        return None

    def read_batches(self, from_offset: int = 0) -> Iterator[bytes]:
        """Whole batches from the one holding ``from_offset`` (or the log start) to the end.

        Reads record bytes into memory: meant for replaying small internal topics such as the
        committed offsets at start-up, never for fetches.
        """
        found = self._find(max(from_offset, self.log_start_offset))
        if found is None:
            return
        index, position, _ = found
        for segment in self._segments[index:]:
            for batch_position, header in segment.headers(position):
                yield segment.read_bytes(batch_position, header.size)
            position = 0

    # --- retention, flush, close ---------------------------------------------------------------

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Delete the oldest segments past retention.ms or retention.bytes; return how many.

        Time: oldest first, while a segment's largest timestamp is more than retention.ms old;
        that may include the active segment (Kafka's rule), which is rolled first so the log
        keeps an (empty) active segment at its end offset. Bytes: oldest non-active segments
        while the log without that segment is still >= retention.bytes. The log start offset
        becomes the base offset of the oldest remaining segment. Deleted segments are renamed
        ``.deleted`` and closed after file_delete_delay_ms, on a later pass or at close().
        """
        now = wall_clock_ms() if now_ms is None else now_ms
        deleted = 0
        if self.config.retention_ms >= 0:
            while (
                self._segments[0].size > 0
                and now - self._segments[0].largest_timestamp > self.config.retention_ms
            ):
                if len(self._segments) == 1:
                    self.roll()
                self._delete_oldest(now)
                deleted += 1
        if self.config.retention_bytes >= 0:
            excess = self.size_bytes - self.config.retention_bytes
            while len(self._segments) > 1 and excess >= self._segments[0].size:
                excess -= self._segments[0].size
                self._delete_oldest(now)
                deleted += 1
        self._close_deleted(now)
        return deleted

    def _delete_oldest(self, now_ms: int) -> None:
        segment = self._segments.pop(0)
        segment.mark_deleted()
        self._deleted.append((now_ms + self.config.file_delete_delay_ms, segment))
        log.info(
            "%s: deleted segment %d, log start offset now %d",
            self.directory,
            segment.base_offset,
            self.log_start_offset,
        )

    def _close_deleted(self, now_ms: int | None) -> None:
        """Close and unlink deleted segments whose delay has passed (all if ``now_ms`` is None)."""
        keep = []
        for due, segment in self._deleted:
            if now_ms is None or now_ms >= due:
                segment.delete()
            else:
                keep.append((due, segment))
        self._deleted = keep

    def flush(self) -> None:
        """fsync every segment with unsynced appends, and their indexes."""
        for segment in self._segments:
            segment.flush()
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Flush, close every file and leave the clean-shutdown marker for the next open."""
        self.flush()
        for segment in self._segments:
            segment.close()
        self._close_deleted(None)
        marker = self.directory / CLEAN_SHUTDOWN_MARKER
        with open(marker, "wb") as file:
            os.fsync(file.fileno())
        fsync_directory(self.directory)

    def __repr__(self) -> str:
        return (
            f"PartitionLog({self.topic}-{self.partition}, "
            f"offsets [{self.log_start_offset}, {self.log_end_offset}), "
            f"{len(self._segments)} segments)"
        )


def fsync_directory(directory: Path) -> None:
    """Make renames, creations and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
