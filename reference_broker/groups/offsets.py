"""Committed offsets, kept durable in an append-only log as Kafka keeps ``__consumer_offsets``.

Every commit appends one RecordBatch v2 to the broker's own offsets partition, one record per
partition committed; the in-memory dict answers fetches. At start-up the log is replayed and the
last record for a key wins, which is what Kafka's compacted topic guarantees too.

Record encoding (big-endian; our own format, not Kafka's, but versioned the same way so a later
change can be read next to old records):

    key   = version:u8 (1) | group:u16-length utf-8 | topic:u16-length utf-8 | partition:i32
    value = version:u8 (1) | offset:i64 | commit_timestamp_ms:i64 | metadata:i32-length utf-8

Values are never null: there is no offset deletion. Durability is the offsets log's fsync
policy, the same as for produced records (Kafka, too, acknowledges a commit once it is in the
log, not once it is on the platter).
"""

import logging
import struct
import time
from dataclasses import dataclass

from reference_broker.errors import ErrorCode
from reference_broker.log.errors import RecordListTooLarge
from reference_broker.log.partition import PartitionLog
from reference_broker.record_codec import build_batch, iter_records
from reference_broker.records import CompressionUnavailable, InvalidBatch, Record, read_header

OFFSETS_TOPIC = "__consumer_offsets"
"""The internal topic committed offsets live in (the broker creates it; clients may not write)."""

log = logging.getLogger(__name__)

KEY_VERSION = 1
VALUE_VERSION = 1
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_VALUE_HEAD = struct.Struct(">Bqqi")  # version, offset, commit timestamp, metadata length


@dataclass(frozen=True)
class CommittedOffset:
    """A partition's committed position: the next offset the group will consume."""

    offset: int
    metadata: str
    commit_timestamp_ms: int


def encode_key(group_id: str, topic: str, partition: int) -> bytes:
    out = bytearray(_U8.pack(KEY_VERSION))
    for text in (group_id, topic):
        data = text.encode()
        out += _U16.pack(len(data)) + data
    return bytes(out + _I32.pack(partition))


def decode_key(key: bytes) -> tuple[str, str, int]:
    (version,) = _U8.unpack_from(key, 0)
    if version != KEY_VERSION:
        raise ValueError(f"offsets log: unknown key version {version}")
    pos = _U8.size
    texts = []
    for _ in range(2):
        (length,) = _U16.unpack_from(key, pos)
        pos += _U16.size
        texts.append(key[pos : pos + length].decode())
        pos += length
    (partition,) = _I32.unpack_from(key, pos)
    return texts[0], texts[1], partition


def encode_value(committed: CommittedOffset) -> bytes:
    metadata = committed.metadata.encode()
    head = _VALUE_HEAD.pack(
        VALUE_VERSION, committed.offset, committed.commit_timestamp_ms, len(metadata)
    )
    return head + metadata


def decode_value(value: bytes) -> CommittedOffset:
    version, offset, timestamp, length = _VALUE_HEAD.unpack_from(value, 0)
    if version != VALUE_VERSION:
        raise ValueError(f"offsets log: unknown value version {version}")
    metadata = value[_VALUE_HEAD.size : _VALUE_HEAD.size + length].decode()
    return CommittedOffset(offset, metadata, timestamp)


class OffsetStore:
    """Committed offsets of every group, replayed from ``log`` when constructed."""

    def __init__(self, offsets_log: PartitionLog) -> None:
        self._log = offsets_log
        self._offsets: dict[str, dict[tuple[str, int], CommittedOffset]] = {}
        self.skipped_records = 0
        self.load()

    def load(self) -> None:
        """Rebuild the in-memory view from the log (last write wins); safe to call again.

        A record that is not a commit (a client's write from before produce to internal
        topics was refused, a damaged batch) is skipped and counted in ``skipped_records``,
        with one warning: the broker must start, and the other groups' offsets are intact.
        """
        self._offsets.clear()
        self.skipped_records = 0
        first_problem = ""
        for batch in self._log.read_batches(0):
            try:
                records = list(iter_records(batch))
            except (InvalidBatch, CompressionUnavailable) as exc:
                header = read_header(batch)
                self.skipped_records += header.record_count
                first_problem = first_problem or f"batch at offset {header.base_offset}: {exc}"
                continue
            for record in records:
                try:
                    self._apply(record)
                except (ValueError, struct.error) as exc:
                    self.skipped_records += 1
                    first_problem = first_problem or f"record {record.offset}: {exc}"
        if self.skipped_records:
            log.warning(
                "offsets log %r: skipped %d records that are not commits; first: %s",
                self._log,
                self.skipped_records,
                first_problem,
            )

    def _apply(self, record: Record) -> None:
        if record.key is None or record.value is None:
            raise ValueError("key or value is null")
        group_id, topic, partition = decode_key(record.key)
        self._group(group_id)[(topic, partition)] = decode_value(record.value)

    def commit(self, group_id: str, offsets: list[tuple[str, int, int, str]]) -> ErrorCode:
        """Append ``(topic, partition, offset, metadata)`` commits as one batch, then apply
        them; on failure nothing is applied, so fetches never show what the log lacks.

        Log errors map as Kafka maps them for OffsetCommit: a batch too large for the log ->
        INVALID_COMMIT_OFFSET_SIZE; a storage failure -> NOT_COORDINATOR (the client looks the
        coordinator up again and retries).
        """
        now_ms = int(time.time() * 1000)
        entries = [
            ((topic, partition), CommittedOffset(offset, metadata, now_ms))
            for topic, partition, offset, metadata in offsets
        ]
        batch = build_batch(
            [(encode_key(group_id, *key), encode_value(c)) for key, c in entries],
            base_timestamp=now_ms,
        )
        try:
            self._log.append(batch)
        except RecordListTooLarge:
            return ErrorCode.INVALID_COMMIT_OFFSET_SIZE
        except InvalidBatch as exc:
            if exc.error_code is not ErrorCode.MESSAGE_TOO_LARGE:
                raise  # we built this batch: anything else is a bug, not the client's problem
            return ErrorCode.INVALID_COMMIT_OFFSET_SIZE
        except OSError:
            log.exception("committing offsets of group %r to %r failed", group_id, self._log)
            return ErrorCode.NOT_COORDINATOR
        self._group(group_id).update(entries)
        return ErrorCode.NONE

    def group_offsets(self, group_id: str) -> dict[tuple[str, int], CommittedOffset]:
        """``(topic, partition) -> CommittedOffset`` of one group (a copy)."""
        return dict(self._offsets.get(group_id, {}))

    def groups(self) -> list[str]:
        """Groups with at least one committed offset."""
        return list(self._offsets)

    def _group(self, group_id: str) -> dict[tuple[str, int], CommittedOffset]:
        return self._offsets.setdefault(group_id, {})
