"""RecordBatch v2: header view, produce-time validation, and the codec against kafka-python."""

import re
import struct

import cramjam
import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from reference_broker.errors import ErrorCode
from reference_broker.record_codec import build_batch, iter_records
from reference_broker.records import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAX_UNCOMPRESSED_BATCH_BYTES,
    BatchHeader,
    Compression,
    CompressionUnavailable,
    InvalidBatch,
    Record,
    TimestampType,
    crc_ok,
    iter_batches,
    read_header,
    set_base_offset,
    validate_batches,
)

CODECS = [Compression.NONE, Compression.GZIP, Compression.LZ4, Compression.ZSTD]
MAX = 1 << 20


def rewrite(batch: bytes, fmt: str, position: int, value: int, *, fix_crc: bool = True) -> bytes:
    """The batch with one header field changed and (by default) a CRC that matches again."""
    buf = bytearray(batch)
    struct.pack_into(fmt, buf, position, value)
    if fix_crc:
        struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[21:])))
    return bytes(buf)


def recompressed(
    batch: bytes, codec: Compression, *, snappy: str = "raw", section: bytes | None = None
) -> bytes:
    """``batch`` with its records section (or ``section``) compressed by cramjam with
    ``codec``, as other producers compress (snappy: raw as librdkafka, or xerial-framed as the
    Java client), with length and CRC fixed."""
    records = batch[HEADER_SIZE:] if section is None else section
    if codec is Compression.SNAPPY:
        packed = bytes(cramjam.snappy.compress_raw(records))
        if snappy == "xerial":
            packed = (
                b"\x82SNAPPY\x00"
                + struct.pack(">ii", 1, 1)
                + struct.pack(">i", len(packed))
                + packed
            )
    else:
        packed = bytes(getattr(cramjam, codec.name.lower()).compress(records))
    buf = bytearray(batch[:HEADER_SIZE] + packed)
    struct.pack_into(">i", buf, 8, len(buf) - LOG_OVERHEAD)
    struct.pack_into(">h", buf, 21, int(codec))
    struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[21:])))
    return bytes(buf)


def with_records(batch: bytes, section: bytes, count: int | None = None) -> bytes:
    """``batch`` with another records section (and record count), CRC and length fixed:
    a batch whose header is right but whose records may not be."""
    buf = bytearray(batch[:HEADER_SIZE] + section)
    struct.pack_into(">i", buf, 8, len(buf) - LOG_OVERHEAD)
    if count is not None:
        struct.pack_into(">i", buf, 57, count)
        struct.pack_into(">i", buf, 23, count - 1)
    struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[21:])))
    return bytes(buf)


def invalid(buf: bytes) -> InvalidBatch:
    with pytest.raises(InvalidBatch) as info:
        validate_batches(memoryview(buf), MAX)
    return info.value


def test_header_fields_and_properties() -> None:
    batch = build_batch(
        [(b"k1", b"v1"), (None, b"v2"), (b"k3", None)],
        base_offset=40,
        timestamps=[1000, 1500, 1200],
        compression=Compression.GZIP,
        producer_id=7,
        producer_epoch=2,
        base_sequence=11,
    )
    header = read_header(batch)
    assert header == BatchHeader(
        base_offset=40,
        batch_length=len(batch) - LOG_OVERHEAD,
        partition_leader_epoch=-1,
        magic=2,
        crc=crc32c.crc32c(batch[21:]),
        attributes=1,
        last_offset_delta=2,
        base_timestamp=1000,
        max_timestamp=1500,
        producer_id=7,
        producer_epoch=2,
        base_sequence=11,
        record_count=3,
    )
    assert header.size == len(batch)
    assert (header.last_offset, header.next_offset) == (42, 43)
    assert header.compression is Compression.GZIP
    assert header.timestamp_type is TimestampType.CREATE_TIME
    assert not header.is_transactional and not header.is_control
    flags = read_header(rewrite(batch, ">h", 21, 0x08 | 0x10 | 0x20 | 3))
    assert flags.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert flags.is_transactional and flags.is_control
    assert flags.compression is Compression.LZ4


def test_read_header_needs_61_bytes() -> None:
    batch = build_batch([(b"k", b"v")])
    position = len(batch) - 56
    with pytest.raises(InvalidBatch, match=f"at byte {position}: only 56 bytes left"):
        read_header(batch, position)


def test_validate_accepts_consecutive_batches() -> None:
    batches = [build_batch([(b"k", b"v" * i)] * i) for i in (1, 2, 3)]
    headers = validate_batches(memoryview(b"".join(batches)), MAX)
    assert [h.record_count for h in headers] == [1, 2, 3]
    assert [h.size for h in headers] == [len(b) for b in batches]


def test_validate_empty_records_is_invalid_record() -> None:
    assert invalid(b"").error_code is ErrorCode.INVALID_RECORD


