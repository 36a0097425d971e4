"""Committed offsets, kept durable in ``__consumer_offsets`` in Kafka's own record layout.

Every commit appends one RecordBatch v2 to the group's offsets partition (Kafka's rule:
``partition_for``), one record per partition committed; deletions append tombstones (null
values). The in-memory dict answers fetches. At start-up every partition is replayed and the
last record for a key wins, which is what Kafka's compacted topic guarantees too. The record
layouts are in ``offset_records``.

Migration: a log written by an older broker holds records in its private layout. Replay reads
them too, and every commit whose newest record is in that layout is appended again in Kafka's
layout (keeping its commit time), so tools reading the topic see every group. The old records
stay in the log, never rewritten: a crash during the migration loses nothing, and the next
start finishes it.

Durability is the offsets log's fsync policy, the same as for produced records (Kafka, too,
acknowledges a commit once it is in the log, not once it is on the platter).
"""

import logging
import time
from collections.abc import Callable, Sequence

from reference_broker.errors import ErrorCode
from reference_broker.groups.offset_records import (
    BadOffsetRecord,
    CommittedOffset,
    GroupKey,
    Layout,
    OffsetKey,
    decode_key,
    decode_value,
    encode_commit_key,
    encode_commit_value,
    partition_for,
)
from reference_broker.log.errors import RecordListTooLarge
from reference_broker.log.partition import PartitionLog
from reference_broker.log.store import LogStore
from reference_broker.record_codec import build_batch, iter_records
from reference_broker.records import CompressionUnavailable, InvalidBatch, Record, read_header

OFFSETS_TOPIC = "__consumer_offsets"
"""The internal topic committed offsets live in (the broker creates it; clients may not write)."""

log = logging.getLogger(__name__)

Offsets = dict[tuple[str, int], CommittedOffset]


def open_offset_store(store: LogStore, partitions: int) -> "OffsetStore":
    """The offset store over ``__consumer_offsets``. An existing topic is opened and replayed
    now and keeps its partition count, as in Kafka, where changing it would move groups to
    other partitions. An absent one is created with ``partitions`` partitions when first
    needed (``OffsetStore.create_topic``), as Kafka creates it at the first FindCoordinator
    rather than at start: a broker on a new log dir starts without making 50 partitions."""

    def offsets_logs() -> list[PartitionLog]:
        if OFFSETS_TOPIC not in store.topics():
            # Committed offsets must outlive a broker-wide retention.bytes (Kafka compacts
            # this topic; our log only deletes whole segments, so it keeps them all by size).
            store.create_topic(OFFSETS_TOPIC, partitions, {"retention.bytes": "-1"})
        logs = [store.partition(OFFSETS_TOPIC, i) for i in range(store.topics()[OFFSETS_TOPIC])]
        return [each for each in logs if each is not None]

    if OFFSETS_TOPIC in store.topics():
        return OffsetStore(offsets_logs())
    return OffsetStore([], create_logs=offsets_logs)


