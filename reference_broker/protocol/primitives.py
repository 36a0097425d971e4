"""Kafka's primitive wire types: a bounds-checked reader and a chunking writer.

The reader faces bytes from the network, so every length and count is checked against what is
left of the frame *before* anything is allocated: a hostile int32 count must cost an exception,
not a 2-billion-element list. The writer builds one frame as a few byte chunks, and lets a
``records`` value that is a file slice through as a chunk of its own (the zero-copy path).
"""

from __future__ import annotations

import struct
from typing import Any
from uuid import UUID

from .exceptions import EncodeError, ProtocolError

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")

_BYTES_LIKE = (bytes, bytearray, memoryview)


class Reader:
    """A cursor over one frame. Strings and bytes are copied out; records stay views."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.buf = memoryview(data).cast("B")
        self.pos = 0
        self.end = len(self.buf)

    def _advance(self, size: int, what: str) -> int:
        """Consume ``size`` bytes and return where they start."""
        pos = self.pos
        if size > self.end - pos:
            raise ProtocolError(f"{what} needs {size} bytes but only {self.end - pos} remain")
        self.pos = pos + size
        return pos

    def _take(self, size: int, what: str) -> int:
        """Consume a length-prefixed payload of ``size`` bytes (as read from the wire)."""
        if size < 0:
            if size == -1:
                raise ProtocolError(f"{what} is null (-1) but the field is not nullable")
            raise ProtocolError(f"{what} has negative length {size}")
        return self._advance(size, what)

    def expect_end(self) -> None:
        """Refuse trailing bytes: a body that does not end where the frame ends is misframed."""
        if self.pos != self.end:
            raise ProtocolError(f"{self.end - self.pos} trailing bytes after the body")

    def boolean(self) -> bool:
        return self.buf[self._advance(1, "bool")] != 0

    def int8(self) -> int:
        return _I8.unpack_from(self.buf, self._advance(1, "int8"))[0]

    def int16(self) -> int:
        return _I16.unpack_from(self.buf, self._advance(2, "int16"))[0]

    def int32(self) -> int:
        return _I32.unpack_from(self.buf, self._advance(4, "int32"))[0]

    def int64(self) -> int:
        return _I64.unpack_from(self.buf, self._advance(8, "int64"))[0]

    def uint32(self) -> int:
        return _U32.unpack_from(self.buf, self._advance(4, "uint32"))[0]

    def _unsigned_varint(self, bits: int, what: str) -> int:
        buf, pos, end = self.buf, self.pos, self.end
        value = shift = 0
        while shift < bits:
            if pos >= end:
                raise ProtocolError(f"truncated {what}")
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value >> bits:
                    raise ProtocolError(f"{what} does not fit in {bits} bits")
                self.pos = pos
                return value
            shift += 7
        raise ProtocolError(f"{what} is longer than {(bits + 6) // 7} bytes")

    def uvarint(self) -> int:
        """Unsigned varint (32 bits): tagged-field counts, tags and sizes."""
        return self._unsigned_varint(32, "unsigned varint")

    def varint(self) -> int:
        """Zigzag varint (32 bits), as in record headers."""
        raw = self._unsigned_varint(32, "varint")
        return (raw >> 1) ^ -(raw & 1)

    def varlong(self) -> int:
        """Zigzag varlong (64 bits), as in record timestamp deltas."""
        raw = self._unsigned_varint(64, "varlong")
        return (raw >> 1) ^ -(raw & 1)

    def _utf8(self, size: int) -> str:
        start = self._take(size, "string")
        try:
            return str(self.buf[start : start + size], "utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"string is not valid UTF-8 ({exc.reason})") from None

    def string(self) -> str:
        return self._utf8(self.int16())

    def nullable_string(self) -> str | None:
        size = self.int16()
        return None if size == -1 else self._utf8(size)

    def _view(self, size: int, what: str) -> memoryview:
        start = self._take(size, what)
        return self.buf[start : start + size]

    def binary(self) -> bytes:
        """``bytes`` fields (group metadata, assignments): small, so copied out."""
        return bytes(self._view(self.int32(), "bytes"))

    def nullable_binary(self) -> bytes | None:
        size = self.int32()
        return None if size == -1 else bytes(self._view(size, "bytes"))

    def records(self) -> memoryview | None:
        """``records`` fields: a view into the frame, never a copy (they can be many MB)."""
        size = self.int32()
        return None if size == -1 else self._view(size, "records")

    def uuid(self) -> UUID:
        """A topic id: 16 bytes, the all-zero one meaning "none"."""
        start = self._advance(16, "uuid")
        return UUID(bytes=bytes(self.buf[start : start + 16]))

    # Flexible versions (KIP-482): lengths and counts are unsigned varints of N + 1, 0 is null.

    def _compact_size(self) -> int:
        return self.uvarint() - 1

    def compact_string(self) -> str:
        return self._utf8(self._compact_size())

    def compact_nullable_string(self) -> str | None:
        size = self._compact_size()
        return None if size == -1 else self._utf8(size)

    def compact_binary(self) -> bytes:
        return bytes(self._view(self._compact_size(), "bytes"))

    def compact_nullable_binary(self) -> bytes | None:
        size = self._compact_size()
        return None if size == -1 else bytes(self._view(size, "bytes"))

    def compact_records(self) -> memoryview | None:
        size = self._compact_size()
        return None if size == -1 else self._view(size, "records")

    def array_length(self, nullable: bool, min_item_size: int) -> int | None:
        """An array count, refused unless that many items of at least ``min_item_size`` bytes
        could still fit in the frame."""
        return self._checked_count(self.int32(), nullable, min_item_size)

    def compact_array_length(self, nullable: bool, min_item_size: int) -> int | None:
        """A flexible version's array count (unsigned varint of count + 1), checked the same."""
        return self._checked_count(self._compact_size(), nullable, min_item_size)

    def _checked_count(self, count: int, nullable: bool, min_item_size: int) -> int | None:
        if count == -1 and nullable:
            return None
        if count == -1:
            raise ProtocolError("array is null (-1) but the field is not nullable")
        if count < 0:
            raise ProtocolError(f"array has negative count {count}")
        if count * max(min_item_size, 1) > self.end - self.pos:
            raise ProtocolError(
                f"array count {count} cannot fit in the {self.end - self.pos} remaining bytes"
            )
        return count

    def skip_tagged_fields(self) -> None:
        """Skip a flexible-version tagged-field section (count, then tag/size/bytes each).

        No tagged field of the APIs served changes what the broker does, so all are skipped,
        known and unknown alike, as KIP-482 allows for tags a reader does not know.
        """
        for _ in range(self.uvarint()):
            self.uvarint()
            self._advance(self.uvarint(), "tagged field")