def test_validate_trailing_bytes_are_corrupt() -> None:
    good = build_batch([(b"k", b"v")])
    error = invalid(good + b"\x00" * 16)
    assert error.error_code is ErrorCode.CORRUPT_MESSAGE
    assert error.position == len(good)
    assert f"record batch at byte {len(good)}" in str(error)


def test_validate_batch_smaller_than_header_is_corrupt() -> None:
    error = invalid(rewrite(build_batch([(b"k", b"v")]), ">i", 8, 40, fix_crc=False))
    assert error.error_code is ErrorCode.CORRUPT_MESSAGE
    assert "below the 61-byte" in str(error)


def test_validate_old_magic_is_corrupt() -> None:
    error = invalid(rewrite(build_batch([(b"k", b"v")]), ">b", 16, 1, fix_crc=False))
    assert error.error_code is ErrorCode.CORRUPT_MESSAGE
    assert "magic 1" in str(error)


def test_validate_too_large_batch() -> None:
    good = build_batch([(b"k", b"v")])
    big = build_batch([(b"k", b"x" * 1000)])
    with pytest.raises(InvalidBatch) as info:
        validate_batches(memoryview(good + big), 1000)
    assert info.value.error_code is ErrorCode.MESSAGE_TOO_LARGE
    assert info.value.position == len(good)
    assert validate_batches(memoryview(big), len(big))  # the limit itself is allowed


def test_validate_length_past_buffer_is_corrupt() -> None:
    batch = build_batch([(b"k", b"value")])
    error = invalid(batch[:-1])
    assert error.error_code is ErrorCode.CORRUPT_MESSAGE
    assert "runs past the end" in str(error)


@pytest.mark.parametrize("position", [21, 30, 60, -1])
def test_validate_crc_mismatch_is_corrupt(position: int) -> None:
    buf = bytearray(build_batch([(b"k", b"value")]))
    buf[position] ^= 0x01
    error = invalid(bytes(buf))
    assert error.error_code is ErrorCode.CORRUPT_MESSAGE
    assert "CRC-32C mismatch" in str(error)


@pytest.mark.parametrize(
    ("fmt", "position", "value"),
    [(">i", 23, 5), (">i", 57, 0), (">i", 57, -1), (">i", 23, -1)],
    ids=["delta-mismatch", "zero-count", "negative-count", "negative-delta"],
)
def test_validate_record_count_mismatch_is_invalid_record(fmt: str, position: int, value: int):
    error = invalid(rewrite(build_batch([(b"k", b"v")] * 2), fmt, position, value))
    assert error.error_code is ErrorCode.INVALID_RECORD


def test_validate_control_batch_is_invalid_record() -> None:
    error = invalid(rewrite(build_batch([(b"k", b"v")]), ">h", 21, 0x20))
    assert error.error_code is ErrorCode.INVALID_RECORD
    assert "control" in str(error)


def test_validate_unknown_codec_is_corrupt() -> None:
    error = invalid(rewrite(build_batch([(b"k", b"v")]), ">h", 21, 6))
    assert error.error_code is ErrorCode.CORRUPT_MESSAGE
    assert "codec 6" in str(error)


def test_set_base_offset_keeps_crc_valid() -> None:
    batch = build_batch([(b"k", b"v")] * 3, compression=Compression.GZIP)
    buf = bytearray(batch * 2)
    set_base_offset(buf, len(batch), 1234567890123, 17)
    header = read_header(buf, len(batch))
    assert (header.base_offset, header.partition_leader_epoch) == (1234567890123, 17)
    assert crc_ok(buf, len(batch), header)
    assert buf[len(batch) + 16 :] == batch[16:]  # nothing else changed
    kafka_batch = DefaultRecordBatch(bytes(buf[len(batch) :]))
    assert kafka_batch.validate_crc()
    assert [r.offset for r in kafka_batch] == [1234567890123, 1234567890124, 1234567890125]


HEADERS = [("trace", b"\x00\x01"), ("empty", b""), ("null", None), ("ünï", b"x" * 200)]
RECORDS = [
    (b"key", b"value", HEADERS),
    (None, b"null key", []),
    (b"null value", None, [("h", None)]),
    (None, None, []),
    (b"k" * 300, b"v" * 70000, []),
]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_kafka_python_reads_what_build_batch_writes(codec: Compression) -> None:
    timestamps = [1_700_000_000_000 + delta for delta in (0, 5, -3, 1 << 33, 7)]
    batch = build_batch(RECORDS, base_offset=100, timestamps=timestamps, compression=codec)
    kafka_batch = DefaultRecordBatch(batch)
    assert kafka_batch.validate_crc()
    assert kafka_batch.compression_type == codec
    decoded = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in kafka_batch]
    expected = [
        (100 + i, ts, key, value, headers)
        for i, ((key, value, headers), ts) in enumerate(zip(RECORDS, timestamps, strict=True))
    ]
    assert decoded == expected
    assert kafka_batch.max_timestamp == max(timestamps)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_iter_records_reads_what_kafka_python_writes(codec: Compression) -> None:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=int(codec),
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for offset, (key, value, headers) in enumerate(RECORDS):
        builder.append(offset, timestamp=5000 - offset, key=key, value=value, headers=headers)
    raw = bytes(builder.build())
    assert read_header(raw).compression is codec
    records = list(iter_records(raw))
    assert records == [
        Record(offset, 5000 - offset, key, value, list(headers))
        for offset, (key, value, headers) in enumerate(RECORDS)
    ]


