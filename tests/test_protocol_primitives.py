"""The primitive wire types: exact encodings, range limits, and refusal of malformed input."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.protocol.old.types import VarInt32, VarInt64

from reference_broker.protocol import EncodeError, ProtocolError
from reference_broker.protocol.primitives import Reader, Writer


def written(write: Callable[[Writer], None]) -> bytes:
    writer = Writer()
    write(writer)
    return b"".join(writer.chunks())


FIXED = [
    ("int8", 8, True),
    ("int16", 16, True),
    ("int32", 32, True),
    ("int64", 64, True),
    ("uint32", 32, False),
]


@pytest.mark.parametrize(("name", "bits", "signed"), FIXED)
@given(data=st.data())
def test_fixed_width_integers_round_trip(
    name: str, bits: int, signed: bool, data: st.DataObject
) -> None:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    value = data.draw(st.integers(low, high))

    encoded = written(lambda w: getattr(w, name)(value))

    assert encoded == value.to_bytes(bits // 8, "big", signed=signed)
    reader = Reader(encoded)
    assert getattr(reader, name)() == value
    reader.expect_end()


@pytest.mark.parametrize(("name", "bits", "signed"), FIXED)
def test_fixed_width_integers_out_of_range(name: str, bits: int, signed: bool) -> None:
    # The schema layer turns this into an EncodeError naming the field.
    with pytest.raises(struct.error):
        written(lambda w: getattr(w, name)(1 << bits))


def test_booleans() -> None:
    assert written(lambda w: w.boolean(True)) == b"\x01"
    assert written(lambda w: w.boolean(False)) == b"\x00"
    # Kafka reads any non-zero byte as true.
    assert [Reader(bytes([b])).boolean() for b in (0, 1, 2, 255)] == [False, True, True, True]


# Zigzag: small magnitudes of either sign stay short.
VARINT_VECTORS = [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (-2, b"\x03"), (150, b"\xac\x02")]


@pytest.mark.parametrize(("value", "encoded"), VARINT_VECTORS)
def test_varint_vectors(value: int, encoded: bytes) -> None:
    assert written(lambda w: w.varint(value)) == encoded
    assert Reader(encoded).varint() == value


def test_unsigned_varint_vectors() -> None:
    assert written(lambda w: w.uvarint(300)) == b"\xac\x02"
    assert written(lambda w: w.uvarint(0xFFFFFFFF)) == b"\xff\xff\xff\xff\x0f"
    assert Reader(b"\xff\xff\xff\xff\x0f").uvarint() == 0xFFFFFFFF


@given(st.integers(-(1 << 31), (1 << 31) - 1))
def test_varint_matches_kafka_python(value: int) -> None:
    ours = written(lambda w: w.varint(value))

    assert ours == VarInt32.encode(value)
    assert VarInt32.decode(io.BytesIO(ours)) == value
    assert Reader(VarInt32.encode(value)).varint() == value


@given(st.integers(-(1 << 63), (1 << 63) - 1))
def test_varlong_matches_kafka_python(value: int) -> None:
    ours = written(lambda w: w.varlong(value))

    assert ours == VarInt64.encode(value)
    assert Reader(ours).varlong() == value


@pytest.mark.parametrize(
    ("read", "data", "reason"),
    [
        (Reader.uvarint, b"\x80\x80\x80\x80\x80\x01", "longer than 5 bytes"),
        (Reader.uvarint, b"\xff\xff\xff\xff\x1f", "does not fit in 32 bits"),
        (Reader.varint, b"\x80\x80", "truncated varint"),
        (Reader.varlong, b"\x80" * 10 + b"\x01", "longer than 10 bytes"),
        (Reader.varlong, b"", "truncated varlong"),
    ],
)
def test_malformed_varints(read: Callable[[Reader], int], data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        read(Reader(data))


@pytest.mark.parametrize(
    ("write", "value"),
    [(Writer.uvarint, -1), (Writer.uvarint, 1 << 32), (Writer.varint, 1 << 31)],
)
def test_varints_out_of_range(write: Callable[[Writer, int], None], value: int) -> None:
    with pytest.raises(EncodeError, match="does not fit"):
        write(Writer(), value)


def test_strings() -> None:
    assert written(lambda w: w.string("héllo")) == b"\x00\x06h\xc3\xa9llo"
    assert written(lambda w: w.nullable_string(None)) == b"\xff\xff"
    assert Reader(b"\x00\x06h\xc3\xa9llo").string() == "héllo"
    assert Reader(b"\xff\xff").nullable_string() is None
    with pytest.raises(EncodeError, match="longer than an int16 length allows"):
        written(lambda w: w.string("x" * 0x8000))
    with pytest.raises(EncodeError, match="null in a non-nullable string"):
        written(lambda w: w.string(None))  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [b"abc", bytearray(b"abc"), memoryview(b"xabcx")[1:4]])
def test_bytes_like_values(value: Any) -> None:
    assert written(lambda w: w.binary(value)) == b"\x00\x00\x00\x03abc"
    assert written(lambda w: w.records(value)) == b"\x00\x00\x00\x03abc"


def test_bytes_decode_as_copies_and_records_as_views() -> None:
    data = b"\x00\x00\x00\x02ab\x00\x00\x00\x02cd\xff\xff\xff\xff"
    reader = Reader(data)

    assert type(reader.binary()) is bytes
    records = reader.records()
    assert isinstance(records, memoryview)
    assert records.obj is data
    assert records == b"cd"
    assert reader.records() is None


def test_tagged_fields_are_skipped() -> None:
    # Two tagged fields: tag 0 with 3 bytes, tag 5 with 0 bytes; then one more byte.
    reader = Reader(b"\x02\x00\x03abc\x05\x00Z")

    reader.skip_tagged_fields()

    assert reader.int8() == ord("Z")


def test_tagged_field_longer_than_the_frame() -> None:
    with pytest.raises(ProtocolError, match="tagged field needs 100 bytes but only 1 remain"):
        Reader(b"\x01\x00\x64Z").skip_tagged_fields()


def test_huge_count_of_small_items_is_refused_up_front() -> None:
    # 1000 int32 items cannot fit in 8 bytes, even though 1000 one-byte items could not either.
    reader = Reader(b"\x00\x00\x03\xe8" + b"\x00" * 8)

    with pytest.raises(ProtocolError, match="array count 1000 cannot fit in the 8 remaining"):
        reader.array_length(nullable=False, min_item_size=4)


def test_size_prefix_counts_everything_after_it() -> None:
    writer = Writer(size_prefix=True)
    writer.int64(1)
    writer.string("ab")

    assert writer.chunks() == [b"\x00\x00\x00\x0c" + b"\x00" * 7 + b"\x01\x00\x02ab"]
