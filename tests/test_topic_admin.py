"""Topic administration through the admin clients of confluent-kafka, kafka-python and aiokafka:
DeleteRecords, CreatePartitions, AlterConfigs / IncrementalAlterConfigs and DeleteTopics, each
with its edge cases answered with Kafka's error codes, and what the log does with them (the log
start moves and survives a restart, altered configs are honoured, deleted data is gone)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_logbench.client import Connection, HarnessClient, KafkaError
from reference_broker.errors import ErrorCode
from reference_broker.protocol import ApiKey
from reference_broker.record_codec import build_batch

TIMEOUT_S = 30
RECORDS = [(b"k", b"v" * 40, [])]


@dataclass
class Outcome:
    """What an admin client reported, as Kafka error codes (0 for success)."""

    low_watermark: int
    delete_records_beyond_end: int
    grow_partitions: int
    shrink_partitions: int
    set_config: int
    unknown_config: int
    delete_topic: int
    delete_unknown_topic: int


def _code(error: Any) -> int:
    """The Kafka error code in any of the three clients' exceptions (0 for None)."""
    if error is None:
        return 0
    if hasattr(error, "args") and error.args and hasattr(error.args[0], "code"):
        return error.args[0].code()  # confluent-kafka's KafkaException(KafkaError)
    return error.errno  # kafka-python and aiokafka errors


def _confluent(bootstrap: str, topic: str) -> Outcome:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})

    def outcome(futures: dict) -> int:
        [future] = futures.values()
        try:
            future.result(TIMEOUT_S)
        except Exception as exc:
            return _code(exc)
        return 0

    def configs(name: str, value: str, *, incremental: bool) -> dict:
        """IncrementalAlterConfigs, or the legacy AlterConfigs (deprecated in the client)."""
        if not incremental:
            resource = ConfigResource(ResourceType.TOPIC, topic, set_config={name: value})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return admin.alter_configs([resource])
        entry = ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
        return admin.incremental_alter_configs([resource])

    [deleted] = admin.delete_records([TopicPartition(topic, 0, 4)]).values()
    return Outcome(
        low_watermark=deleted.result(TIMEOUT_S).low_watermark,
        delete_records_beyond_end=outcome(admin.delete_records([TopicPartition(topic, 0, 99)])),
        grow_partitions=outcome(admin.create_partitions([NewPartitions(topic, 3)])),
        shrink_partitions=outcome(admin.create_partitions([NewPartitions(topic, 2)])),
        set_config=outcome(configs("retention.ms", "86400000", incremental=True)),
        unknown_config=outcome(configs("no.such.config", "1", incremental=False)),
        delete_topic=outcome(admin.delete_topics([topic])),
        delete_unknown_topic=outcome(admin.delete_topics(["no-such-topic"])),
    )


def _kafka_python(bootstrap: str, topic: str) -> Outcome:
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)

    def outcome(call: Callable[[], Any]) -> int:
        try:
            call()
        except Exception as exc:
            return _code(exc)
        return 0

    def configs(name: str, value: str, *, incremental: bool) -> int:
        """Both APIs: kafka-python reports "OK" or "[Error 40] ..." per resource."""
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={name: value})
        [result] = admin.alter_configs([resource], raise_on_unknown=False, incremental=incremental)[
            "topic"
        ].values()
        return 0 if result == "OK" else int(result.split("]")[0].removeprefix("[Error "))

    try:
        low = admin.delete_records({TopicPartition(topic, 0): 4})
        return Outcome(
            low_watermark=low[TopicPartition(topic, 0)]["low_watermark"],
            delete_records_beyond_end=outcome(
                lambda: admin.delete_records({TopicPartition(topic, 0): 99})
            ),
            grow_partitions=outcome(lambda: admin.create_partitions({topic: NewPartitions(3)})),
            shrink_partitions=outcome(lambda: admin.create_partitions({topic: NewPartitions(2)})),
            set_config=configs("retention.ms", "86400000", incremental=True),
            unknown_config=configs("no.such.config", "1", incremental=False),
            delete_topic=outcome(lambda: admin.delete_topics([topic])),
            delete_unknown_topic=outcome(lambda: admin.delete_topics(["no-such-topic"])),
        )
    finally:
        admin.close()


