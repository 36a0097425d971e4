"""The newest versions of the APIs at the wire, as Kafka 4.x clients speak them: topic ids in
Metadata and Fetch, ListOffsets by maximum timestamp and by time inside compressed batches,
batched coordinator and committed-offset lookups. Every request here is a flexible version
(KIP-482), so each test also exercises the compact encodings and tagged fields end to end."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from pytest_logbench.client import Connection, HarnessClient
from reference_broker.errors import ErrorCode
from reference_broker.protocol import ZERO_UUID, ApiKey
from reference_broker.record_codec import build_batch, iter_records

RECORDS = [(b"k", b"v" * 20, [])] * 3


def _metadata(conn: Connection, name: str | None, topic_id: uuid.UUID = ZERO_UUID) -> Any:
    body = {"topics": [{"topic_id": topic_id, "name": name}], "allow_auto_topic_creation": False}
    [topic] = conn.request(ApiKey.METADATA, 12, body)["topics"]
    return topic


def _fetch_by_id(conn: Connection, topic_id: uuid.UUID, offset: int) -> Any:
    body = {
        "max_wait_ms": 0,
        "min_bytes": 1,
        "topics": [
            {
                "topic_id": topic_id,
                "partitions": [
                    {"partition": 0, "fetch_offset": offset, "partition_max_bytes": 1 << 20}
                ],
            }
        ],
    }
    [topic] = conn.request(ApiKey.FETCH, 16, body)["responses"]
    [partition] = topic["partitions"]
    return topic["topic_id"], partition


def test_topic_ids_are_stable_and_address_fetches(broker):
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("ids")
        client.produce("ids", 0, build_batch(RECORDS, base_timestamp=1_000))
        topic_id = _metadata(client, "ids")["topic_id"]
    assert topic_id != ZERO_UUID

    broker.restart()
    with Connection(broker.bootstrap) as conn:
        assert _metadata(conn, "ids")["topic_id"] == topic_id
        by_id = _metadata(conn, None, topic_id)
        assert (by_id["error_code"], by_id["name"]) == (ErrorCode.NONE, "ids")
        answered_id, partition = _fetch_by_id(conn, topic_id, 1)
        assert answered_id == topic_id
        assert partition["error_code"] == ErrorCode.NONE
        assert partition["high_watermark"] == 3
        records = list(iter_records(partition["records"]))
        assert [(r.offset, r.key, r.value) for r in records] == [
            (i, key, value) for i, (key, value, _) in enumerate(RECORDS)
        ]

        stranger = uuid.uuid4()
        assert _metadata(conn, None, stranger)["error_code"] == ErrorCode.UNKNOWN_TOPIC_ID
        answered_id, partition = _fetch_by_id(conn, stranger, 0)
        assert answered_id == stranger
        assert partition["error_code"] == ErrorCode.UNKNOWN_TOPIC_ID


def _list_offset(conn: Connection, version: int, topic: str, timestamp: int) -> tuple[int, int]:
    body = {
        "replica_id": -1,
        "isolation_level": 0,
        "topics": [{"name": topic, "partitions": [{"partition_index": 0, "timestamp": timestamp}]}],
    }
    [result] = conn.request(ApiKey.LIST_OFFSETS, version, body)["topics"]
    [partition] = result["partitions"]
    assert partition["error_code"] == ErrorCode.NONE
    return partition["offset"], partition["timestamp"]


MAX_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP = -3, -4


def test_list_offsets_max_timestamp_and_earliest_local(broker):
    """v7 adds -3: the first record with the largest timestamp (KIP-734), found even when
    timestamps run backwards inside a batch; v8 adds -4: the earliest offset on local disk."""
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("stamps")
        assert _list_offset(client, 7, "stamps", MAX_TIMESTAMP) == (-1, -1)
        client.produce("stamps", 0, build_batch(RECORDS, timestamps=[100, 300, 200]))
        client.produce("stamps", 0, build_batch(RECORDS, timestamps=[250, 300, 120]))
        assert _list_offset(client, 7, "stamps", MAX_TIMESTAMP) == (1, 300)
        assert _list_offset(client, 8, "stamps", EARLIEST_LOCAL_TIMESTAMP)[0] == 0
        assert _list_offset(client, 8, "stamps", 240) == (1, 300)  # first at or after 240


CODECS = ["gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", CODECS)
def test_list_offsets_by_time_inside_compressed_batches(broker, codec):
    """librdkafka packs all these records into one compressed batch; ListOffsets by time must
    inflate it to find the record, not answer the batch's first offset (as it once did for
    snappy, which the broker could not decode)."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "compression.type": codec, "linger.ms": 50}
    )
    topic = f"by-time-{codec}"
    for i in range(200):
        producer.produce(topic, value=b"x" * 30, key=b"%d" % i, partition=0, timestamp=10_000 + i)
    assert producer.flush(30) == 0
    with Connection(broker.bootstrap) as conn:
        assert _list_offset(conn, 8, topic, 10_123) == (123, 10_123)
        assert _list_offset(conn, 8, topic, MAX_TIMESTAMP) == (199, 10_199)


