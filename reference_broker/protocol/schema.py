"""A declarative message schema in the shape of Kafka's JSON message definitions.

Messages are declared once, across all versions, the way apache/kafka's
``clients/src/main/resources/common/message/*.json`` does it (``versions``,
``nullableVersions``, ``default``), so a reader can check a declaration against that JSON line by
line. ``resolve`` turns a declaration into the schema of one version (fields outside the version
dropped, nullability and defaults settled); the resolved schema decodes and encodes, and is what
``request_schema``/``response_schema`` hand out for introspection (e.g. to derive hypothesis
strategies).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID as _UUID

from .exceptions import EncodeError, ProtocolError
from .primitives import Reader, Writer

# --- Version ranges, written as in the JSON: "3+", "0-7", "1", "none" ----------------------


def _in_versions(spec: str, version: int) -> bool:
    if spec == "none":
        return False
    if spec.endswith("+"):
        return version >= int(spec[:-1])
    low, _, high = spec.partition("-")
    return int(low) <= version <= int(high or low)


# --- Types -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Primitive:
    """A wire type without inner structure, e.g. ``int32`` or a nullable ``string``.

    ``name`` is the JSON type name; ``zero`` is what a missing field without a JSON default
    encodes as; ``min_size`` is its smallest encoding, used to refuse impossible array counts.
    """

    name: str
    nullable: bool
    min_size: int
    zero: Any
    decode: Callable[[Reader], Any]
    encode: Callable[[Writer, Any], None]


ZERO_UUID = _UUID(int=0)
"""Kafka's ``Uuid.ZERO_UUID``: "no topic id" (a request addressing topics by name)."""

BOOL = Primitive("bool", False, 1, False, Reader.boolean, Writer.boolean)
INT8 = Primitive("int8", False, 1, 0, Reader.int8, Writer.int8)
INT16 = Primitive("int16", False, 2, 0, Reader.int16, Writer.int16)
INT32 = Primitive("int32", False, 4, 0, Reader.int32, Writer.int32)
INT64 = Primitive("int64", False, 8, 0, Reader.int64, Writer.int64)
STRING = Primitive("string", False, 2, "", Reader.string, Writer.string)
BYTES = Primitive("bytes", False, 4, b"", Reader.binary, Writer.binary)
RECORDS = Primitive("records", True, 4, None, Reader.records, Writer.records)

UUID = Primitive("uuid", False, 16, ZERO_UUID, Reader.uuid, Writer.uuid)

_NULLABLE_STRING = Primitive(
    "string", True, 2, None, Reader.nullable_string, Writer.nullable_string
)
_NULLABLE_BYTES = Primitive("bytes", True, 4, None, Reader.nullable_binary, Writer.nullable_binary)
_NULLABLE: dict[Primitive, Primitive] = {
    STRING: _NULLABLE_STRING,
    BYTES: _NULLABLE_BYTES,
    RECORDS: RECORDS,
}

# Flexible versions (KIP-482) write lengths as unsigned varints of length + 1 ("compact").
_COMPACT: dict[Primitive, Primitive] = {
    STRING: Primitive("string", False, 1, "", Reader.compact_string, Writer.compact_string),
    _NULLABLE_STRING: Primitive(
        "string", True, 1, None, Reader.compact_nullable_string, Writer.compact_nullable_string
    ),
    BYTES: Primitive("bytes", False, 1, b"", Reader.compact_binary, Writer.compact_binary),
    _NULLABLE_BYTES: Primitive(
        "bytes", True, 1, None, Reader.compact_nullable_binary, Writer.compact_nullable_binary
    ),
    RECORDS: Primitive("records", True, 1, None, Reader.compact_records, Writer.compact_records),
}


class FieldSchema(NamedTuple):
    """One field of a resolved struct: its dict key, wire type, and value when missing."""

    name: str
    type: Primitive | ArraySchema
    default: Any


# Errors Python raises for a value of the wrong type or range (struct.pack, str.encode, len).
_BAD_VALUE = (struct.error, TypeError, ValueError, AttributeError, OverflowError)


def _bad_value(step: str, type_: Any, value: Any, exc: Exception) -> EncodeError:
    kind = type_.name if isinstance(type_, Primitive) else type(type_).__name__
    return EncodeError(f"bad {kind} value {value!r:.60}: {exc}", path=[step])


# Fixed-size primitives and their struct format characters: a run of them in a struct is read
# and written by one ``struct.Struct`` (a Fetch partition's five numbers are one unpack).
_FIXED_FORMATS: dict[Primitive, str] = {BOOL: "?", INT8: "b", INT16: "h", INT32: "i", INT64: "q"}

