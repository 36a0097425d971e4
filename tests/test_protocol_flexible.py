"""Flexible versions (KIP-482) as the broker speaks them: compact forms and tagged fields
checked against golden bytes from the Kafka 4.2.0 Java client, flexible headers, unknown tags
skipped, bad compact lengths refused, file slices passed through compact records."""

from __future__ import annotations

import struct
from typing import Any
from uuid import UUID

import pytest

from reference_broker.protocol import (
    ApiKey,
    ProtocolError,
    RequestHeader,
    decode_request,
    decode_request_header,
    encode_request,
    encode_response,
)
from tests.test_protocol_codec import FileSlice, header_bytes

# --- Flexible versions (KIP-482) -----------------------------------------------------------------

TOPIC_ID = UUID("0123456789abcdef0fedcba987654321")

# Bodies as the Java client of Kafka 4.2.0 serializes them (MessageUtil.toByteBufferAccessor on
# its generated *Data classes, run once on this machine): golden bytes from a real encoder.
JAVA_GOLDEN: list[tuple[ApiKey, int, bool, dict[str, Any], str]] = [
    (
        ApiKey.FETCH,
        16,
        True,
        {
            "max_wait_ms": 500,
            "min_bytes": 1,
            "max_bytes": 1000,
            "topics": [
                {
                    "topic_id": TOPIC_ID,
                    "partitions": [
                        {"partition": 0, "fetch_offset": 42, "partition_max_bytes": 1048576}
                    ],
                }
            ],
            "forgotten_topics_data": [],
        },
        "000001f400000001000003e80000000000ffffffff020123456789abcdef0fedcba98765432102000000"
        "00ffffffff000000000000002affffffffffffffffffffffff001000000000010100",
    ),
    (
        ApiKey.METADATA,
        12,
        False,
        {
            "throttle_time_ms": 0,
            "brokers": [{"node_id": 1, "host": "127.0.0.1", "port": 9092}],
            "cluster_id": "c",
            "controller_id": 1,
            "topics": [
                {
                    "error_code": 0,
                    "name": "t",
                    "topic_id": TOPIC_ID,
                    "partitions": [
                        {
                            "error_code": 0,
                            "partition_index": 0,
                            "leader_id": 1,
                            "leader_epoch": 0,
                            "replica_nodes": [1],
                            "isr_nodes": [1],
                        }
                    ],
                }
            ],
        },
        "0000000002000000010a3132372e302e302e3100002384000002630000000102000002740123456789ab"
        "cdef0fedcba98765432100020000000000000000000100000000020000000102000000010100800000"
        "000000",
    ),
    (
        ApiKey.OFFSET_FETCH,
        9,
        True,
        {"groups": [{"group_id": "g", "topics": None}]},
        "02026700ffffffff00000000",
    ),
    (
        ApiKey.FIND_COORDINATOR,
        4,
        False,
        {
            "coordinators": [
                {"key": "g", "node_id": 1, "host": "h", "port": 9092, "error_message": None}
            ]
        },
        "00000000020267000000010268000023840000000000",
    ),
    (
        ApiKey.PRODUCE,
        11,
        False,
        {
            "responses": [
                {
                    "name": "t",
                    "partition_responses": [{"index": 0, "base_offset": 7, "log_start_offset": 0}],
                }
            ]
        },
        "020274020000000000000000000000000007ffffffffffffffff0000000000000000010000000000000000",
    ),
]


@pytest.mark.parametrize(
    ("api_key", "version", "is_request", "body", "golden"),
    JAVA_GOLDEN,
    ids=[f"{key.name}-v{version}" for key, version, *_ in JAVA_GOLDEN],
)
def test_flexible_bodies_match_the_java_client(
    api_key: ApiKey, version: int, is_request: bool, body: dict[str, Any], golden: str
) -> None:
    if is_request:
        frame = encode_request(api_key, version, 1, "c", body)
        _, offset = decode_request_header(frame[4:])
        ours = frame[4 + offset :]
        assert decode_request(frame[4:])[1]["topics" if "topics" in body else "groups"]
    else:
        ours = b"".join(encode_response(api_key, version, 1, body))[9:]  # size, id, tags
    assert ours.hex() == golden


def test_flexible_headers() -> None:
    """Request header v2 and response header v1 end with a tagged-field section (here empty);
    ApiVersions keeps response header v0 in every version, so a client can always read it."""
    request = encode_request(ApiKey.HEARTBEAT, 4, 9, "c", {"group_id": "g", "member_id": "m"})
    assert request[4:] == header_bytes(ApiKey.HEARTBEAT, 4, 9, b"c") + b"\x00" + (
        b"\x02g" + struct.pack(">i", 0) + b"\x02m" + b"\x00" + b"\x00"
    )
    response = b"".join(encode_response(ApiKey.HEARTBEAT, 4, 9, {"error_code": 0}))
    assert response == struct.pack(">ii", 12, 9) + b"\x00" + bytes(6) + b"\x00"
    versions = b"".join(encode_response(ApiKey.API_VERSIONS, 3, 9, {"api_keys": []}))
    assert versions[4:12] == struct.pack(">ih", 9, 0) + b"\x01" + b"\x00"


def test_unknown_tagged_fields_are_skipped() -> None:
    """KIP-482: a reader skips the tags it does not know, in any struct, header included."""
    body = b"\x02g" + struct.pack(">i", 3) + b"\x02m" + b"\x00"
    tags = b"\x02" + b"\x05\x03abc" + b"\x63\x00"  # two tags: 5 (3 bytes), 99 (empty)
    frame = header_bytes(ApiKey.HEARTBEAT, 4, 9, b"c") + tags + body + tags

    header, decoded = decode_request(frame)

    assert header == RequestHeader(ApiKey.HEARTBEAT, 4, 9, "c")
    assert decoded == {
        "group_id": "g",
        "generation_id": 3,
        "member_id": "m",
        "group_instance_id": None,
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x05g", "string needs 4 bytes"),  # compact length 4 with one byte left
        (b"\x02g" + bytes(4) + b"\x02m" + b"\x00" + b"\x01\x05\x09", "tagged field needs 9"),
        (b"\x02g" + bytes(4) + b"\x02m" + b"\x00" + b"\x01\x05", "truncated"),
        (b"\x80\x80\x80\x80\x80\x01", "longer than 5 bytes"),
    ],
)
def test_bad_compact_lengths_and_tags_are_protocol_errors(body: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_request(header_bytes(ApiKey.HEARTBEAT, 4, 9, b"c") + b"\x00" + body)


def test_compact_records_pass_file_slices_through() -> None:
    piece = FileSlice(5)
    chunks = encode_response(
        ApiKey.FETCH,
        16,
        3,
        {
            "responses": [
                {
                    "topic_id": TOPIC_ID,
                    "partitions": [{"partition_index": 0, "high_watermark": 9, "records": piece}],
                }
            ]
        },
    )
    assert chunks[1] is piece
    assert chunks[0].endswith(b"\x06")  # compact length: 5 + 1
    assert struct.unpack(">i", chunks[0][:4])[0] == len(chunks[0]) - 4 + 5 + len(chunks[2])
