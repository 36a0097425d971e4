"""The records of ``__consumer_offsets``: Kafka's own layout, and the broker's old private one.

Kafka's layout (``group-coordinator/src/main/resources/common/message/*.json``), so that tools
which read the topic directly (Burrow, kafka-console-consumer's offsets formatter) understand
it. Every key starts with an int16 that names the record type (Kafka calls it the key version):

    0, 1  offset commit: group string | topic string | partition int32   (OffsetCommitKey)
    2     group metadata: group string                                   (GroupMetadataKey)

An offset commit's value is an int16 version and the fields of that version of
OffsetCommitValue; a null value (a tombstone) deletes the committed offset. This broker writes
version 3 (offset int64 | leaderEpoch int32 | metadata string | commitTimestamp int64), the
newest non-flexible one, and reads versions 0 to 4 (Kafka 4.2 writes 4: the same fields with a
compact string and tagged fields). Strings are an int16 length and UTF-8.

The old private layout (brokers before this one wrote it; read only, to migrate it at start-up)
began every key and value with one byte, 1, which is how it is told apart: no Kafka record type
is above 255, so a Kafka key's first byte is always 0::

    key   = 1:u8 | group:u16-length utf-8 | topic:u16-length utf-8 | partition:i32
    value = 1:u8 | offset:i64 | commit_timestamp_ms:i64 | metadata:i32-length utf-8
"""

import struct
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

OFFSET_COMMIT_KEY = 1
"""The key version Kafka writes for offset commits (version 0 has the same layout)."""
GROUP_METADATA_KEY = 2
OFFSET_COMMIT_VALUE = 3
"""The value version this broker writes: the newest non-flexible OffsetCommitValue. Kafka 4.2
writes version 4, the same fields in flexible form, which Burrow 1.2.1 cannot decode."""
FLEXIBLE_VALUE = 4
NO_LEADER_EPOCH = -1

_LEGACY_VERSION = 1
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U16 = struct.Struct(">H")
_LEGACY_VALUE_HEAD = struct.Struct(">Bqqi")  # version, offset, commit timestamp, metadata length


class BadOffsetRecord(ValueError):
    """A record of the offsets topic that is not one this broker can read; says why."""


class Layout(Enum):
    KAFKA = "kafka"
    LEGACY = "legacy"


@dataclass(frozen=True)
class CommittedOffset:
    """A partition's committed position: the next offset the group will consume."""

    offset: int
    metadata: str
    commit_timestamp_ms: int
    leader_epoch: int = NO_LEADER_EPOCH


class OffsetKey(NamedTuple):
    group_id: str
    topic: str
    partition: int


class GroupKey(NamedTuple):
    """The key of a group metadata record (this broker writes none, but reads past them)."""

    group_id: str


def partition_for(group_id: str, partitions: int) -> int:
    """The offsets partition a group lives in, as Kafka computes it:
    ``Utils.abs(groupId.hashCode()) % partitions``, with Java's String.hashCode (over UTF-16
    code units, in 32-bit arithmetic) and Kafka's abs, which maps Integer.MIN_VALUE to 0."""
    h = 0
    units = group_id.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + (units[i] << 8 | units[i + 1])) & 0xFFFFFFFF
    signed = h - (1 << 32) if h & 0x80000000 else h
    return (0 if signed == -(1 << 31) else abs(signed)) % partitions


def encode_commit_key(key: OffsetKey) -> bytes:
    return (
        _I16.pack(OFFSET_COMMIT_KEY)
        + _string(key.group_id)
        + _string(key.topic)
        + _I32.pack(key.partition)
    )


def encode_commit_value(committed: CommittedOffset) -> bytes:
    return (
        _I16.pack(OFFSET_COMMIT_VALUE)
        + _I64.pack(committed.offset)
        + _I32.pack(committed.leader_epoch)
        + _string(committed.metadata)
        + _I64.pack(committed.commit_timestamp_ms)
    )


