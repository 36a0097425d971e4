"""Request header v1 and v2 (the flexible one), and which response header a response has.

The header is parsed on its own, before the body, because a broker must be able to answer a
request it cannot decode (an unknown key, a version it does not speak) with the client's
correlation id. Header v2 (flexible versions) only appends tagged fields after the same four
fields; the client id keeps its int16 length so that any broker can read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .api_keys import ApiKey, is_flexible_request
from .exceptions import ProtocolError
from .primitives import Reader, Writer
from .schema import INT16, INT32, STRING, Field, Struct, resolve

_REQUEST_HEADER_V1 = resolve(
    Struct(
        Field("api_key", INT16),
        Field("api_version", INT16),
        Field("correlation_id", INT32),
        Field("client_id", STRING, nullable="0+"),
    ),
    1,
)


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """The fields every request starts with (``api_key`` may be one this codec does not know)."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


def read_request_header(reader: Reader) -> RequestHeader:
    """Read the four header fields common to header v1 and v2 (tagged fields not included)."""
    try:
        return RequestHeader(**_REQUEST_HEADER_V1.decode(reader))
    except ProtocolError as exc:
        exc.where = "request header"
        raise


def skip_header_tags(reader: Reader, header: RequestHeader) -> None:
    """Skip header v2's tagged fields when the request's version is a flexible one."""
    if is_flexible_request(header.api_key, header.api_version):
        try:
            reader.skip_tagged_fields()
        except ProtocolError as exc:
            exc.where = "request header tagged fields"
            exc.header = header
            raise


def decode_request_header(frame: bytes | bytearray | memoryview) -> tuple[RequestHeader, int]:
    """The header of any request frame (size prefix excluded) and the offset its body starts at.

    Works for unknown API keys and versions too, so an answer can always carry the right
    correlation id; for those the body offset assumes header v1.
    """
    reader = Reader(frame)
    header = read_request_header(reader)
    skip_header_tags(reader, header)
    return header, reader.pos


def write_request_header(
    writer: Writer, api_key: int, api_version: int, correlation_id: int, client_id: str | None
) -> None:
    """Header v1, or v2 (an empty tagged-field section after it) for a flexible version."""
    _REQUEST_HEADER_V1.encode(
        writer,
        {
            "api_key": api_key,
            "api_version": api_version,
            "correlation_id": correlation_id,
            "client_id": client_id,
        },
    )
    if is_flexible_request(api_key, api_version):
        writer.no_tagged_fields()


def has_response_header_v1(api_key: int, api_version: int) -> bool:
    """Whether the response carries header v1 (correlation id, then tagged fields).

    Flexible versions do, except ApiVersions: its response header stays v0 in every version,
    so a client that asked with a version the broker does not know can still read the answer.
    """
    return api_key != ApiKey.API_VERSIONS and is_flexible_request(api_key, api_version)
