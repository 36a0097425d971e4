"""Frames as the broker sees them: headers, hostile or broken input, defaults, and the
zero-copy chunking of file slices in responses (flexible versions: test_protocol_flexible.py)."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.protocol.old.api_versions import (
    ApiVersionsRequest_v3,
    ApiVersionsRequest_v4,
    ApiVersionsResponse_v1,
)

from reference_broker.protocol import (
    ApiKey,
    EncodeError,
    ErrorCode,
    ProtocolError,
    RequestHeader,
    UnsupportedVersion,
    decode_request,
    decode_request_header,
    decode_response,
    encode_request,
    encode_response,
    read_frame_size,
)

PRODUCE_V8 = {
    "transactional_id": None,
    "acks": -1,
    "timeout_ms": 30000,
    "topic_data": [
        {"name": "events", "partition_data": [{"index": 0, "records": b"\x01" * 70}]},
        {"name": "logs", "partition_data": [{"index": 3, "records": None}]},
    ],
}


def produce_frame(body: dict[str, Any] = PRODUCE_V8, version: int = 8) -> bytes:
    """A Produce request frame without its size prefix, as the server hands it over."""
    return encode_request(ApiKey.PRODUCE, version, 1234, "tester", body)[4:]


def header_bytes(api_key: int, version: int, correlation_id: int, client_id: bytes) -> bytes:
    return struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id


# --- Headers -------------------------------------------------------------------------------------


def test_header_of_a_supported_request() -> None:
    frame = produce_frame()

    header, offset = decode_request_header(frame)

    assert header == RequestHeader(ApiKey.PRODUCE, 8, 1234, "tester")
    assert offset == 8 + 2 + len("tester")


def test_null_client_id() -> None:
    frame = encode_request(ApiKey.API_VERSIONS, 0, 5, None, {})[4:]

    assert decode_request(frame) == (RequestHeader(ApiKey.API_VERSIONS, 0, 5, None), {})


@pytest.mark.parametrize("request_class", [ApiVersionsRequest_v3, ApiVersionsRequest_v4])
def test_flexible_api_versions_request_is_decoded(request_class: type) -> None:
    """What kafka-python and librdkafka send first: ApiVersions v3+ with header v2 and compact
    strings (whose length is an unsigned varint of length + 1)."""
    request = request_class(client_software_name="kafka-python", client_software_version="3.0")
    request.with_header(correlation_id=77, client_id="kp-client")
    frame = request.encode(header=True, framed=True)[4:]

    header, offset = decode_request_header(frame)

    assert header == RequestHeader(ApiKey.API_VERSIONS, request_class.API_VERSION, 77, "kp-client")
    assert frame[offset : offset + 13] == b"\x0dkafka-python"
    assert decode_request(frame) == (
        header,
        {"client_software_name": "kafka-python", "client_software_version": "3.0"},
    )


def test_answer_to_unsupported_api_versions_is_a_v0_body_kafka_python_reads() -> None:
    api_keys = [{"api_key": 0, "min_version": 0, "max_version": 8}]
    body = {"error_code": ErrorCode.UNSUPPORTED_VERSION, "api_keys": api_keys}

    frame = b"".join(encode_response(ApiKey.API_VERSIONS, 0, 77, body))

    # kafka-python decodes an ApiVersions response that carries an error as v0, whatever it sent.
    response = ApiVersionsResponse_v1.decode(frame, header=True, framed=True)
    assert response.header.correlation_id == 77
    assert response.error_code == 35
    assert response.api_keys == [(0, 0, 8)]


@pytest.mark.parametrize(
    ("api_key", "version"),
    [(99, 0), (ApiKey.PRODUCE, 12), (ApiKey.FETCH, 17), (ApiKey.METADATA, -1), (-5, 3)],
)
def test_unknown_key_or_version_raises_unsupported_with_header(api_key: int, version: int) -> None:
    frame = header_bytes(api_key, version, 31337, b"c") + b"\x00" * 20

    with pytest.raises(UnsupportedVersion) as info:
        decode_request(frame)

    assert info.value.header == RequestHeader(api_key, version, 31337, "c")
    assert (info.value.api_key, info.value.api_version) == (api_key, version)


def test_unsupported_version_is_not_a_protocol_error() -> None:
    # A broker that handles ProtocolError first (close the connection) must not catch these.
    assert not issubclass(UnsupportedVersion, ProtocolError)


def test_malformed_tagged_fields_of_a_flexible_header_keep_the_header() -> None:
    frame = header_bytes(ApiKey.API_VERSIONS, 3, 8, b"x") + b"\x05"  # 5 tagged fields, no bytes

    with pytest.raises(ProtocolError) as info:
        decode_request_header(frame)

    assert info.value.header == RequestHeader(ApiKey.API_VERSIONS, 3, 8, "x")


# --- Defensive decoding --------------------------------------------------------------------------


def test_every_truncation_raises_protocol_error() -> None:
    frame = produce_frame()
    header_end = decode_request_header(frame)[1]

    for end in range(len(frame)):
        with pytest.raises(ProtocolError) as info:
            decode_request(frame[:end])
        if end >= header_end:
            assert info.value.header == RequestHeader(ApiKey.PRODUCE, 8, 1234, "tester")
            assert str(info.value).startswith("Produce v8 request: ")
        else:
            assert info.value.header is None
            assert str(info.value).startswith("request header: ")


def test_a_frame_cut_inside_fixed_size_fields_names_the_field_that_is_cut() -> None:
    """Consecutive fixed-size fields are decoded together (acks and timeout_ms here); a frame
    that ends among them still names the one that is cut."""
    frame = produce_frame()
    body = decode_request_header(frame)[1] + 2  # after the null transactional_id
    cuts = {body + 1: "acks", body + 2: "timeout_ms", body + 5: "timeout_ms"}

    for end, field in cuts.items():
        with pytest.raises(ProtocolError) as info:
            decode_request(frame[:end])
        assert info.value.field_path == field
        assert "needs" in info.value.reason


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(ProtocolError, match="3 trailing bytes") as info:
        decode_request(produce_frame() + b"\x00\x00\x00")

    assert info.value.header is not None
    assert info.value.header.correlation_id == 1234


def _patched(frame: bytes, old: bytes, new: bytes) -> bytes:
    assert frame.count(old) == 1
    return frame.replace(old, new)


def test_huge_array_count_fails_before_allocating() -> None:
    frame = _patched(produce_frame(), b"\x00\x00\x00\x02\x00\x06events", b"\x7f\xff\xff\xff\x00")

    with pytest.raises(ProtocolError) as info:
        decode_request(frame)

    assert info.value.field_path == "topic_data"
    assert "array count 2147483647 cannot fit" in str(info.value)


def test_huge_records_length_fails() -> None:
    frame = _patched(produce_frame(), b"\x00\x00\x00\x46\x01", b"\x7f\x00\x00\x00\x01")

    with pytest.raises(ProtocolError) as info:
        decode_request(frame)

    assert info.value.field_path == "topic_data[0].partition_data[0].records"
    assert "needs 2130706432 bytes" in info.value.reason


@pytest.mark.parametrize(
    ("old", "new", "path", "reason"),
    [
        (b"\x00\x06events", b"\xff\xfeevents", "topic_data[0].name", "negative length -2"),
        (b"\x00\x06events", b"\xff\xffevents", "topic_data[0].name", "not nullable"),
        (b"\x00\x00\x00\x46\x01", b"\xff\xff\xff\xfe\x01", "partition_data[0].records", "-2"),
        (b"\x00\x00\x00\x02\x00\x06events", b"\xff\xff\xff\xfe\x00\x06events", "", "count -2"),
        (b"\x00\x00\x00\x02\x00\x06events", b"\xff\xff\xff\xff\x00\x06events", "", "not null"),
        (b"\x00\x06events", b"\x00\x06ev\xffnts", "topic_data[0].name", "not valid UTF-8"),
    ],
)
def test_bad_lengths_name_the_field(old: bytes, new: bytes, path: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request(_patched(produce_frame(), old, new))

    assert info.value.field_path.endswith(path)
    assert reason in info.value.reason


def test_invalid_client_id_is_a_header_error() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request(header_bytes(0, 8, 1, b"\xc3"))

    assert info.value.header is None
    assert (
        str(info.value)
        == "request header: client_id: string is not valid UTF-8 (unexpected end of data)"
    )


@settings(max_examples=300, deadline=None)
@given(
    api_key=st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18, 19, 22, 32]),
    version=st.integers(0, 11),
    body=st.binary(max_size=64),
)
def test_random_bodies_decode_or_raise_protocol_error(
    api_key: int, version: int, body: bytes
) -> None:
    frame = header_bytes(api_key, version, 1, b"c") + body
    try:
        decode_request(frame)
    except UnsupportedVersion:
        pass
    except ProtocolError as exc:
        assert exc.header == RequestHeader(api_key, version, 1, "c")


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_corrupted_byte_never_escapes_as_another_exception(position: int, value: int) -> None:
    frame = bytearray(produce_frame())
    frame[position % len(frame)] = value
    with contextlib.suppress(ProtocolError, UnsupportedVersion):
        decode_request(frame)


# --- Framing -------------------------------------------------------------------------------------


def test_read_frame_size() -> None:
    frame = encode_request(ApiKey.PRODUCE, 8, 1, "c", PRODUCE_V8)

    assert read_frame_size(frame[:4]) == len(frame) - 4
    with pytest.raises(ProtocolError, match="negative frame size -1"):
        read_frame_size(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError, match="needs 4 bytes, got 3"):
        read_frame_size(b"\x00\x00\x01")


# --- Zero copy -----------------------------------------------------------------------------------


def test_records_decode_as_views_into_the_frame() -> None:
    frame = bytearray(produce_frame())

    _, body = decode_request(frame)

    records = body["topic_data"][0]["partition_data"][0]["records"]
    assert isinstance(records, memoryview)
    assert records.obj is frame
    assert records == b"\x01" * 70
    assert body["topic_data"][1]["partition_data"][0]["records"] is None


class FileSlice:
    """Stands in for the log's file slice: the codec may read ``length`` and nothing else."""

    __slots__ = ("_length", "reads")

    def __init__(self, length: int) -> None:
        self._length = length
        self.reads = 0

    @property
    def length(self) -> int:
        self.reads += 1
        return self._length