def _aiokafka(bootstrap: str, topic: str) -> Outcome:
    async def run() -> Outcome:
        from aiokafka import TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, RecordsToDelete
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()

        async def outcome(call: Any) -> int:
            try:
                await call
            except Exception as exc:
                return _code(exc)
            return 0

        async def configs(name: str, value: str) -> int:
            resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={name: value})
            [response] = await admin.alter_configs([resource])
            [(error_code, *_)] = response.resources
            return error_code

        async def topics_error(call: Any) -> int:
            response = await call
            [(_, error_code, *_)] = response.topic_error_codes
            return error_code

        try:
            tp = TopicPartition(topic, 0)
            low = await admin.delete_records({tp: RecordsToDelete(4)})
            return Outcome(
                low_watermark=low[tp],
                delete_records_beyond_end=await outcome(
                    admin.delete_records({tp: RecordsToDelete(99)})
                ),
                grow_partitions=await outcome(admin.create_partitions({topic: NewPartitions(3)})),
                shrink_partitions=await outcome(admin.create_partitions({topic: NewPartitions(2)})),
                set_config=await configs("retention.ms", "86400000"),
                unknown_config=await configs("no.such.config", "1"),
                delete_topic=await topics_error(admin.delete_topics([topic])),
                delete_unknown_topic=await topics_error(admin.delete_topics(["no-such-topic"])),
            )
        finally:
            await admin.close()

    return asyncio.run(asyncio.wait_for(run(), TIMEOUT_S))


ADMINS = {"confluent": _confluent, "kafka-python": _kafka_python, "aiokafka": _aiokafka}


@pytest.mark.parametrize("client", ADMINS)
def test_topic_administration_with_each_admin_client(broker, client):
    topic = f"admin-{client}"
    with HarnessClient(broker.bootstrap) as harness:
        harness.create_topic(topic)
        for _ in range(10):
            harness.produce(topic, 0, build_batch(RECORDS))

        outcome = ADMINS[client](broker.bootstrap, topic)

        assert outcome == Outcome(
            low_watermark=4,
            delete_records_beyond_end=ErrorCode.OFFSET_OUT_OF_RANGE,
            grow_partitions=0,
            shrink_partitions=ErrorCode.INVALID_PARTITIONS,
            set_config=0,
            unknown_config=ErrorCode.INVALID_CONFIG,
            delete_topic=0,
            delete_unknown_topic=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        )
        with pytest.raises(KafkaError) as gone:
            harness.partitions(topic)
        assert gone.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def _delete_records(conn: Connection, topic: str, offset: int) -> tuple[int, int]:
    body = {
        "topics": [{"name": topic, "partitions": [{"partition_index": 0, "offset": offset}]}],
        "timeout_ms": 1000,
    }
    [result] = conn.request(ApiKey.DELETE_RECORDS, 2, body)["topics"]
    [partition] = result["partitions"]
    return partition["error_code"], partition["low_watermark"]