def test_iter_records_log_append_time_uses_max_timestamp() -> None:
    batch = build_batch([(b"a", b"1"), (b"b", b"2")], timestamps=[10, 20])
    appended = rewrite(rewrite(batch, ">q", 35, 99), ">h", 21, 0x08)
    assert [r.timestamp for r in iter_records(appended)] == [99, 99]


def test_build_batch_accepts_record_likes_and_pairs() -> None:
    source = [Record(7, 1, b"k", b"v", [("h", b"1")]), (b"k2", b"v2")]
    records = list(iter_records(build_batch(source, base_timestamp=50)))
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in records] == [
        (0, 50, b"k", b"v", [("h", b"1")]),
        (1, 50, b"k2", b"v2", []),
    ]


def test_build_batch_rejects_nothing_and_mismatched_timestamps() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        build_batch([])
    with pytest.raises(ValueError, match="2 timestamps for 1 records"):
        build_batch([(b"k", b"v")], timestamps=[1, 2])


def test_snappy_is_read_but_not_written() -> None:
    with pytest.raises(CompressionUnavailable, match="SNAPPY"):
        build_batch([(b"k", b"v")], compression=Compression.SNAPPY)
    records = [(b"k", b"v" * 300, [("h", b"1")])] * 3
    for framing in ("raw", "xerial"):
        batch = recompressed(build_batch(records), Compression.SNAPPY, snappy=framing)
        assert [r.value for r in iter_records(batch)] == [b"v" * 300] * 3
    mislabelled = rewrite(build_batch([(b"k", b"v")]), ">h", 21, int(Compression.SNAPPY))
    with pytest.raises(InvalidBatch, match="SNAPPY records do not decompress"):
        list(iter_records(mislabelled))


def test_iter_records_rejects_bad_crc_and_malformed_records() -> None:
    buf = bytearray(build_batch([(b"k", b"v")]))
    buf[-1] ^= 0xFF
    with pytest.raises(InvalidBatch, match="CRC-32C mismatch") as info:
        list(iter_records(bytes(buf)))
    assert info.value.error_code is ErrorCode.CORRUPT_MESSAGE
    # A record count larger than the records present, with a CRC that matches.
    lying = rewrite(rewrite(build_batch([(b"k", b"v")]), ">i", 57, 2), ">i", 23, 1)
    with pytest.raises(InvalidBatch, match="malformed record"):
        list(iter_records(lying))
    extra = rewrite(build_batch([(b"k", b"v")] * 2), ">i", 57, 1)
    with pytest.raises(InvalidBatch, match="bytes after the last record"):
        list(iter_records(extra))


def test_iter_batches_walks_and_stops_at_a_partial_batch() -> None:
    batches = [build_batch([(b"k", b"v" * i)], base_offset=i) for i in range(1, 4)]
    buf = b"".join(batches)
    whole = [(pos, h.base_offset) for pos, h in iter_batches(buf)]
    assert whole == [(0, 1), (len(batches[0]), 2), (len(batches[0]) + len(batches[1]), 3)]
    for cut in range(len(buf)):
        complete = [h.base_offset for _, h in iter_batches(buf[:cut])]
        expected = [h.base_offset for pos, h in iter_batches(buf) if pos + h.size <= cut]
        assert complete == expected
    with pytest.raises(InvalidBatch, match="below the 61-byte"):
        list(iter_batches(buf + bytes(HEADER_SIZE)))
    with pytest.raises(InvalidBatch, match="magic 0"):
        list(iter_batches(buf + rewrite(batches[0], ">b", 16, 0, fix_crc=False)))


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(
        st.tuples(
            st.none() | st.binary(max_size=300),
            st.none() | st.binary(max_size=3000),
            st.lists(st.tuples(st.text(max_size=20), st.none() | st.binary(max_size=50))),
        ),
        min_size=1,
        max_size=20,
    ),
    base_offset=st.integers(0, 2**62),
    first_timestamp=st.integers(0, 2**40),
    codec=st.sampled_from(CODECS),
)
def test_build_then_iterate_round_trips(records, base_offset, first_timestamp, codec) -> None:
    timestamps = [first_timestamp + i * 7919 - 3 * (i % 2) for i in range(len(records))]
    batch = build_batch(records, base_offset=base_offset, timestamps=timestamps, compression=codec)
    assert validate_batches(memoryview(batch), MAX)[0].base_offset == base_offset
    decoded = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in iter_records(batch)]
    assert decoded == [
        (base_offset + i, ts, key, value, headers)
        for i, ((key, value, headers), ts) in enumerate(zip(records, timestamps, strict=True))
    ]