def test_batched_coordinator_and_committed_offset_lookups(broker):
    """FindCoordinator v4 asks for several keys at once; OffsetFetch v8 for several groups."""
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("committed")
        coordinators = client.request(
            ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["a", "b"]}
        )["coordinators"]
        assert [(c["key"], c["error_code"], c["port"]) for c in coordinators] == [
            ("a", ErrorCode.NONE, int(broker.bootstrap.rsplit(":", 1)[1])),
            ("b", ErrorCode.NONE, int(broker.bootstrap.rsplit(":", 1)[1])),
        ]
        commit = {
            "group_id": "a",
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "topics": [
                {
                    "name": "committed",
                    "partitions": [
                        {"partition_index": 0, "committed_offset": 5, "committed_metadata": "m"}
                    ],
                }
            ],
        }
        [topic] = client.request(ApiKey.OFFSET_COMMIT, 9, commit)["topics"]
        assert topic["partitions"][0]["error_code"] == ErrorCode.NONE
        groups = client.request(
            ApiKey.OFFSET_FETCH,
            9,
            {"groups": [{"group_id": "a", "topics": None}, {"group_id": "b", "topics": None}]},
        )["groups"]
    assert [g["group_id"] for g in groups] == ["a", "b"]
    [committed] = groups[0]["topics"]
    assert committed["name"] == "committed"
    assert [(p["committed_offset"], p["metadata"]) for p in committed["partitions"]] == [(5, "m")]
    assert groups[1]["topics"] == [] and groups[1]["error_code"] == ErrorCode.NONE


def test_join_and_sync_answer_the_groups_protocol_type_and_name(broker):
    """JoinGroup v7+ and SyncGroup v5+ answer with the group's protocol type (and name), which
    the Java client compares with its own: a null there is tolerated, a wrong one is not."""
    group = {"group_id": "typed", "session_timeout_ms": 10_000, "rebalance_timeout_ms": 10_000}
    join = {**group, "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": b""}]}
    with Connection(broker.bootstrap) as conn:
        first = conn.request(ApiKey.JOIN_GROUP, 9, {**join, "member_id": ""})
        assert first["error_code"] == ErrorCode.MEMBER_ID_REQUIRED  # v4+: join again with it
        joined = conn.request(ApiKey.JOIN_GROUP, 9, {**join, "member_id": first["member_id"]})
        assert joined["error_code"] == ErrorCode.NONE
        assert (joined["protocol_type"], joined["protocol_name"]) == ("consumer", "range")
        assert joined["skip_assignment"] is False
        member = joined["member_id"]
        sync = {
            "group_id": "typed",
            "generation_id": joined["generation_id"],
            "member_id": member,
            "protocol_type": "consumer",
            "protocol_name": "range",
            "assignments": [{"member_id": member, "assignment": b"mine"}],
        }
        synced = conn.request(ApiKey.SYNC_GROUP, 5, sync)
    assert (synced["error_code"], synced["assignment"]) == (ErrorCode.NONE, b"mine")
    assert (synced["protocol_type"], synced["protocol_name"]) == ("consumer", "range")