def fetch_partition(index: int, records: Any) -> dict[str, Any]:
    return {
        "partition_index": index,
        "high_watermark": 100,
        "last_stable_offset": 100,
        "log_start_offset": 0,
        "records": records,
    }


def test_file_slices_become_their_own_chunks() -> None:
    first, second = FileSlice(1000), FileSlice(1 << 30)
    body = {
        "responses": [
            {
                "topic": "events",
                "partitions": [
                    fetch_partition(0, first),
                    fetch_partition(1, b"inline"),
                    fetch_partition(2, second),
                    fetch_partition(3, None),
                ],
            }
        ]
    }

    chunks = encode_response(ApiKey.FETCH, 11, 99, body)

    assert [type(c) for c in chunks] == [bytes, FileSlice, bytes, FileSlice, bytes]
    assert chunks[1] is first
    assert chunks[3] is second
    byte_sizes = sum(len(c) for c in chunks if isinstance(c, bytes))
    assert read_frame_size(chunks[0][:4]) == byte_sizes - 4 + 1000 + (1 << 30)
    assert chunks[0][-4:] == struct.pack(">i", 1000)  # the records length precedes the slice
    assert chunks[2][-4:] == struct.pack(">i", 1 << 30)


def test_slice_bytes_in_place_give_the_frame_kafka_would_send() -> None:
    body = {"responses": [{"topic": "t", "partitions": [fetch_partition(7, FileSlice(5))]}]}

    chunks = encode_response(ApiKey.FETCH, 4, 3, body)
    frame = b"".join(c if isinstance(c, bytes) else b"abcde" for c in chunks)

    correlation_id, decoded = decode_response(ApiKey.FETCH, 4, frame[4:])
    assert correlation_id == 3
    assert decoded["responses"][0]["partitions"][0]["records"] == b"abcde"
    assert read_frame_size(frame[:4]) == len(frame) - 4