# --- record-level validation (Kafka's LogValidator / DefaultRecord.readFrom) ------------------

TWO = build_batch([(b"k", b"v", [("h", b"x")]), (None, b"w" * 200)])
TWO_RECORDS = TWO[HEADER_SIZE:]
FIRST_LENGTH = 1 + (TWO_RECORDS[0] >> 1)  # a one-byte varint, then the record


def _records_with(first: bytes) -> bytes:
    """TWO's records section with the first record's body replaced (length recomputed)."""
    return bytes([len(first) << 1]) + first + TWO_RECORDS[FIRST_LENGTH:]


@pytest.mark.parametrize(
    ("section", "count", "problem"),
    [
        (b"\x00" * 40, None, "offset delta|cut off|past the end|off its length"),  # garbage
        (TWO_RECORDS[:FIRST_LENGTH], None, "cut off"),  # a record missing
        (TWO_RECORDS + b"\x00", None, "1 bytes after the last"),
        (TWO_RECORDS, 1, "bytes after the last of 1 records"),  # count below what is there
        (_records_with(bytes([0, 0, 2]) + TWO_RECORDS[4:FIRST_LENGTH]), None, "offset delta 1"),
        (
            _records_with(TWO_RECORDS[1:4] + b"\x7e" + TWO_RECORDS[5:FIRST_LENGTH]),
            None,
            "off its length|cut off",
        ),  # key length past the record
        (bytes([3]) + TWO_RECORDS[1:], None, "length -2"),
        (_records_with(b"\x00\x00\x00\x01\x02v\x01"), None, "negative header count"),
        (b"\xff" * 12, None, "varint longer than 5 bytes"),
    ],
    ids=[
        "garbage",
        "missing-record",
        "trailing-byte",
        "count-too-small",
        "delta-out-of-order",
        "key-past-record",
        "negative-length",
        "negative-header-count",
        "overlong-varint",
    ],
)
def test_validate_refuses_batches_whose_records_do_not_parse(section, count, problem) -> None:
    """A batch with a right header and CRC but broken records was stored; consumers then
    stalled at its offset. Kafka's broker parses every record of a produced batch."""
    error = invalid(with_records(TWO, section, count))
    assert error.error_code is ErrorCode.INVALID_RECORD, error
    assert re.search(problem, str(error)), str(error)


@pytest.mark.parametrize(
    "codec", [Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]
)
def test_validate_inflates_compressed_batches_and_checks_their_records(codec) -> None:
    good = recompressed(TWO, codec)
    assert [h.record_count for h in validate_batches(memoryview(good), MAX)] == [2]
    broken = recompressed(TWO, codec, section=TWO_RECORDS[:-3])
    assert invalid(broken).error_code is ErrorCode.INVALID_RECORD
    garbled = rewrite(with_records(TWO, b"\x00\x01" * 30), ">h", 21, int(codec))
    error = invalid(garbled)
    assert error.error_code is ErrorCode.CORRUPT_MESSAGE and "do not decompress" in str(error)


def test_validate_stops_a_decompression_bomb_at_the_bound() -> None:
    zeros = bytes(MAX_UNCOMPRESSED_BATCH_BYTES + 1)
    for codec in (Compression.ZSTD, Compression.SNAPPY):
        bomb = recompressed(TWO, codec, section=zeros)
        with pytest.raises(InvalidBatch) as info:
            validate_batches(memoryview(bomb), 1 << 30)
        assert info.value.error_code is ErrorCode.MESSAGE_TOO_LARGE
        assert "inflate" in str(info.value)


HEADERS = st.lists(st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=5)), max_size=3)


@given(
    st.lists(
        st.tuples(
            st.none() | st.binary(max_size=300), st.none() | st.binary(max_size=9000), HEADERS
        ),
        min_size=1,
        max_size=70,
    )
)
@settings(max_examples=50, deadline=None)
def test_validate_accepts_every_well_formed_batch(records) -> None:
    """Every batch our encoder writes (as any client's would be) passes: the validator's
    inline varint paths (one byte, two bytes, longer) agree with the encoder's."""
    batch = build_batch(records, timestamps=[i * 10**9 for i in range(len(records))])
    assert [h.record_count for h in validate_batches(memoryview(batch), 1 << 30)] == [len(records)]
