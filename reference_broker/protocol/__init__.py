"""Sans-IO Kafka wire codec: request frames in, dicts out; dicts in, response chunks out.

Bodies are plain dicts keyed by the snake_case names of the fields in Kafka's JSON message
definitions; see ``docs/architecture.md`` for the contract and ``messages.py`` for every field.
"""

from reference_broker.errors import ErrorCode

from .api_keys import SCHEMA_VERSIONS, ApiKey
from .codec import (
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    read_frame_size,
)
from .exceptions import EncodeError, ProtocolError, UnsupportedVersion
from .header import RequestHeader, decode_request_header
from .messages import request_schema, response_schema
from .schema import ZERO_UUID, ArraySchema, FieldSchema, Primitive, StructSchema

__all__ = [
    "SCHEMA_VERSIONS",
    "ZERO_UUID",
    "ApiKey",
    "ArraySchema",
    "EncodeError",
    "ErrorCode",
    "FieldSchema",
    "Primitive",
    "ProtocolError",
    "RequestHeader",
    "StructSchema",
    "UnsupportedVersion",
    "decode_request",
    "decode_request_header",
    "decode_response",
    "encode_request",
    "encode_response",
    "read_frame_size",
    "request_schema",
    "response_schema",
]
