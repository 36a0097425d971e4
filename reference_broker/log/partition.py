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
from itertools import pairwise
from pathlib import Path
from typing import NoReturn

from reference_broker.log.config import INT32_MAX, LogConfig
from reference_broker.log.errors import KafkaStorageError, OffsetOutOfRange, RecordListTooLarge
from reference_broker.log.files import fsync_directory, replace_file
from reference_broker.log.producer_state import ProducerStates
from reference_broker.log.recovery import (
    Hole,
    RecoveryReport,
    read_offset_checkpoint,
    write_recovery_point,
)
from reference_broker.log.segment import Segment, SegmentMark, wall_clock_ms
from reference_broker.log.slices import AppendResult, FileSlice, ReadResult
from reference_broker.log.startup import open_segments
from reference_broker.records import BatchHeader, read_header, set_base_offset, validate_batches

log = logging.getLogger(__name__)

LOG_START_FILE = "log-start-offset-checkpoint"
"""Where DeleteRecords' log start offset is kept (Kafka keeps one such file per log dir)."""

CLEAN_SHUTDOWN_MARKER = ".clean_shutdown"
STORAGE_ERROR_LOG_INTERVAL_S = 60


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

        ``topic`` and ``partition`` default to the ``<topic>-<partition>`` directory name.
        Segments wholly below the recovery point (or all, after a clean shutdown) get the cheap
        check of their last batches; the others are scanned and CRC-checked. A damaged segment
        is truncated at its first invalid byte and the later segments are kept (see
        ``recovery_report``). The producer state is then loaded from its newest snapshot and
        the batch headers after it.
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
        self.recovery_report = RecoveryReport(self.directory)
        self.producer_states = ProducerStates(self.directory)
        self.storage_errors = 0
        """Appends refused by the disk (ENOSPC, EIO) since the log was opened."""
        self._last_storage_log = -STORAGE_ERROR_LOG_INTERVAL_S
        self._offline: str | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        marker = self.directory / CLEAN_SHUTDOWN_MARKER
        clean = marker.exists()
        self._segments = open_segments(
            self.directory, config.index_interval_bytes, self.recovery_report, clean=clean
        ) or [self._new_segment(0)]
        self._records_deleted_below = read_offset_checkpoint(self.directory / LOG_START_FILE)
        self._load_producer_states()
        if clean:
            marker.unlink()
            fsync_directory(self.directory)

    def _new_segment(self, base_offset: int) -> Segment:
        return Segment.create(
            self.directory, base_offset, self.config.index_interval_bytes, self.recovery_report
        )

    def _load_producer_states(self) -> None:
        """Load the newest snapshot not above any truncation, replay the headers after it."""
        lost = [t.first_lost_offset for t in self.recovery_report.truncations]
        start = self.producer_states.load(upto=min([self.log_end_offset, *lost]))
        for segment in self._segments:
            if segment.next_offset > start:
                for _, header in segment.headers():
                    if header.base_offset >= start:
                        self.producer_states.replay(header)
        self.producer_states.evict_below(self.log_start_offset)

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
        """The oldest segment's base, or above it where DeleteRecords moved it (at most the
        log end, which recovery may have cut below it)."""
        start = max(self._segments[0].base_offset, self._records_deleted_below)
        return min(start, self._active.next_offset)

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

    @property
    def holes(self) -> list[Hole]:
        """Offset ranges between segments that no batch holds (left by damage)."""
        return [
            Hole(before.next_offset, after.base_offset)
            for before, after in pairwise(self._segments)
            if before.next_offset < after.base_offset
        ]

    @property
    def offline(self) -> str | None:
        """Why appends are refused until a restart (a failed append could not be undone)."""
        return self._offline

    # --- append --------------------------------------------------------------------------------

    def append(
        self, records: bytes | bytearray | memoryview, *, leader_epoch: int = 0
    ) -> AppendResult:
        """Validate a produce request's batches, give them offsets, append them in one write.

        Nothing is written if any batch is invalid (InvalidBatch), the request is larger than
        a segment (RecordListTooLarge) or an idempotent producer's sequence or epoch is wrong
        (OutOfOrderSequence, InvalidProducerEpoch); a retry of batches already in the log is
        answered with their offsets (``duplicate``). An append is all or nothing: if the disk
        fails any part of it (write, index entry, sync) it is rolled back and
        KafkaStorageError raised. The base offsets and leader epoch are written into
        ``records`` itself when it is writable (the request frame, which nothing reads after
        the append), else into a copy: the bytes go to the page cache as they arrived.
        """
        if self._offline is not None:
            raise KafkaStorageError(self._offline)
        view = memoryview(records)
        headers = validate_batches(view, self.config.max_message_bytes)
        size = len(view)
        if size > self.config.segment_bytes:
            raise RecordListTooLarge(
                f"{size} bytes of records exceed segment.bytes {self.config.segment_bytes}"
            )
        duplicate = self.producer_states.find_duplicate(headers)
        if duplicate is not None:
            return AppendResult(duplicate.base_offset, duplicate.last_offset, 0, 0, 0, True)
        data = bytearray(view) if view.readonly else view
        base_offset = offset = self.log_end_offset
        position = 0
        stamped = []
        for header in headers:
            set_base_offset(data, position, offset, leader_epoch)
            stamped.append(read_header(data, position))
            offset += header.record_count
            position += header.size
        producers = self.producer_states.check(stamped)
        max_timestamp = max(header.max_timestamp for header in headers)
        if self._should_roll(size, offset - 1, max_timestamp):
            self.roll()
        active = self._active
        mark = active.mark()
        try:
            active.append(data, stamped)
            self._sync_per_policy()
        except OSError as exc:
            self._undo(active, mark, f"append of {size} bytes at offset {base_offset}", exc)
        self.producer_states.apply(producers)
        return AppendResult(base_offset, offset - 1, size, len(headers), offset - base_offset)

    def _undo(self, segment: Segment, mark: SegmentMark, what: str, exc: OSError) -> NoReturn:
        """Roll a failed append back; if even that fails, take the partition offline."""
        try:
            segment.rollback(mark)
        except OSError as undo_exc:
            self._offline = (
                f"{self.topic}-{self.partition} is offline until restart: {what} failed "
                f"({exc}) and could not be rolled back ({undo_exc})"
            )
            log.error("%s", self._offline)
            raise KafkaStorageError(self._offline) from exc
        self._storage_error(f"{what} failed and was rolled back", exc)

    def _storage_error(self, what: str, exc: OSError) -> NoReturn:
        """Count the failure, log it at most once per interval, raise KafkaStorageError."""
        self.storage_errors += 1
        message = f"{self.topic}-{self.partition}: {what}: {exc.strerror or exc}"
        now = time.monotonic()
        if now - self._last_storage_log >= STORAGE_ERROR_LOG_INTERVAL_S:
            self._last_storage_log = now
            log.error(
                "%s (%d storage errors on this partition so far; next report in %ds at most)",
                message,
                self.storage_errors,
                STORAGE_ERROR_LOG_INTERVAL_S,
            )
        raise KafkaStorageError(message) from exc

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

        Unless fsync is "never", the sealed segment is synced first. Then the producer state
        snapshot and the recovery point move to the new segment's base: after a crash only
        segments from there on are scanned, and only their headers replayed. KafkaStorageError
        if the disk refuses the sync or the new files; the log is unchanged then.
        """
        if self._active.size == 0:
            return
        sync = self.config.fsync != "never"
        end = self.log_end_offset
        try:
            if sync:
                self._active.flush()
            self.producer_states.write_snapshot(end, fsync=sync)
            self._segments.append(self._new_segment(end))
            if sync:
                fsync_directory(self.directory)
        except OSError as exc:
            self._storage_error(f"roll to a new segment at offset {end}", exc)
        write_recovery_point(self.directory, end, fsync=sync)

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
        """(segment index, position, header) of the batch holding ``offset``, or of the first
        batch after it when ``offset`` falls in a hole left by damage (as Kafka reads past
        gaps: a consumer skips to the next offset that exists); None past the last batch."""
        first = max(0, bisect_right(self._segments, offset, key=lambda s: s.base_offset) - 1)
        for index in range(first, len(self._segments)):
            found = self._segments[index].find(offset)
            if found is not None:
                return index, *found
        return None

    def _distance_to_end(self, index: int, position: int) -> int:
        return sum(s.size for s in self._segments[index:]) - position

    def size_from(self, offset: int) -> int:
        """Bytes from the batch holding ``offset`` to the log end: a consumer's lag in bytes.

        Offsets below the log start count the whole log; at or past the end, 0.
        """
        if offset >= self.log_end_offset:
            return 0
        found = self._find(max(offset, self.log_start_offset))
        if found is None:  # in a hole at the end of the log
            return 0
        index, position, _ = found
        return self._distance_to_end(index, position)

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record whose timestamp is >= ``timestamp``, at or
        after the log start (records below it that DeleteRecords left in a segment are gone).

        None if no record is that recent (see ``Segment.find_timestamp``). ListOffsets' special
        timestamps (-1 latest, -2 earliest) are the caller's: log_end_offset, log_start_offset.
        """
        for segment in self._segments:
            found = segment.find_timestamp(timestamp, self.log_start_offset)
            if found is not None:
                return found
        return None

    def offset_of_max_timestamp(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with the largest timestamp in the log
        (ListOffsets' -3, KIP-734), or None when no record has a timestamp."""
        largest = max(segment.max_timestamp for segment in self._segments)
        return self.offset_for_timestamp(largest) if largest >= 0 else None

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

    def delete_records(self, offset: int) -> int:
        """DeleteRecords: move the log start offset up to ``offset`` (-1: the high watermark)
        and return the new log start (the "low watermark").

        Raises OffsetOutOfRange for an offset above the high watermark or below -1; an offset
        at or below the log start changes nothing. The new start is saved (fsync) before the
        answer, so it survives a crash; segments wholly below it are deleted as retention
        deletes them. Fetches below it get OFFSET_OUT_OF_RANGE; a batch that straddles it is
        still sent whole (consumers skip the records below their fetch offset).
        """
        target = self.high_watermark if offset == -1 else offset
        if not 0 <= target <= self.high_watermark:
            raise OffsetOutOfRange(offset, self.log_start_offset, self.high_watermark)
        if target <= self.log_start_offset:
            return self.log_start_offset
        try:
            replace_file(self.directory / LOG_START_FILE, f"{target}\n", fsync=True)
        except OSError as exc:
            self._storage_error("saving the log start offset", exc)
        self._records_deleted_below = target
        now = wall_clock_ms()
        while len(self._segments) > 1 and self._segments[1].base_offset <= target:
            self._delete_oldest(now)
        self.producer_states.evict_below(self.log_start_offset)
        return self.log_start_offset

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
                    try:
                        self.roll()
                    except KafkaStorageError:
                        break  # the disk is full: delete it on a later pass
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
        self.producer_states.evict_below(self.log_start_offset)
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
        """fsync every segment with unsynced appends, and their indexes.

        Acknowledged appends cannot be rolled back, so a failed sync takes the partition
        offline (as Kafka takes a log dir offline): no append until a restart recovers it.
        """
        try:
            for segment in self._segments:
                segment.flush()
        except OSError as exc:
            self._offline = f"{self.topic}-{self.partition} is offline until restart: {exc}"
            log.error("%s", self._offline)
            return
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Flush, save the producer state and the recovery point, close every file, and leave
        the clean-shutdown marker for the next open (not if the partition went offline)."""
        self.flush()
        if self._offline is None:
            self.producer_states.write_snapshot(self.log_end_offset, fsync=True)
            write_recovery_point(self.directory, self.log_end_offset, fsync=True)
        for segment in self._segments:
            segment.close()
        self._close_deleted(None)
        if self._offline is None:
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