def test_response_without_slices_is_one_chunk() -> None:
    chunks = encode_response(ApiKey.HEARTBEAT, 3, 1, {"error_code": 0})

    assert chunks == [struct.pack(">iiih", 10, 1, 0, 0)]


def test_requests_cannot_carry_slices() -> None:
    body = {"topic_data": [{"name": "t", "partition_data": [{"records": FileSlice(3)}]}]}

    with pytest.raises(EncodeError, match="file slices"):
        encode_request(ApiKey.PRODUCE, 8, 1, "c", body)


# --- Defaults and bad dicts ----------------------------------------------------------------------


def test_missing_fields_take_json_defaults() -> None:
    frame = encode_request(ApiKey.METADATA, 4, 1, "c", {})[4:]

    _, body = decode_request(frame)

    assert body == {"topics": None, "allow_auto_topic_creation": True}


def test_missing_nested_fields_take_json_defaults() -> None:
    body = {"responses": [{"topic": "t", "partitions": [{"partition_index": 2}]}]}

    frame = b"".join(encode_response(ApiKey.FETCH, 11, 1, body))

    partition = decode_response(ApiKey.FETCH, 11, frame[4:])[1]["responses"][0]["partitions"][0]
    assert partition == {
        "partition_index": 2,
        "error_code": 0,
        "high_watermark": 0,
        "last_stable_offset": -1,
        "log_start_offset": -1,
        "aborted_transactions": None,
        "preferred_read_replica": -1,
        "records": None,
    }


