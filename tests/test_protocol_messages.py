"""Every request and response body of every supported version: round trips through our codec,
and cross-checks against kafka-python's two independent implementations of the same messages
(the hand-written per-version classes in ``kafka.protocol.old`` and the JSON-driven ones)."""

from __future__ import annotations

import importlib
import io
import pkgutil
import struct
from typing import Any

import kafka.protocol.old
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.protocol.admin.configs import (
    AlterConfigsRequest,
    AlterConfigsResponse,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
)
from kafka.protocol.admin.groups import (
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    ListGroupsRequest,
    ListGroupsResponse,
)
from kafka.protocol.admin.topics import (
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteRecordsRequest,
    DeleteRecordsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
)
from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse
from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetDeleteRequest,
    OffsetDeleteResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.find_coordinator import (
    FindCoordinatorRequest,
    FindCoordinatorResponse,
)
from kafka.protocol.metadata.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.old.types import BitField
from kafka.protocol.old.types import Schema as OldSchema
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse
from kafka.protocol.producer.transaction import InitProducerIdRequest, InitProducerIdResponse

from reference_broker.protocol import (
    SCHEMA_VERSIONS,
    ApiKey,
    ArraySchema,
    Primitive,
    RequestHeader,
    StructSchema,
    decode_request,
    decode_request_header,
    decode_response,
    encode_request,
    encode_response,
    request_schema,
    response_schema,
)
from reference_broker.protocol.api_keys import is_flexible_request
from reference_broker.protocol.header import has_response_header_v1

CASES = [
    pytest.param(key, version, id=f"{key.name}-v{version}")
    for key, (low, high) in SCHEMA_VERSIONS.items()
    for version in range(low, high + 1)
]

FAST = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- A hypothesis strategy derived from the schema ---------------------------------------------


def bodies(schema: StructSchema) -> st.SearchStrategy[dict[str, Any]]:
    """Any valid body of a resolved schema (every field present)."""
    return st.fixed_dictionaries({f.name: _values(f.type) for f in schema.fields})


def _values(type_: Primitive | ArraySchema | StructSchema) -> st.SearchStrategy[Any]:
    if isinstance(type_, StructSchema):
        return bodies(type_)
    if isinstance(type_, ArraySchema):
        values = st.lists(_values(type_.element), max_size=3)
    elif type_.name.startswith("int"):
        bits = int(type_.name[3:])
        values = st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    elif type_.name == "bool":
        values = st.booleans()
    elif type_.name == "string":
        values = st.text(max_size=8)
    elif type_.name == "uuid":
        values = st.uuids()
    else:  # bytes, records
        values = st.binary(max_size=16)
    return st.none() | values if type_.nullable else values


# --- Round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("api_key", "version"), CASES)
@FAST
@given(data=st.data())
def test_request_round_trip(api_key: ApiKey, version: int, data: st.DataObject) -> None:
    body = data.draw(bodies(request_schema(api_key, version)))
    frame = encode_request(api_key, version, 42, "logbench", body)

    header, decoded = decode_request(frame[4:])

    assert header == RequestHeader(api_key, version, 42, "logbench")
    assert decoded == body
    assert encode_request(api_key, version, 42, "logbench", decoded) == frame


@pytest.mark.parametrize(("api_key", "version"), CASES)
@FAST
@given(data=st.data())
def test_response_round_trip(api_key: ApiKey, version: int, data: st.DataObject) -> None:
    body = data.draw(bodies(response_schema(api_key, version)))
    frame = b"".join(encode_response(api_key, version, -7, body))

    correlation_id, decoded = decode_response(api_key, version, frame[4:])

    assert correlation_id == -7
    assert decoded == body
    assert b"".join(encode_response(api_key, version, -7, decoded)) == frame


# --- Cross-check: kafka-python's hand-written classes (kafka.protocol.old) ----------------------


def _old_classes() -> dict[tuple[int, int, bool], type]:
    """(api_key, version, is_request) -> class, from every module of kafka.protocol.old."""
    found = {}
    for module_info in pkgutil.iter_modules(kafka.protocol.old.__path__):
        module = importlib.import_module(f"kafka.protocol.old.{module_info.name}")
        for name, obj in vars(module).items():
            version = getattr(obj, "API_VERSION", None)
            if isinstance(obj, type) and isinstance(version, int) and name.endswith(f"_v{version}"):
                is_request = name.rsplit("_v", 1)[0].endswith("Request")
                found[obj.API_KEY, version, is_request] = obj
    return found


OLD = _old_classes()
# kafka.protocol.old nests CreatePartitions' count and assignments in a struct of their own:
# the same bytes in another shape, so only the JSON-driven check below covers it.
OLD_SHAPED_OTHERWISE = {ApiKey.CREATE_PARTITIONS}
OLD_CASES = [
    p
    for p in CASES
    if (*p.values, True) in OLD
    and (*p.values, False) in OLD
    and not is_flexible_request(*p.values)
    and p.values[0] not in OLD_SHAPED_OTHERWISE
]