def decode_key(key: bytes) -> tuple[Layout, OffsetKey | GroupKey]:
    """The record's key, and the layout its value is in; raises ``BadOffsetRecord``."""
    if key[:1] == bytes([_LEGACY_VERSION]):
        return Layout.LEGACY, _decode_legacy_key(key)
    reader = _Reader(key)
    version = reader.int16()
    if version in (0, OFFSET_COMMIT_KEY):
        return Layout.KAFKA, OffsetKey(reader.string(), reader.string(), reader.int32())
    if version == GROUP_METADATA_KEY:
        return Layout.KAFKA, GroupKey(reader.string())
    raise BadOffsetRecord(f"key version {version} is neither an offset commit nor a group")


def decode_value(value: bytes, layout: Layout) -> CommittedOffset:
    """An offset commit's value, in the layout its key said; raises ``BadOffsetRecord``."""
    if layout is Layout.LEGACY:
        return _decode_legacy_value(value)
    reader = _Reader(value)
    version = reader.int16()
    if not 0 <= version <= FLEXIBLE_VALUE:
        raise BadOffsetRecord(f"offset commit value version {version} is not read (0 to 4 are)")
    offset = reader.int64()
    leader_epoch = reader.int32() if version >= 3 else NO_LEADER_EPOCH
    metadata = reader.compact_string() if version == FLEXIBLE_VALUE else reader.string()
    timestamp = reader.int64()
    if version == 1:
        reader.int64()  # expireTimestamp: Kafka ignores it since 2.1 (KIP-211), so do we
    return CommittedOffset(offset, metadata, timestamp, leader_epoch)


def _string(text: str) -> bytes:
    data = text.encode()
    return _I16.pack(len(data)) + data


class _Reader:
    """Big-endian fields read in order; running out of bytes is a ``BadOffsetRecord``."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, layout: struct.Struct) -> int:
        try:
            (value,) = layout.unpack_from(self._data, self._pos)
        except struct.error:
            raise BadOffsetRecord(f"truncated at byte {self._pos} of {len(self._data)}") from None
        self._pos += layout.size
        return value

    def int16(self) -> int:
        return self._take(_I16)

    def int32(self) -> int:
        return self._take(_I32)

    def int64(self) -> int:
        return self._take(_I64)

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            if self._pos >= len(self._data) or shift > 28:
                raise BadOffsetRecord(f"unsigned varint at byte {self._pos} is bad or truncated")
            byte = self._data[self._pos]
            self._pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def compact_string(self) -> str:
        """A flexible version's string: its length + 1 as an unsigned varint (0: null)."""
        return self._text(self.uvarint() - 1)

    def string(self, length_layout: struct.Struct = _I16) -> str:
        return self._text(self._take(length_layout))

    def _text(self, length: int) -> str:
        end = self._pos + length
        if length < 0 or end > len(self._data):
            raise BadOffsetRecord(f"string of {length} bytes at byte {self._pos} does not fit")
        try:
            text = self._data[self._pos : end].decode()
        except UnicodeDecodeError as exc:
            raise BadOffsetRecord(f"string at byte {self._pos} is not UTF-8: {exc}") from None
        self._pos = end
        return text


def _decode_legacy_key(key: bytes) -> OffsetKey:
    reader = _Reader(key[1:])
    return OffsetKey(reader.string(_U16), reader.string(_U16), reader.int32())


def _decode_legacy_value(value: bytes) -> CommittedOffset:
    try:
        version, offset, timestamp, _ = _LEGACY_VALUE_HEAD.unpack_from(value, 0)
    except struct.error:
        raise BadOffsetRecord(f"old-layout value of {len(value)} bytes is truncated") from None
    if version != _LEGACY_VERSION:
        raise BadOffsetRecord(f"old-layout value version {version} is not 1")
    reader = _Reader(value[_LEGACY_VALUE_HEAD.size - _I32.size :])
    return CommittedOffset(offset, reader.string(_I32), timestamp)