class OffsetStore:
    """Committed offsets of every group, replayed from the offsets partitions when made."""

    def __init__(
        self,
        offsets_logs: Sequence[PartitionLog],
        create_logs: Callable[[], Sequence[PartitionLog]] | None = None,
    ) -> None:
        """``offsets_logs`` are the topic's partitions; for a topic not created yet they are
        empty and ``create_logs`` makes them, once, when ``create_topic`` is first called."""
        self._logs = list(offsets_logs)
        self._create_logs = create_logs
        self._offsets: dict[str, Offsets] = {}
        self.skipped_records = 0
        self.migrated_offsets = 0
        self.load()

    def load(self) -> None:
        """Rebuild the in-memory view from the logs (last write wins), migrating commits whose
        newest record is in the old layout; safe to call again.

        A record that is not a commit (a client's write from before produce to internal
        topics was refused, a damaged batch) is skipped and counted in ``skipped_records``,
        with one warning naming the first: the broker must start, the other groups' offsets
        are intact, and the record stays in the log for whoever wants to inspect it.
        """
        self._offsets.clear()
        self.skipped_records = 0
        legacy: dict[OffsetKey, CommittedOffset] = {}
        kafka_keys: set[OffsetKey] = set()
        first_problem = ""
        for partition_log in self._logs:
            for batch in partition_log.read_batches(0):
                try:
                    records = list(iter_records(batch))
                except (InvalidBatch, CompressionUnavailable) as exc:
                    header = read_header(batch)
                    self.skipped_records += header.record_count
                    where = f"{partition_log!r} batch at offset {header.base_offset}"
                    first_problem = first_problem or f"{where}: {exc}"
                    continue
                for record in records:
                    try:
                        self._apply(record, legacy, kafka_keys)
                    except BadOffsetRecord as exc:
                        self.skipped_records += 1
                        where = f"{partition_log!r} record {record.offset}"
                        first_problem = first_problem or f"{where}: {exc}"
        if self.skipped_records:
            log.warning(
                "offsets log: skipped %d records that are not commits; first: %s",
                self.skipped_records,
                first_problem,
            )
        self._migrate({key: c for key, c in legacy.items() if key not in kafka_keys})

    def _apply(
        self, record: Record, legacy: dict[OffsetKey, CommittedOffset], kafka_keys: set[OffsetKey]
    ) -> None:
        if record.key is None:
            raise BadOffsetRecord("the key is null")
        layout, key = decode_key(record.key)
        if isinstance(key, GroupKey):
            return  # group metadata: this broker keeps group membership in memory only
        if layout is Layout.LEGACY:
            if record.value is None:
                raise BadOffsetRecord("an old-layout record has a null value")
            legacy[key] = decode_value(record.value, layout)
            return
        kafka_keys.add(key)
        group = self._group(key.group_id)
        if record.value is None:
            group.pop((key.topic, key.partition), None)
        else:
            group[(key.topic, key.partition)] = decode_value(record.value, layout)

    def _migrate(self, pending: dict[OffsetKey, CommittedOffset]) -> None:
        """Write old-layout commits again in Kafka's layout, one batch per group."""
        by_group: dict[str, Offsets] = {}
        for key, committed in pending.items():
            by_group.setdefault(key.group_id, {})[(key.topic, key.partition)] = committed
        for group_id, offsets in by_group.items():
            error = self._append(group_id, offsets, deleted=[])
            if error is not ErrorCode.NONE:
                # Served from memory all the same; the next start tries again from the old
                # records, which are still there.
                log.error("offsets of group %r stay in the old layout: %s", group_id, error.name)
                self._group(group_id).update(offsets)
        self.migrated_offsets = len(pending)
        if pending:
            log.warning(
                "offsets log: migrated %d committed offsets of %d groups to Kafka's layout",
                len(pending),
                len(by_group),
            )

    def create_topic(self) -> None:
        """Create the offsets topic if it does not exist yet: Kafka creates it when a client
        looks for a group's coordinator or names the topic in a Metadata request, and the
        first commit needs it too. Raises OSError when the log cannot create it."""
        if self._create_logs is not None:
            self._logs = list(self._create_logs())
            self._create_logs = None

    def commit(self, group_id: str, offsets: list[tuple[str, int, int, str]]) -> ErrorCode:
        """Append ``(topic, partition, offset, metadata)`` commits as one batch, then apply
        them; on failure nothing is applied, so fetches never show what the log lacks.

        Log errors map as Kafka maps them for OffsetCommit: a batch too large for the log ->
        INVALID_COMMIT_OFFSET_SIZE; a storage failure -> NOT_COORDINATOR (the client looks the
        coordinator up again and retries).
        """
        now_ms = int(time.time() * 1000)
        entries = {
            (topic, partition): CommittedOffset(offset, metadata, now_ms)
            for topic, partition, offset, metadata in offsets
        }
        return self._append(group_id, entries, deleted=[])

    def delete(self, group_id: str, partitions: list[tuple[str, int]]) -> ErrorCode:
        """Delete committed offsets with tombstones, as Kafka's OffsetDelete and DeleteGroups
        do; errors as for ``commit``."""
        return self._append(group_id, {}, deleted=partitions)

    def _append(self, group_id: str, offsets: Offsets, deleted: list[tuple[str, int]]) -> ErrorCode:
        records: list[tuple[bytes, bytes | None]] = [
            (encode_commit_key(OffsetKey(group_id, *key)), encode_commit_value(c))
            for key, c in offsets.items()
        ]
        records += [(encode_commit_key(OffsetKey(group_id, *key)), None) for key in deleted]
        if not records:
            return ErrorCode.NONE
        try:
            self.create_topic()
        except OSError:
            log.exception("creating %s for group %r failed", OFFSETS_TOPIC, group_id)
            return ErrorCode.NOT_COORDINATOR
        partition_log = self._logs[partition_for(group_id, len(self._logs))]
        try:
            partition_log.append(build_batch(records, base_timestamp=int(time.time() * 1000)))
        except RecordListTooLarge:
            return ErrorCode.INVALID_COMMIT_OFFSET_SIZE
        except InvalidBatch as exc:
            if exc.error_code is not ErrorCode.MESSAGE_TOO_LARGE:
                raise  # we built this batch: anything else is a bug, not the client's problem
            return ErrorCode.INVALID_COMMIT_OFFSET_SIZE
        except OSError:
            log.exception("writing offsets of group %r to %r failed", group_id, partition_log)
            return ErrorCode.NOT_COORDINATOR
        group = self._group(group_id)
        group.update(offsets)
        for key in deleted:
            group.pop(key, None)
        if not group:
            del self._offsets[group_id]
        return ErrorCode.NONE

    def group_offsets(self, group_id: str) -> Offsets:
        """``(topic, partition) -> CommittedOffset`` of one group (a copy)."""
        return dict(self._offsets.get(group_id, {}))

    def groups(self) -> list[str]:
        """Groups with at least one committed offset."""
        return [group_id for group_id, offsets in self._offsets.items() if offsets]

    def _group(self, group_id: str) -> Offsets:
        return self._offsets.setdefault(group_id, {})