# A compiled step of a struct: reads some of its fields into the dict, or writes them from it.
_DecodeStep = Callable[[Reader, dict[str, Any]], None]
_EncodeStep = Callable[[Writer, Mapping[str, Any]], None]


class StructSchema:
    """The fields of a struct in one version, in wire order. Decodes to / encodes from a dict.

    In a flexible version every struct ends with a tagged-field section: skipped when read,
    written empty (the broker sends no optional tagged field).

    ``fields`` is the table; on first use it is compiled into steps (``_compile``): each run of
    consecutive fixed-size fields becomes one ``struct`` unpack and pack, every other field one
    call to its type. The table stays the single description of the wire format: the steps are
    derived from it, never written by hand per message.
    """

    __slots__ = ("_decoders", "_encoders", "fields", "flexible", "known", "min_size")

    def __init__(
        self,
        fields: tuple[FieldSchema, ...],
        known: frozenset[str] | None = None,
        *,
        flexible: bool = False,
    ) -> None:
        self.fields = fields
        self.flexible = flexible
        # Keys of the struct in any version: others are misspellings, refused when encoding
        # (h11's events do the same), where they would otherwise vanish and encode a default.
        self.known = known if known is not None else frozenset(f.name for f in fields)
        self.min_size = sum(f.type.min_size for f in fields) + flexible
        self._decoders: tuple[_DecodeStep, ...] | None = None
        self._encoders: tuple[_EncodeStep, ...] | None = None

    def _compile(self) -> None:
        """Group the fields into steps (done once, lazily: most versions are never used)."""
        groups: list[list[FieldSchema]] = []
        for field in self.fields:
            fixed = isinstance(field.type, Primitive) and field.type in _FIXED_FORMATS
            if fixed and groups and groups[-1][0].type in _FIXED_FORMATS:
                groups[-1].append(field)
            else:
                groups.append([field])
        decoders, encoders = [], []
        for group in groups:
            if len(group) > 1:
                decoders.append(_decode_run(tuple(group)))
                encoders.append(_encode_run(tuple(group)))
            else:
                decoders.append(_decode_field(group[0]))
                encoders.append(_encode_field(group[0]))
        if self.flexible:
            decoders.append(_skip_tags)
            encoders.append(_no_tags)
        self._decoders, self._encoders = tuple(decoders), tuple(encoders)

    def decode(self, reader: Reader) -> dict[str, Any]:
        if self._decoders is None:
            self._compile()
        out: dict[str, Any] = {}
        for step in self._decoders:  # type: ignore[union-attr]
            step(reader, out)
        return out

    def encode(self, writer: Writer, value: Mapping[str, Any]) -> None:
        if type(value) is not dict and not isinstance(value, Mapping):
            raise EncodeError(f"expected a dict, got {type(value).__name__}")
        if not self.known.issuperset(value):
            raise EncodeError(
                f"unknown field(s) {sorted(value.keys() - self.known)}; "
                f"the struct has {sorted(self.known)}"
            )
        if self._encoders is None:
            self._compile()
        for step in self._encoders:  # type: ignore[union-attr]
            step(writer, value)


def _decode_field(field: FieldSchema) -> _DecodeStep:
    name, decode = field.name, field.type.decode

    def step(reader: Reader, out: dict[str, Any]) -> None:
        try:
            out[name] = decode(reader)
        except ProtocolError as exc:
            exc.path.insert(0, name)
            raise

    return step


def _encode_field(field: FieldSchema) -> _EncodeStep:
    name, type_, default = field
    encode = type_.encode

    def step(writer: Writer, value: Mapping[str, Any]) -> None:
        item = value.get(name, default)
        try:
            encode(writer, item)
        except EncodeError as exc:
            exc.path.insert(0, name)
            raise
        except _BAD_VALUE as exc:
            raise _bad_value(name, type_, item, exc) from exc

    return step


def _decode_run(fields: tuple[FieldSchema, ...]) -> _DecodeStep:
    """Consecutive fixed-size fields in one unpack. A frame that ends inside the run is read
    field by field instead, so the error names the field that is cut, as it always did."""
    names = tuple(f.name for f in fields)
    codec = struct.Struct(">" + "".join(_FIXED_FORMATS[f.type] for f in fields))  # type: ignore[index]
    size, one_by_one = codec.size, tuple(_decode_field(f) for f in fields)

    def step(reader: Reader, out: dict[str, Any]) -> None:
        pos = reader.pos
        if size > reader.end - pos:
            for field_step in one_by_one:  # raises at the field that is cut
                field_step(reader, out)
            return
        out.update(zip(names, codec.unpack_from(reader.buf, pos), strict=True))
        reader.pos = pos + size

    return step