def test_fields_absent_from_the_version_are_ignored() -> None:
    body = {"transactional_id": "tx", "acks": 1, "timeout_ms": 5, "topic_data": []}

    assert encode_request(ApiKey.PRODUCE, 2, 1, "c", body) == encode_request(
        ApiKey.PRODUCE, 2, 1, "c", {"acks": 1, "timeout_ms": 5}
    )


@pytest.mark.parametrize(
    ("partition", "path", "reason"),
    [
        ({"high_watermark": "5"}, "high_watermark", "bad int64 value '5'"),
        ({"error_code": 1 << 15}, "error_code", "bad int16 value 32768"),
        ({"records": 17}, "records", "records must be bytes-like"),
        (
            {"aborted_transactions": [{"producer_id": None}]},
            "aborted_transactions[0].producer_id",
            "int64",
        ),
    ],
)
def test_encode_errors_name_the_field(partition: dict[str, Any], path: str, reason: str) -> None:
    body = {"responses": [{"topic": "t", "partitions": [{}, partition]}]}

    with pytest.raises(EncodeError) as info:
        encode_response(ApiKey.FETCH, 11, 1, body)

    assert info.value.field_path == f"responses[0].partitions[1].{path}"
    assert str(info.value).startswith("Fetch v11 response: ")
    assert reason in info.value.reason


def test_a_misspelt_field_is_refused_not_encoded_as_its_default() -> None:
    body = {
        "responses": [{"topic": "t", "partitions": [{"partition_index": 0, "high_watermak": 42}]}]
    }
    with pytest.raises(EncodeError, match=r"unknown field\(s\) \['high_watermak'\]") as info:
        encode_response(ApiKey.FETCH, 11, 1, body)
    assert info.value.field_path == "responses[0].partitions[0]"
    # A field of another version is not misspelt: it is left out of this one.
    encode_request(
        ApiKey.METADATA, 0, 1, "c", {"topics": [], "include_topic_authorized_operations": True}
    )


def test_null_in_a_field_that_is_not_nullable_in_this_version() -> None:
    with pytest.raises(EncodeError, match="topics: null in a non-nullable array"):
        encode_request(ApiKey.METADATA, 0, 1, "c", {"topics": None})


def test_unsupported_versions_cannot_be_encoded() -> None:
    with pytest.raises(UnsupportedVersion, match="Produce v12 is not supported"):
        encode_response(ApiKey.PRODUCE, 12, 1, {})
    with pytest.raises(UnsupportedVersion, match="api key 77 v0"):
        encode_request(77, 0, 1, "c", {})
