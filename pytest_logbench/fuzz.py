"""Hypothesis strategies for protocol fuzzing: request frames a hostile client could send.

Bodies follow the broker's own protocol schema (``request_schema``), so a valid frame is valid
for the code under test; mutated frames then break them where decoders are fragile (sizes,
lengths, counts, truncation). Record payloads include batches broken in every way the produce
validator must catch.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import crc32c
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_logbench.strategies import batches, invalid_topic_names, topic_names
from reference_broker.protocol import (
    SCHEMA_VERSIONS,
    ApiKey,
    ArraySchema,
    Primitive,
    StructSchema,
    encode_request,
    request_schema,
)
from reference_broker.protocol.api_keys import api_name

_INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}


FUZZ_TOPICS = ("fuzz-a", "fuzz-b")
"""Topic names most fuzzed requests use, so produces and fetches meet existing logs."""


def _small_or_any(bits: int) -> SearchStrategy[int]:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return st.integers(-2, 10) | st.integers(low, high)


def _mostly(usual: SearchStrategy[Any], other: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """``usual`` three draws in four, ``other`` the rest: steers without ruling anything out."""
    return st.sampled_from([usual, usual, usual, other]).flatmap(lambda chosen: chosen)


_SMALL_INT32 = st.integers(-2, 8)


_FUZZ_TOPIC = _mostly(st.sampled_from(FUZZ_TOPICS), topic_names(30) | invalid_topic_names())


_PARTITION = _mostly(st.just(0), _small_or_any(32))


FUZZ_FIELDS: Mapping[str, SearchStrategy[Any]] = {
    # Kafka honours these waits; huge ones would make a fuzzed request wait for days, which
    # tests nothing but patience (a mutated frame can still carry any value).
    "max_wait_ms": st.integers(-1, 50),
    "timeout_ms": st.integers(-1, 50),
    "session_timeout_ms": st.integers(-1, 3000),
    "rebalance_timeout_ms": st.integers(-1, 50),
    # Produce, Fetch, ListOffsets: mostly to the fuzzed topics' one partition, with valid acks,
    # so that broken batches get as far as the append.
    "name": _FUZZ_TOPIC,
    "topic": _FUZZ_TOPIC,
    "index": _PARTITION,
    "partition": _PARTITION,
    "partition_index": _PARTITION,
    "acks": _mostly(st.sampled_from([-1, 0, 1]), _small_or_any(16)),
    # CreateTopics: often creatable on one broker (replication factor -1 or 1, no manual
    # assignment, known configs), with partition counts either small or above the 10,000 per
    # request that Kafka refuses (KAFKA-17870).
    "topics.num_partitions": _SMALL_INT32 | st.sampled_from([10_001, 2**31 - 1]),
    "topics.replication_factor": _mostly(st.sampled_from([-1, 1]), _small_or_any(16)),
    "CreateTopics:topics.assignments": st.just([])
    | st.lists(
        st.fixed_dictionaries(
            {"partition_index": _SMALL_INT32, "broker_ids": st.lists(_SMALL_INT32, max_size=2)}
        ),
        min_size=1,
        max_size=2,
    ),
    "topics.configs": st.lists(
        st.fixed_dictionaries(
            {
                "name": st.sampled_from(
                    ["retention.ms", "segment.bytes", "cleanup.policy", "bogus"]
                ),
                "value": st.none() | st.sampled_from(["-1", "0", "1024", "delete", "compact", "x"]),
            }
        ),
        max_size=2,
    ),
}
"""Overrides that steer schema-derived fuzz bodies to the broker's logic instead of its first
validation: by field name, or by dotted path (``topics.configs``) where names are ambiguous, or
by API and path (``CreateTopics:topics.assignments``) where paths are."""


def record_payloads() -> SearchStrategy[bytes | None]:
    """``records`` field contents: null, valid batches, batches broken in every way the
    produce-time checks look for (CRC, magic, length, counts, codec, control bit), junk."""
    valid = st.lists(batches(max_records=3), min_size=1, max_size=2).map(
        lambda specs: b"".join(spec.encode() for spec in specs)
    )
    return st.one_of(st.none(), valid, broken_batches(), st.binary(max_size=200))


@st.composite
def broken_batches(draw: st.DrawFn) -> bytes:
    """A batch that Kafka's produce-time validation must refuse (CORRUPT_MESSAGE,
    INVALID_RECORD, MESSAGE_TOO_LARGE...): one defect, with the CRC recomputed when the defect
    is inside the CRC-covered bytes so that the check after the CRC is the one exercised."""
    data = bytearray(draw(batches(max_records=3)).encode())
    defect = draw(
        st.sampled_from(
            [
                "crc_field",
                "flip",
                "magic",
                "length",
                "count",
                "delta",
                "control",
                "codec",
                "truncate",
            ]
        )
    )
    if defect == "crc_field":
        data[17] ^= 1 + draw(st.integers(0, 254))
    elif defect == "flip":
        data[draw(st.integers(21, len(data) - 1))] ^= 1 + draw(st.integers(0, 254))
    elif defect == "magic":
        data[16] = draw(st.sampled_from([0, 1, 3, 255]))
    elif defect == "length":
        struct.pack_into(">i", data, 8, draw(st.integers(-(2**31), 2**31 - 1)))
    elif defect == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    else:
        if defect == "count":
            struct.pack_into(">i", data, 57, draw(st.integers(-3, 10)))
        elif defect == "delta":
            struct.pack_into(">i", data, 23, draw(st.integers(-3, 10)))
        else:
            bits = 0x20 if defect == "control" else draw(st.integers(5, 7))
            struct.pack_into(">h", data, 21, struct.unpack_from(">h", data, 21)[0] | bits)
        struct.pack_into(">I", data, 17, crc32c.crc32c(bytes(data[21:])))
    return bytes(data)


def request_bodies(
    api_key: int, version: int, overrides: Mapping[str, SearchStrategy[Any]] = FUZZ_FIELDS
) -> SearchStrategy[dict[str, Any]]:
    """Bodies that encode as the request ``api_key`` v``version``, derived from its schema:
    every field present, integers at their type's limits as often as small, arrays of 0-3,
    ``records`` from ``record_payloads``; ``overrides`` replaces fields by API and dotted
    path (array levels omitted: ``CreateTopics:topics.assignments``), by dotted path, or else
    by name."""
    return _body(request_schema(api_key, version), overrides, "", f"{api_name(api_key)}:")


def _body(
    schema: StructSchema, overrides: Mapping[str, SearchStrategy[Any]], path: str, api: str
) -> SearchStrategy[dict[str, Any]]:
    fields = {}
    for f in schema.fields:
        where = path + f.name
        found = overrides.get(api + where, overrides.get(where, overrides.get(f.name)))
        if found is None:
            found = _value(f.type, overrides, where + ".", api)
        fields[f.name] = found
    return st.fixed_dictionaries(fields)


def _value(
    type_: Primitive | ArraySchema | StructSchema,
    overrides: Mapping[str, SearchStrategy[Any]],
    path: str,
    api: str,
) -> SearchStrategy[Any]:
    if isinstance(type_, StructSchema):
        return _body(type_, overrides, path, api)
    if isinstance(type_, ArraySchema):
        items = st.lists(_value(type_.element, overrides, path, api), max_size=3)
        return st.none() | items if type_.nullable else items
    if type_.name in _INT_BITS:
        values: SearchStrategy[Any] = _small_or_any(_INT_BITS[type_.name])
    elif type_.name == "bool":
        values = st.booleans()
    elif type_.name == "string":
        values = st.text(max_size=16) | st.text(min_size=200, max_size=400)
    elif type_.name == "records":
        return record_payloads()
    elif type_.name == "uuid":
        values = st.uuids()
    else:
        values = st.binary(max_size=32)
    return st.none() | values if type_.nullable else values


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    """A well-formed request frame (size prefix included) of any key and version the codec
    speaks, its body drawn from ``request_bodies``. Half are Produce or Fetch: the data path,
    where a broken batch must never get into the log."""
    api_key = draw(
        st.sampled_from([ApiKey.PRODUCE, ApiKey.FETCH]) | st.sampled_from(sorted(SCHEMA_VERSIONS))
    )
    low, high = SCHEMA_VERSIONS[api_key]
    version = draw(st.sampled_from(range(low, high + 1)))  # uniform: integers favour the low end
    body = draw(request_bodies(api_key, version))
    client_id = draw(st.none() | st.text(max_size=12))
    return encode_request(api_key, version, draw(st.integers(0, 2**31 - 1)), client_id, body)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A valid frame with one mutation: body bytes flipped, cut or extended (size prefix kept
    right or left wrong), an int32 or int16 overwritten with a huge or negative count or
    length, an unknown API key or version, or a size prefix that lies."""
    frame = bytearray(draw(valid_frames()))
    body_start = 14  # size 4, api key 2, version 2, correlation id 4, client id length 2
    mutation = draw(st.sampled_from(["flip", "cut", "extend", "count", "key", "version", "size"]))
    fix_size = draw(st.booleans())
    if mutation == "flip" and len(frame) > body_start:
        for _ in range(draw(st.integers(1, 4))):
            frame[draw(st.integers(body_start, len(frame) - 1))] ^= 1 + draw(st.integers(0, 254))
    elif mutation == "cut" and len(frame) > body_start:
        del frame[draw(st.integers(body_start, len(frame) - 1)) :]
    elif mutation == "extend":
        frame += draw(st.binary(min_size=1, max_size=64))
    elif mutation == "count" and len(frame) >= body_start + 4:
        position = draw(st.integers(body_start, len(frame) - 4))
        huge = draw(st.sampled_from([2**31 - 1, 2**30, 65_536, -2, -1, -(2**31)]))
        if draw(st.booleans()):
            struct.pack_into(">i", frame, position, huge)
        else:
            struct.pack_into(">h", frame, position, max(-(2**15), min(huge, 2**15 - 1)))
    elif mutation == "key":
        unknown = sorted(set(range(64)) - {int(key) for key in SCHEMA_VERSIONS})
        key = draw(
            st.sampled_from(unknown) | st.integers(64, 2**15 - 1) | st.integers(-(2**15), -1)
        )
        struct.pack_into(">h", frame, 4, key)
    elif mutation == "version":
        struct.pack_into(">h", frame, 6, draw(st.integers(-(2**15), 2**15 - 1)))
    elif mutation == "size":
        fix_size = False
        struct.pack_into(
            ">i", frame, 0, draw(st.integers(-(2**31), 2**31 - 1) | st.integers(0, len(frame) + 8))
        )
    if fix_size:
        struct.pack_into(">i", frame, 0, len(frame) - 4)
    return bytes(frame)


def request_frames() -> SearchStrategy[bytes]:
    """Fuzz frames: mostly mutated valid frames, some valid ones (so that state builds up:
    topics, groups, produced batches), some with a random header and body."""
    random_header = st.builds(
        lambda key, version, body: struct.pack(">ihhi", 8 + len(body), key, version, 1) + body,
        st.integers(-(2**15), 2**15 - 1),
        st.integers(-(2**15), 2**15 - 1),
        st.binary(max_size=64),
    )
    return st.one_of(mutated_frames(), valid_frames(), random_header)