def test_deleted_records_stay_deleted_across_restart(broker):
    """The log start moves inside a segment, segments wholly below it go, fetches below it get
    OFFSET_OUT_OF_RANGE, and the new start is saved before the answer."""
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("trimmed", configs={"segment.bytes": "1024"})
        for _ in range(20):
            client.produce("trimmed", 0, build_batch([(b"k", b"v" * 200, [])]))
        segments_before = len(broker.segment_files("trimmed"))
        assert _delete_records(client, "trimmed", 9) == (ErrorCode.NONE, 9)
        assert _delete_records(client, "trimmed", 5) == (ErrorCode.NONE, 9)  # never backwards
        assert _delete_records(client, "trimmed", 21) == (ErrorCode.OFFSET_OUT_OF_RANGE, -1)
        assert _delete_records(client, "nope", 1)[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert len(broker.segment_files("trimmed")) < segments_before
    broker.restart()
    with HarnessClient(broker.bootstrap) as client:
        assert client.list_offset("trimmed", 0, -2)[0] == 9
        assert client.fetch("trimmed", 0, 8).error == ErrorCode.OFFSET_OUT_OF_RANGE
        fetched = client.fetch("trimmed", 0, 9)
        assert fetched.error == ErrorCode.NONE and fetched.log_start_offset == 9
        assert _delete_records(client, "trimmed", -1) == (ErrorCode.NONE, 20)  # -1: the end
        assert client.produce("trimmed", 0, build_batch(RECORDS)) == 20


def _alter(conn: Connection, api: ApiKey, topic: str, configs: list[dict[str, Any]]) -> Any:
    body = {
        "resources": [{"resource_type": 2, "resource_name": topic, "configs": configs}],
        "validate_only": False,
    }
    [response] = conn.request(api, 1, body)["responses"]
    return response["error_code"]


def test_altered_configs_are_honoured_and_kept(broker):
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("tuned")
        segment_bytes = {"name": "segment.bytes", "config_operation": 0, "value": "1024"}
        assert _alter(client, ApiKey.INCREMENTAL_ALTER_CONFIGS, "tuned", [segment_bytes]) == 0
        for _ in range(10):
            client.produce("tuned", 0, build_batch([(b"k", b"v" * 300, [])]))
        assert len(broker.segment_files("tuned")) > 1  # rolled at the new 1 KiB
        bad = {"name": "segment.bytes", "config_operation": 0, "value": "12"}
        assert _alter(client, ApiKey.INCREMENTAL_ALTER_CONFIGS, "tuned", [bad]) == 40
        append = {"name": "cleanup.policy", "config_operation": 2, "value": "compact"}
        assert _alter(client, ApiKey.INCREMENTAL_ALTER_CONFIGS, "tuned", [append]) == 40
        assert _alter(client, ApiKey.ALTER_CONFIGS, "nope", []) == 3
    broker.restart()
    with HarnessClient(broker.bootstrap) as client:
        assert _described(client, "tuned")["segment.bytes"] == "1024"
        assert _alter(client, ApiKey.ALTER_CONFIGS, "tuned", []) == 0  # all back to defaults
        assert _described(client, "tuned")["segment.bytes"] == str(1 << 30)


def _described(conn: Connection, topic: str) -> dict[str, str]:
    body = {"resources": [{"resource_type": 2, "resource_name": topic, "configuration_keys": None}]}
    [result] = conn.request(ApiKey.DESCRIBE_CONFIGS, 4, body)["results"]
    return {c["name"]: c["value"] for c in result["configs"]}


def test_topics_deleted_by_id_do_not_come_back(broker):
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("doomed", partitions=2)
        client.produce("doomed", 1, build_batch(RECORDS))
        [topic] = client.request(
            ApiKey.METADATA,
            12,
            {"topics": [{"name": "doomed"}], "allow_auto_topic_creation": False},
        )["topics"]
        body = {"topics": [{"name": None, "topic_id": topic["topic_id"]}], "timeout_ms": 1000}
        [deleted] = client.request(ApiKey.DELETE_TOPICS, 6, body)["responses"]
        assert (deleted["name"], deleted["error_code"]) == ("doomed", ErrorCode.NONE)
        [again] = client.request(ApiKey.DELETE_TOPICS, 6, body)["responses"]
        assert again["error_code"] == ErrorCode.UNKNOWN_TOPIC_ID
        internal = {"topic_names": ["__consumer_offsets"], "timeout_ms": 1000}
        [refused] = client.request(ApiKey.DELETE_TOPICS, 5, internal)["responses"]
        assert refused["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION
        grow = {
            "topics": [{"name": "__consumer_offsets", "count": 99, "assignments": None}],
            "timeout_ms": 1000,
            "validate_only": False,
        }
        [refused] = client.request(ApiKey.CREATE_PARTITIONS, 3, grow)["results"]
        assert refused["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION
        assert _delete_records(client, "__consumer_offsets", 0)[0] == (
            ErrorCode.INVALID_TOPIC_EXCEPTION
        )
    broker.restart()
    with HarnessClient(broker.bootstrap) as client:
        assert "doomed" not in [
            t["name"] for t in client.request(ApiKey.METADATA, 12, {"topics": None})["topics"]
        ]
        client.create_topic("doomed")
        assert client.list_offset("doomed", 0, -1)[0] == 0  # a new, empty topic