def positional(schema: StructSchema, body: dict[str, Any], old: OldSchema) -> tuple[Any, ...]:
    """A body as kafka.protocol.old represents it: nested tuples in field order."""
    return tuple(
        _old_value(type_, body[name], old_type)
        for (name, type_, _), old_type in zip(schema.fields, old.fields, strict=True)
    )


def _old_value(type_: Any, value: Any, old_type: Any) -> Any:
    if value is None:
        return None
    if isinstance(type_, ArraySchema):
        return [_old_value(type_.element, item, old_type.array_of) for item in value]
    if isinstance(type_, StructSchema):
        if isinstance(old_type, OldSchema):
            return positional(type_, value, old_type)
        # Old Kafka versions of the JSON had a []string where a one-field struct is now.
        ((name, field_type, _),) = type_.fields
        return _old_value(field_type, value[name], old_type)
    if old_type is BitField:  # kafka-python decodes authorized-operations ints as bit sets
        return BitField.decode(io.BytesIO(struct.pack(">i", value)))
    return bytes(value) if type_.name in ("bytes", "records") else value


def test_old_classes_cover_nearly_every_non_flexible_version() -> None:
    # kafka-python has no hand-written CreateTopics v4, DescribeConfigs v3, DeleteRecords v1,
    # IncrementalAlterConfigs v0, DescribeGroups v4, ListGroups v2 or OffsetDelete v0, and its
    # hand-written classes are not used for flexible
    # versions; the JSON-driven cross-check below covers those.
    rigid = {
        tuple(p.values)
        for p in CASES
        if not is_flexible_request(*p.values) and p.values[0] not in OLD_SHAPED_OTHERWISE
    }
    missing = {
        (ApiKey.CREATE_TOPICS, 4),
        (ApiKey.DESCRIBE_CONFIGS, 3),
        (ApiKey.DELETE_RECORDS, 1),
        (ApiKey.INCREMENTAL_ALTER_CONFIGS, 0),
        (ApiKey.DESCRIBE_GROUPS, 4),
        (ApiKey.LIST_GROUPS, 2),
        (ApiKey.OFFSET_DELETE, 0),
    }
    assert {tuple(p.values) for p in OLD_CASES} == rigid - missing


@pytest.mark.parametrize(("api_key", "version"), OLD_CASES)
@FAST
@given(data=st.data())
def test_request_matches_kafka_python_old(
    api_key: ApiKey, version: int, data: st.DataObject
) -> None:
    schema = request_schema(api_key, version)
    body = data.draw(bodies(schema))
    cls = OLD[api_key, version, True]
    theirs = cls(*positional(schema, body, cls.SCHEMA))
    theirs.with_header(correlation_id=9, client_id="kp")

    ours = encode_request(api_key, version, 9, "kp", body)

    assert ours == theirs.encode(header=True, framed=True)
    _, offset = decode_request_header(ours[4:])
    assert cls.SCHEMA.decode(io.BytesIO(ours[4 + offset :])) == positional(schema, body, cls.SCHEMA)
    assert decode_request(theirs.encode(header=True, framed=True)[4:])[1] == body


@pytest.mark.parametrize(("api_key", "version"), OLD_CASES)
@FAST
@given(data=st.data())
def test_response_matches_kafka_python_old(
    api_key: ApiKey, version: int, data: st.DataObject
) -> None:
    schema = response_schema(api_key, version)
    body = data.draw(bodies(schema))
    cls = OLD[api_key, version, False]
    theirs = cls(*positional(schema, body, cls.SCHEMA))
    theirs.with_header(correlation_id=9)

    ours = b"".join(encode_response(api_key, version, 9, body))

    assert ours == theirs.encode(header=True, framed=True)
    assert cls.SCHEMA.decode(io.BytesIO(ours[8:])) == positional(schema, body, cls.SCHEMA)
    assert decode_response(api_key, version, theirs.encode(header=True, framed=True)[4:]) == (
        9,
        body,
    )


# --- Cross-check: kafka-python's JSON-driven classes (checks the snake_case names too) ----------

