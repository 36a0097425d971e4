"""Records inside a v2 batch, encoded and decoded: for the harness client, the committed-offsets
log, ListOffsets by timestamp and the tests, never for the fetch path (which ships batches as
opaque bytes). Varints are zig-zag encoded as in Kafka's ``ByteUtils``.
"""

from __future__ import annotations

import gzip
import importlib
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType

from reference_broker.errors import ErrorCode
from reference_broker.records import (
    CRC_POS,
    CRC_START,
    HEADER_SIZE,
    HEADER_STRUCT,
    LOG_OVERHEAD,
    MAGIC,
    PREFIX_WITH_MAGIC,
    BytesLike,
    Compression,
    CompressionUnavailable,
    InvalidBatch,
    Record,
    TimestampType,
    batch_codec,
    crc32c_of,
    crc_ok,
    decompress,
    read_header,
    sized_batch,
)

RecordInput = (
    tuple[bytes | None, bytes | None]
    | tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]]
    | Record
)


def _put_varint(out: bytearray, value: int) -> None:
    """Append a zigzag varint (Kafka's varint and varlong share the encoding)."""
    zigzag = (value << 1) ^ (value >> 63)
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)


def _get_varint(buf: BytesLike, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _put_bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        _put_varint(out, -1)
    else:
        _put_varint(out, len(data))
        out += data


def _get_bytes(buf: BytesLike, pos: int) -> tuple[bytes | None, int]:
    length, pos = _get_varint(buf, pos)
    if length < 0:
        return None, pos
    if pos + length > len(buf):
        raise ValueError(f"field of {length} bytes runs past the records")
    return bytes(buf[pos : pos + length]), pos + length


def _unpack_input(item: RecordInput) -> tuple[bytes | None, bytes | None, Iterable]:
    if isinstance(item, tuple):
        key, value, *rest = item
        return key, value, (rest[0] if rest else None) or ()
    return item.key, item.value, item.headers or ()


def build_batch(
    records: Sequence[RecordInput],
    *,
    base_offset: int = 0,
    base_timestamp: int | None = None,
    timestamps: Sequence[int] | None = None,
    compression: Compression = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """Encode records as one CRC'd v2 batch, as a producer would send it.

    ``records`` are (key, value[, headers]) tuples or Record-likes (only key, value and headers
    are used). Timestamps: ``timestamps[i]`` per record if given, else ``base_timestamp`` for
    all, else the current time. The batch's base timestamp is ``base_timestamp`` if given, else
    the first record's, as the Java producer does.
    """
    items = [_unpack_input(item) for item in records]
    if not items:
        raise ValueError("a record batch holds at least one record")
    if timestamps is None:
        now = int(time.time() * 1000) if base_timestamp is None else base_timestamp
        stamps = [now] * len(items)
    else:
        stamps = list(timestamps)
        if len(stamps) != len(items):
            raise ValueError(f"{len(stamps)} timestamps for {len(items)} records")
    first_timestamp = stamps[0] if base_timestamp is None else base_timestamp

    body = bytearray()
    record = bytearray()
    for offset_delta, ((key, value, headers), stamp) in enumerate(zip(items, stamps, strict=True)):
        record.clear()
        record.append(0)  # record attributes: unused
        _put_varint(record, stamp - first_timestamp)
        _put_varint(record, offset_delta)
        _put_bytes(record, key)
        _put_bytes(record, value)
        header_list = list(headers)
        _put_varint(record, len(header_list))
        for header_key, header_value in header_list:
            _put_bytes(record, header_key.encode())
            _put_bytes(record, header_value)
        _put_varint(body, len(record))
        body += record

    batch = bytearray(HEADER_SIZE)
    batch += compress(compression, bytes(body))
    HEADER_STRUCT.pack_into(
        batch,
        0,
        base_offset,
        len(batch) - LOG_OVERHEAD,
        -1,  # partition leader epoch: the broker assigns it
        MAGIC,
        0,  # CRC, computed below over the finished bytes
        int(compression),
        len(items) - 1,
        first_timestamp,
        max(stamps),
        producer_id,
        producer_epoch,
        base_sequence,
        len(items),
    )
    with memoryview(batch) as view:
        struct.pack_into(">I", batch, CRC_POS, crc32c_of(view[CRC_START:]))
    return bytes(batch)


def iter_records(batch: BytesLike) -> Iterator[Record]:
    """Decode the records of the one batch at the start of ``batch`` (CRC-checked first).

    Raises InvalidBatch (CORRUPT_MESSAGE) for a bad CRC or malformed records and
    CompressionUnavailable for a codec this process cannot decode.
    """
    buf = memoryview(batch)
    if len(buf) < PREFIX_WITH_MAGIC:
        raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, f"only {len(buf)} bytes", 0)
    size = sized_batch(buf, 0)
    header = read_header(buf)
    if size > len(buf):
        raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, f"batch of {size} bytes is cut off", 0)
    if not crc_ok(buf, 0, header):
        raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, "CRC-32C mismatch", 0)
    codec = batch_codec(header, 0)
    data: BytesLike = buf[HEADER_SIZE:size]
    if codec is not Compression.NONE:
        data = decompress(codec, data)
    append_time = header.timestamp_type is TimestampType.LOG_APPEND_TIME
    pos = 0
    try:
        for _ in range(header.record_count):
            length, pos = _get_varint(data, pos)
            record_end = pos + length
            pos += 1  # record attributes: unused
            timestamp_delta, pos = _get_varint(data, pos)
            offset_delta, pos = _get_varint(data, pos)
            key, pos = _get_bytes(data, pos)
            value, pos = _get_bytes(data, pos)
            header_count, pos = _get_varint(data, pos)
            headers = []
            for _ in range(header_count):
                header_key, pos = _get_bytes(data, pos)
                if header_key is None:
                    raise ValueError("null header key")
                header_value, pos = _get_bytes(data, pos)
                headers.append((header_key.decode(), header_value))
            if pos != record_end:
                raise ValueError(f"record length {length} disagrees with its fields")
            timestamp = (
                header.max_timestamp if append_time else header.base_timestamp + timestamp_delta
            )
            yield Record(header.base_offset + offset_delta, timestamp, key, value, headers)
    except (IndexError, ValueError) as exc:
        raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, f"malformed record: {exc}", 0) from exc
    if pos != len(data):
        raise InvalidBatch(
            ErrorCode.CORRUPT_MESSAGE, f"{len(data) - pos} bytes after the last record", 0
        )


def _optional_module(name: str, codec: Compression) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise CompressionUnavailable(
            f"{codec.name} batches need the optional package {name.split('.')[0]!r} "
            "(pip install 'logbench[clients]')"
        ) from None


def compress(codec: Compression, data: bytes) -> bytes:
    if codec is Compression.NONE:
        return data
    if codec is Compression.GZIP:
        return gzip.compress(data, mtime=0)
    if codec is Compression.LZ4:
        # Kafka's Java LZ4 stream rejects dependent blocks.
        return _optional_module("lz4.frame", codec).compress(data, block_linked=False)
    if codec is Compression.ZSTD:
        return _optional_module("zstandard", codec).ZstdCompressor().compress(data)
    raise CompressionUnavailable(f"{codec.name} is not supported by logbench's record codec")