def _slice_length(value: Any) -> int:
    length = getattr(value, "length", None)
    if not isinstance(length, int) or length < 0:
        raise EncodeError(
            f"records must be bytes-like, None, or have an int length >= 0; "
            f"got {type(value).__name__}"
        )
    return length


class Writer:
    """Builds one frame as a list of chunks: byte runs, and file slices passed through."""

    __slots__ = ("_buf", "_chunks", "_size_prefix")

    def __init__(self, size_prefix: bool = False) -> None:
        self._size_prefix = size_prefix
        self._buf = bytearray(4 if size_prefix else 0)
        self._chunks: list[Any] = []

    def chunks(self) -> list[Any]:
        """The finished chunks: ``bytes`` runs and file-slice objects, in wire order.

        With ``size_prefix`` the first chunk starts with the int32 size of everything after
        those 4 bytes, slices counted by their ``length``.
        """
        if self._buf:
            self._chunks.append(self._buf)
            self._buf = bytearray()
        chunks = self._chunks
        if self._size_prefix:
            size = sum(len(c) if isinstance(c, bytearray) else c.length for c in chunks) - 4
            _I32.pack_into(chunks[0], 0, size)
        return [bytes(c) if isinstance(c, bytearray) else c for c in chunks]

    def raw(self, data: bytes) -> None:
        """Bytes already in wire form (a run of fixed-size fields packed at once)."""
        self._buf += data

    def boolean(self, value: bool) -> None:
        self._buf += b"\x01" if value else b"\x00"

    def int8(self, value: int) -> None:
        self._buf += _I8.pack(value)

    def int16(self, value: int) -> None:
        self._buf += _I16.pack(value)

    def int32(self, value: int) -> None:
        self._buf += _I32.pack(value)

    def int64(self, value: int) -> None:
        self._buf += _I64.pack(value)

    def uint32(self, value: int) -> None:
        self._buf += _U32.pack(value)

    def _unsigned_varint(self, value: int, bits: int) -> None:
        if not 0 <= value < 1 << bits:
            raise EncodeError(f"{value} does not fit in an unsigned {bits}-bit varint")
        out = bytearray()
        while value > 0x7F:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
        self._buf += out

    def uvarint(self, value: int) -> None:
        self._unsigned_varint(value, 32)

    def varint(self, value: int) -> None:
        if not -(1 << 31) <= value < 1 << 31:
            raise EncodeError(f"{value} does not fit in a 32-bit varint")
        self._unsigned_varint((value << 1) ^ (value >> 31), 32)

    def varlong(self, value: int) -> None:
        if not -(1 << 63) <= value < 1 << 63:
            raise EncodeError(f"{value} does not fit in a 64-bit varlong")
        self._unsigned_varint((value << 1) ^ (value >> 63), 64)

    def string(self, value: str) -> None:
        if value is None:
            raise EncodeError("null in a non-nullable string field")
        data = value.encode("utf-8")
        if len(data) > 0x7FFF:
            raise EncodeError(f"string of {len(data)} bytes is longer than an int16 length allows")
        self._buf += _I16.pack(len(data))
        self._buf += data

    def nullable_string(self, value: str | None) -> None:
        if value is None:
            self._buf += _I16.pack(-1)
        else:
            self.string(value)

    def binary(self, value: bytes | bytearray | memoryview) -> None:
        if value is None:
            raise EncodeError("null in a non-nullable bytes field")
        view = memoryview(value)
        self._buf += _I32.pack(view.nbytes)
        self._buf += view

    def nullable_binary(self, value: bytes | bytearray | memoryview | None) -> None:
        if value is None:
            self._buf += _I32.pack(-1)
        else:
            self.binary(value)

    def records(self, value: Any) -> None:
        """Bytes-like records are copied in; anything else with an int ``length`` (a file
        slice) becomes a chunk of its own, unread, for the transport to sendfile."""
        if value is None or isinstance(value, _BYTES_LIKE):
            self.nullable_binary(value)
            return
        self._buf += _I32.pack(_slice_length(value))
        self._slice_chunk(value)

    def _slice_chunk(self, value: Any) -> None:
        self._chunks.append(self._buf)
        self._chunks.append(value)
        self._buf = bytearray()

    def array_length(self, count: int | None, nullable: bool) -> None:
        if count is None and not nullable:
            raise EncodeError("null in a non-nullable array field")
        self._buf += _I32.pack(-1 if count is None else count)

    def compact_array_length(self, count: int | None, nullable: bool) -> None:
        if count is None and not nullable:
            raise EncodeError("null in a non-nullable array field")
        self.uvarint(0 if count is None else count + 1)

    def no_tagged_fields(self) -> None:
        """An empty tagged-field section: the broker writes no optional tagged field."""
        self._buf += b"\x00"

    def uuid(self, value: UUID) -> None:
        self._buf += value.bytes

    def compact_string(self, value: str) -> None:
        if value is None:
            raise EncodeError("null in a non-nullable string field")
        data = value.encode("utf-8")
        self.uvarint(len(data) + 1)
        self._buf += data

    def compact_nullable_string(self, value: str | None) -> None:
        if value is None:
            self._buf += b"\x00"
        else:
            self.compact_string(value)

    def compact_binary(self, value: bytes | bytearray | memoryview) -> None:
        if value is None:
            raise EncodeError("null in a non-nullable bytes field")
        view = memoryview(value)
        self.uvarint(view.nbytes + 1)
        self._buf += view

    def compact_nullable_binary(self, value: bytes | bytearray | memoryview | None) -> None:
        if value is None:
            self._buf += b"\x00"
        else:
            self.compact_binary(value)

    def compact_records(self, value: Any) -> None:
        """``records`` in a flexible version: as ``records``, with a varint length + 1."""
        if value is None or isinstance(value, _BYTES_LIKE):
            self.compact_nullable_binary(value)
            return
        self.uvarint(_slice_length(value) + 1)
        self._slice_chunk(value)