NEW = {
    ApiKey.API_VERSIONS: (ApiVersionsRequest, ApiVersionsResponse),
    ApiKey.METADATA: (MetadataRequest, MetadataResponse),
    ApiKey.PRODUCE: (ProduceRequest, ProduceResponse),
    ApiKey.FETCH: (FetchRequest, FetchResponse),
    ApiKey.LIST_OFFSETS: (ListOffsetsRequest, ListOffsetsResponse),
    ApiKey.FIND_COORDINATOR: (FindCoordinatorRequest, FindCoordinatorResponse),
    ApiKey.JOIN_GROUP: (JoinGroupRequest, JoinGroupResponse),
    ApiKey.SYNC_GROUP: (SyncGroupRequest, SyncGroupResponse),
    ApiKey.HEARTBEAT: (HeartbeatRequest, HeartbeatResponse),
    ApiKey.LEAVE_GROUP: (LeaveGroupRequest, LeaveGroupResponse),
    ApiKey.OFFSET_COMMIT: (OffsetCommitRequest, OffsetCommitResponse),
    ApiKey.OFFSET_FETCH: (OffsetFetchRequest, OffsetFetchResponse),
    ApiKey.INIT_PRODUCER_ID: (InitProducerIdRequest, InitProducerIdResponse),
    ApiKey.CREATE_TOPICS: (CreateTopicsRequest, CreateTopicsResponse),
    ApiKey.DESCRIBE_CONFIGS: (DescribeConfigsRequest, DescribeConfigsResponse),
    ApiKey.LIST_GROUPS: (ListGroupsRequest, ListGroupsResponse),
    ApiKey.DESCRIBE_GROUPS: (DescribeGroupsRequest, DescribeGroupsResponse),
    ApiKey.DELETE_GROUPS: (DeleteGroupsRequest, DeleteGroupsResponse),
    ApiKey.OFFSET_DELETE: (OffsetDeleteRequest, OffsetDeleteResponse),
    ApiKey.DELETE_TOPICS: (DeleteTopicsRequest, DeleteTopicsResponse),
    ApiKey.CREATE_PARTITIONS: (CreatePartitionsRequest, CreatePartitionsResponse),
    ApiKey.DELETE_RECORDS: (DeleteRecordsRequest, DeleteRecordsResponse),
    ApiKey.ALTER_CONFIGS: (AlterConfigsRequest, AlterConfigsResponse),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: (
        IncrementalAlterConfigsRequest,
        IncrementalAlterConfigsResponse,
    ),
}


def _plain(value: Any) -> Any:
    """Records views as bytes, so bodies compare with kafka-python's dicts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return bytes(value) if isinstance(value, memoryview) else value


def _untagged(theirs: Any, ours: Any) -> Any:
    """kafka-python's dict without the tagged fields it fills with defaults (our schemas
    declare none: the broker skips them and sends none). The byte comparisons below still
    catch any regular field either side lacks."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        renamed = {"authorized_operations"}  # see _as_kafka_python
        return {
            k: _untagged(v, ours.get(k)) for k, v in theirs.items() if k in ours or k in renamed
        }
    if isinstance(theirs, list) and isinstance(ours, list):
        return [_untagged(t, o) for t, o in zip(theirs, ours, strict=False)]
    return theirs


def _bits(value: int) -> set[int] | None:
    return BitField.decode(io.BytesIO(struct.pack(">i", value)))


def _as_kafka_python(api_key: ApiKey, body: dict[str, Any]) -> dict[str, Any]:
    """kafka-python deliberately renames Metadata's *_authorized_operations fields to
    ``authorized_operations`` and decodes them (DescribeGroups' too) as bit sets; everything
    else is Kafka's name."""
    body = _plain(body)
    if api_key == ApiKey.DESCRIBE_GROUPS and body.get("groups"):
        for group in body["groups"]:
            if "authorized_operations" in group:
                group["authorized_operations"] = _bits(group["authorized_operations"])
    if api_key == ApiKey.METADATA and "cluster_authorized_operations" in body:
        body["authorized_operations"] = _bits(body.pop("cluster_authorized_operations"))
    if api_key == ApiKey.METADATA and "brokers" in body:
        for topic in body["topics"]:
            if "topic_authorized_operations" in topic:
                topic["authorized_operations"] = _bits(topic.pop("topic_authorized_operations"))
    return body


@pytest.mark.parametrize(("api_key", "version"), CASES)
@FAST
@given(data=st.data())
def test_bodies_decode_with_kafka_python_json_classes(
    api_key: ApiKey, version: int, data: st.DataObject
) -> None:
    request_cls, response_cls = NEW[api_key]
    request = data.draw(bodies(request_schema(api_key, version)))
    response = data.draw(bodies(response_schema(api_key, version)))
    if api_key == ApiKey.API_VERSIONS:
        # kafka-python reads any ApiVersions response with an error as v0 (as Kafka answers).
        response["error_code"] = 0

    request_frame = encode_request(api_key, version, 1, None, request)
    _, offset = decode_request_header(request_frame[4:])
    response_frame = b"".join(encode_response(api_key, version, 1, response))
    body_start = 8 + has_response_header_v1(api_key, version)

    theirs = request_cls.decode(request_frame[4 + offset :], version=version)
    assert _untagged(theirs.to_dict(json=False), request) == _as_kafka_python(api_key, request)
    theirs.with_header(correlation_id=1, client_id=None)
    assert theirs.encode(header=True, framed=True) == request_frame
    theirs = response_cls.decode(response_frame[body_start:], version=version)
    assert _untagged(theirs.to_dict(json=False), response) == _as_kafka_python(api_key, response)
    theirs.with_header(correlation_id=1)
    assert theirs.encode(header=True, framed=True) == response_frame