def _encode_run(fields: tuple[FieldSchema, ...]) -> _EncodeStep:
    """Consecutive fixed-size fields in one pack. A value that does not pack (wrong type, out
    of range) is encoded field by field instead, which raises naming the field."""
    names = tuple(f.name for f in fields)
    defaults = tuple(f.default for f in fields)
    codec = struct.Struct(">" + "".join(_FIXED_FORMATS[f.type] for f in fields))  # type: ignore[index]
    one_by_one = tuple(_encode_field(f) for f in fields)

    def step(writer: Writer, value: Mapping[str, Any]) -> None:
        try:
            packed = codec.pack(*map(value.get, names, defaults))
        except _BAD_VALUE:
            for field_step in one_by_one:  # raises at the field that does not pack
                field_step(writer, value)
            return
        writer.raw(packed)

    return step


def _skip_tags(reader: Reader, out: dict[str, Any]) -> None:
    reader.skip_tagged_fields()


def _no_tags(writer: Writer, value: Mapping[str, Any]) -> None:
    writer.no_tagged_fields()


class ArraySchema:
    """An int32-counted array of a primitive or a struct; -1 is null when nullable. In
    flexible versions (``compact``) the count is an unsigned varint of count + 1, 0 null."""

    __slots__ = ("compact", "element", "min_size", "nullable")

    def __init__(
        self, element: Primitive | StructSchema, nullable: bool, *, compact: bool = False
    ) -> None:
        self.element = element
        self.nullable = nullable
        self.compact = compact
        self.min_size = 1 if compact else 4

    @property
    def zero(self) -> list[Any] | None:
        return None if self.nullable else []

    def decode(self, reader: Reader) -> list[Any] | None:
        decode = self.element.decode
        read_length = reader.compact_array_length if self.compact else reader.array_length
        count = read_length(self.nullable, self.element.min_size)
        if count is None:
            return None
        out = []
        for i in range(count):
            try:
                out.append(decode(reader))
            except ProtocolError as exc:
                exc.path.insert(0, f"[{i}]")
                raise
        return out

    def encode(self, writer: Writer, value: list[Any] | None) -> None:
        write_length = writer.compact_array_length if self.compact else writer.array_length
        write_length(None if value is None else len(value), self.nullable)
        if value is None:
            return
        encode = self.element.encode
        for i, item in enumerate(value):
            try:
                encode(writer, item)
            except EncodeError as exc:
                exc.path.insert(0, f"[{i}]")
                raise
            except _BAD_VALUE as exc:
                raise _bad_value(f"[{i}]", self.element, item, exc) from exc


# --- Declarations ----------------------------------------------------------------------------

_NO_DEFAULT: Any = object()


class Field(NamedTuple):
    """A field as the JSON declares it: all versions at once."""

    name: str
    type: Primitive | Array
    versions: str = "0+"
    nullable: str = "none"
    default: Any = _NO_DEFAULT


class Struct:
    """A declared struct: its fields in wire order."""

    __slots__ = ("fields",)

    def __init__(self, *fields: Field) -> None:
        self.fields = fields


class Array(NamedTuple):
    """A declared array (JSON ``[]int32`` or ``[]SomeStruct``)."""

    element: Primitive | Struct


def resolve(declared: Struct, version: int, *, flexible: bool = False) -> StructSchema:
    """The schema of ``declared`` in ``version``: only the fields that exist in it, with the
    nullable wire form where the JSON allows null, and the default a missing key takes.
    ``flexible`` (the version is in the JSON's ``flexibleVersions``) selects the compact
    forms of strings, bytes, records and arrays, and a tagged-field section per struct."""
    fields = []
    for field in declared.fields:
        if not _in_versions(field.versions, version):
            continue
        nullable = _in_versions(field.nullable, version)
        type_: Primitive | ArraySchema
        if isinstance(field.type, Array):
            element = field.type.element
            if isinstance(element, Struct):
                element = resolve(element, version, flexible=flexible)
            elif flexible:
                element = _COMPACT.get(element, element)
            type_ = ArraySchema(element, nullable, compact=flexible)
        else:
            type_ = _NULLABLE[field.type] if nullable else field.type
            if flexible:
                type_ = _COMPACT.get(type_, type_)
        default = type_.zero if field.default is _NO_DEFAULT else field.default
        if default is None and not type_.nullable:
            raise ValueError(f"{field.name} v{version}: null default for a non-nullable field")
        fields.append(FieldSchema(field.name, type_, default))
    return StructSchema(
        tuple(fields), frozenset(f.name for f in declared.fields), flexible=flexible
    )
