"""Whole frames: request and response bodies with their headers and size prefix.

The broker side is ``decode_request`` / ``encode_response``; the client side (the harness's
client, tests) is ``encode_request`` / ``decode_response``. All four are sans-IO: framing on a
socket is ``read_frame_size`` plus reading that many bytes.
"""

from __future__ import annotations

import struct
from typing import Any

from .api_keys import api_name
from .exceptions import EncodeError, ProtocolError, UnsupportedVersion
from .header import (
    RequestHeader,
    has_response_header_v1,
    read_request_header,
    skip_header_tags,
    write_request_header,
)
from .messages import request_schema, response_schema
from .primitives import Reader, Writer
from .schema import StructSchema

_SIZE = struct.Struct(">i")

Buffer = bytes | bytearray | memoryview


def read_frame_size(prefix4: bytes) -> int:
    """The size in the 4-byte prefix of a frame; negative sizes are refused (a desynchronised
    or hostile peer), limits on large sizes are the server's business."""
    if len(prefix4) != 4:
        raise ProtocolError(f"frame size prefix needs 4 bytes, got {len(prefix4)}")
    size = _SIZE.unpack(prefix4)[0]
    if size < 0:
        raise ProtocolError(f"negative frame size {size}")
    return size


def decode_request(frame: Buffer) -> tuple[RequestHeader, dict[str, Any]]:
    """Decode a request frame (size prefix excluded).

    Raises ``UnsupportedVersion`` (with the header) for a key or version the codec does not
    handle, and ``ProtocolError`` (with the header once it was read) for malformed bytes.
    ``records`` fields in the body are views into ``frame``.
    """
    reader = Reader(frame)
    header = read_request_header(reader)
    try:
        schema = request_schema(header.api_key, header.api_version)
    except UnsupportedVersion as exc:
        exc.header = header
        raise
    skip_header_tags(reader, header)
    try:
        return header, _decode_body(schema, reader)
    except ProtocolError as exc:
        exc.where = f"{api_name(header.api_key)} v{header.api_version} request"
        exc.header = header
        raise


def decode_response(api_key: int, version: int, frame: Buffer) -> tuple[int, dict[str, Any]]:
    """Decode a response frame (size prefix excluded) into (correlation id, body).

    Response header v1 for flexible versions (its tagged fields skipped), v0 otherwise and for
    ApiVersions, whose response header is v0 even in flexible versions.
    """
    schema = response_schema(api_key, version)
    reader = Reader(frame)
    try:
        correlation_id = reader.int32()
        if has_response_header_v1(api_key, version):
            reader.skip_tagged_fields()
        return correlation_id, _decode_body(schema, reader)
    except ProtocolError as exc:
        exc.where = f"{api_name(api_key)} v{version} response"
        raise


def encode_request(
    api_key: int, version: int, correlation_id: int, client_id: str | None, body: dict[str, Any]
) -> bytes:
    """A complete request frame, size prefix included (header v1, or v2 for a flexible
    version). Records must be bytes-like."""
    schema = request_schema(api_key, version)
    writer = Writer(size_prefix=True)
    write_request_header(writer, api_key, version, correlation_id, client_id)
    _encode_body(schema, writer, body, api_key, version, "request")
    chunks = writer.chunks()
    if len(chunks) != 1:
        raise EncodeError("a request cannot carry file slices; pass records as bytes")
    return chunks[0]


def encode_response(
    api_key: int, version: int, correlation_id: int, body: dict[str, Any]
) -> list[Any]:
    """A complete response as chunks for the transport, the first starting with the int32 size.

    Chunks are ``bytes``, except that a ``records`` value with an int ``length`` (a file
    slice) is passed through untouched as a chunk of its own, its size counted by ``length``,
    so the transport can ``sendfile`` it. The bytes between slices are joined, so a Fetch
    response over n partitions is at most 2n + 1 chunks.
    """
    schema = response_schema(api_key, version)
    writer = Writer(size_prefix=True)
    writer.int32(correlation_id)
    if has_response_header_v1(api_key, version):
        writer.no_tagged_fields()
    _encode_body(schema, writer, body, api_key, version, "response")
    return writer.chunks()


def _decode_body(schema: StructSchema, reader: Reader) -> dict[str, Any]:
    body = schema.decode(reader)
    reader.expect_end()
    return body


def _encode_body(
    schema: StructSchema,
    writer: Writer,
    body: dict[str, Any],
    api_key: int,
    version: int,
    kind: str,
) -> None:
    try:
        schema.encode(writer, body)
    except EncodeError as exc:
        exc.where = f"{api_name(api_key)} v{version} {kind}"  # named only when it is needed
        raise
