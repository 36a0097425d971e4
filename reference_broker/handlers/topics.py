"""Metadata and topic administration (CreateTopics, DeleteTopics, CreatePartitions,
DeleteRecords, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs): what the cluster holds
and how its topics are configured."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from reference_broker.errors import ErrorCode
from reference_broker.groups import OFFSETS_TOPIC
from reference_broker.handlers.common import (
    CLUSTER_ID,
    INTERNAL_TOPICS,
    NO_AUTHORIZED_OPERATIONS,
    Body,
    Request,
    auto_create,
    partition_or_error,
    topic_id_of,
)
from reference_broker.log import (
    InvalidConfig,
    InvalidPartitions,
    InvalidTopic,
    LogError,
    TopicExists,
    validate_topic_name,
)
from reference_broker.protocol import ZERO_UUID

if TYPE_CHECKING:
    from reference_broker.server import Broker


async def handle_metadata(broker: Broker, request: Request) -> Body:
    body, version = request.body, request.version
    requested = body.get("topics")
    unknown_ids = []
    if requested is None or (version == 0 and not requested):
        names = sorted(broker.store.topics())
    else:
        names = []
        for wanted in requested:  # v10+ may name a topic by its id instead (name null)
            name = wanted["name"]
            if name is None:
                name = broker.store.topic_name(wanted["topic_id"])
            if name is None:
                unknown_ids.append(wanted["topic_id"])
            else:
                names.append(name)
    allow_create = body.get("allow_auto_topic_creation", True) if version >= 4 else True
    if OFFSETS_TOPIC in names and allow_create and broker.config.auto_create_topics:
        broker.offsets.create_topic()  # Kafka creates its internal topic for a client naming it
    errors = await auto_create(broker, names) if allow_create else {}
    topics = [_topic_metadata(broker, name, errors.get(name)) for name in names]
    topics += [
        {
            "error_code": ErrorCode.UNKNOWN_TOPIC_ID,
            "name": None if version >= 12 else "",
            "topic_id": topic_id,
            "partitions": [],
        }
        for topic_id in unknown_ids
    ]
    return {
        "throttle_time_ms": 0,
        "brokers": [
            {
                "node_id": broker.config.node_id,
                "host": broker.host,
                "port": broker.port,
                "rack": None,
            }
        ],
        "cluster_id": CLUSTER_ID,
        "controller_id": broker.config.node_id,
        "topics": topics,
        "cluster_authorized_operations": NO_AUTHORIZED_OPERATIONS,
    }


def _topic_metadata(broker: Broker, name: str, error: ErrorCode | None) -> Body:
    found = error or partition_or_error(broker, name, 0, create=False)
    if isinstance(found, ErrorCode):
        return {
            "error_code": found,
            "name": name,
            "topic_id": topic_id_of(broker, name),
            "is_internal": False,
            "partitions": [],
            "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS,
        }
    node = broker.config.node_id
    partitions = [
        {
            "error_code": ErrorCode.NONE,
            "partition_index": index,
            "leader_id": node,
            "leader_epoch": 0,
            "replica_nodes": [node],
            "isr_nodes": [node],
            "offline_replicas": [],
        }
        for index in range(broker.store.topics()[name])
    ]
    return {
        "error_code": ErrorCode.NONE,
        "name": name,
        "topic_id": broker.store.topic_id(name),
        "is_internal": name in INTERNAL_TOPICS,
        "partitions": partitions,
        "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS,
    }


MAX_PARTITIONS_PER_REQUEST = 10_000
"""Kafka refuses a CreateTopics request for more partitions than this in total (KAFKA-17870,
"Excessively large number of partitions per request"); a fuzzer's num_partitions of
2**31 - 1 would otherwise fill the disk."""


async def handle_create_topics(broker: Broker, request: Request) -> Body:
    body = request.body
    requested = sum(
        broker.config.num_partitions if t["num_partitions"] == -1 else max(t["num_partitions"], 0)
        for t in body["topics"]
    )
    cap = broker.config.max_created_partitions_per_request
    if requested > MAX_PARTITIONS_PER_REQUEST:
        # Kafka answers POLICY_VIOLATION; INVALID_PARTITIONS names the problem as well.
        error, message = (
            ErrorCode.INVALID_PARTITIONS,
            (
                f"Excessively large number of partitions per request: {requested} > "
                f"{MAX_PARTITIONS_PER_REQUEST}"
            ),
        )
    elif requested > cap:
        # Partitions are created on the event loop (about 0.2 ms each, more on a busy disk):
        # the cap keeps one request from stalling every other client for seconds.
        error, message = (
            ErrorCode.POLICY_VIOLATION,
            (
                f"{requested} partitions in one request exceed this broker's "
                f"--max-created-partitions-per-request {cap}; create them in several requests"
            ),
        )
    else:
        results = []
        for topic in body["topics"]:
            error, message = _create_topic(broker, topic, validate_only=body.get("validate_only"))
            result = {"name": topic["name"], "error_code": error, "error_message": message}
            if topic["name"] in broker.store.topics() and error == ErrorCode.NONE:
                result.update(_created(broker, topic["name"]))
            results.append(result)
            await asyncio.sleep(0)  # let other connections in between topics
        return {"throttle_time_ms": 0, "topics": results}
    return {
        "throttle_time_ms": 0,
        "topics": [
            {"name": t["name"], "error_code": error, "error_message": message}
            for t in body["topics"]
        ],
    }


def _created(broker: Broker, name: str) -> Body:
    """What CreateTopics v5+ tells of a topic it created (v7+: its id too)."""
    overrides = broker.store.topic_overrides(name)
    configs = broker.store.topic_config(name).topic_configs()
    return {
        "topic_id": broker.store.topic_id(name),
        "num_partitions": broker.store.topics()[name],
        "replication_factor": 1,
        "configs": [
            {
                "name": key,
                "value": value,
                "read_only": False,
                "config_source": _config_source(RESOURCE_TOPIC, key in overrides),
                "is_sensitive": False,
            }
            for key, value in sorted(configs.items())
        ],
    }


def _create_topic(
    broker: Broker, topic: Body, *, validate_only: bool
) -> tuple[ErrorCode, str | None]:
    partitions = topic["num_partitions"]
    partitions = broker.config.num_partitions if partitions == -1 else partitions
    if topic["replication_factor"] not in (-1, 1):
        return ErrorCode.INVALID_REPLICATION_FACTOR, "the reference broker is a single node"
    if topic.get("assignments"):
        return ErrorCode.INVALID_REQUEST, "manual replica assignments are not supported"
    if partitions < 1:
        return ErrorCode.INVALID_PARTITIONS, f"num_partitions must be >= 1, got {partitions}"
    if topic["name"] in INTERNAL_TOPICS:
        return ErrorCode.INVALID_TOPIC_EXCEPTION, f"{topic['name']!r} is an internal topic name"
    overrides = {c["name"]: c["value"] for c in topic.get("configs", [])}
    try:
        validate_topic_name(topic["name"])
        if topic["name"] in broker.store.topics():
            raise TopicExists(f"topic {topic['name']!r} already exists")
        if not validate_only:
            broker.store.create_topic(topic["name"], partitions, overrides)
    except (InvalidTopic, TopicExists, InvalidConfig) as exc:
        return exc.error_code, str(exc)
    return ErrorCode.NONE, None


# DescribeConfigs resource types and config sources (Kafka's ConfigResource / ConfigSource).
RESOURCE_TOPIC, RESOURCE_BROKER = 2, 4
CONFIG_SOURCE_TOPIC, CONFIG_SOURCE_STATIC_BROKER, CONFIG_SOURCE_DEFAULT = 1, 4, 5


async def handle_describe_configs(broker: Broker, request: Request) -> Body:
    results = []
    for resource in request.body["resources"]:
        kind, name = resource["resource_type"], resource["resource_name"]
        error, message, configs, overridden = ErrorCode.NONE, None, {}, set()
        if kind == RESOURCE_TOPIC and name in broker.store.topics():
            configs = broker.store.topic_config(name).topic_configs()
            overridden = set(broker.store.topic_overrides(name))
        elif kind == RESOURCE_TOPIC:
            error, message = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}"
        elif kind == RESOURCE_BROKER:
            configs = {
                "broker.id": str(broker.config.node_id),
                "auto.create.topics.enable": str(broker.config.auto_create_topics).lower(),
                "num.partitions": str(broker.config.num_partitions),
            }
        else:
            error, message = ErrorCode.INVALID_REQUEST, f"resource type {kind} is not supported"
        wanted = resource.get("configuration_keys")
        entries = [
            {
                "name": key,
                "value": value,
                "read_only": kind == RESOURCE_BROKER,
                "is_default": key not in overridden and kind == RESOURCE_TOPIC,
                "config_source": _config_source(kind, key in overridden),
                "is_sensitive": False,
                "synonyms": [],
                "config_type": 0,
                "documentation": None,
            }
            for key, value in sorted(configs.items())
            if wanted is None or key in wanted
        ]
        results.append(
            {
                "error_code": error,
                "error_message": message,
                "resource_type": kind,
                "resource_name": name,
                "configs": entries,
            }
        )
    return {"throttle_time_ms": 0, "results": results}


def _config_source(kind: int, overridden: bool) -> int:
    if kind == RESOURCE_BROKER:
        return CONFIG_SOURCE_STATIC_BROKER
    return CONFIG_SOURCE_TOPIC if overridden else CONFIG_SOURCE_DEFAULT


def _refusal(name: str) -> tuple[ErrorCode, str] | None:
    """Why a topic administration request may not touch ``name``: an internal topic, whether
    it exists or not (the offsets topic is created at the first group lookup)."""
    if name in INTERNAL_TOPICS:
        return ErrorCode.INVALID_TOPIC_EXCEPTION, f"{name!r} is an internal topic"
    return None


async def handle_delete_topics(broker: Broker, request: Request) -> Body:
    """Delete topics named (v0-5) or named or given by id (v6+); their data goes with them."""
    body = request.body
    wanted = body["topics"] if request.version >= 6 else [{"name": n} for n in body["topic_names"]]
    responses = []
    for topic in wanted:
        name, topic_id = topic.get("name"), topic.get("topic_id", ZERO_UUID)
        if name is None:
            name = broker.store.topic_name(topic_id)
        error, message = ErrorCode.NONE, None
        if name is None:
            error, message = ErrorCode.UNKNOWN_TOPIC_ID, f"no topic has id {topic_id}"
        elif refused := _refusal(name):
            error, message = refused
        elif name not in broker.store.topics():
            error, message = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}"
        else:
            topic_id = broker.store.topic_id(name)
            try:
                broker.store.delete_topic(name)
            except OSError as exc:
                error, message = ErrorCode.KAFKA_STORAGE_ERROR, f"deleting {name!r}: {exc}"
            await asyncio.sleep(0)
        responses.append(
            {
                "name": name if name is not None or request.version >= 6 else "",
                "topic_id": topic_id,
                "error_code": error,
                "error_message": message,
            }
        )
    return {"throttle_time_ms": 0, "responses": responses}


async def handle_create_partitions(broker: Broker, request: Request) -> Body:
    """Add partitions to topics, within the same per-request bounds as CreateTopics."""
    body = request.body
    results = []
    budget = min(MAX_PARTITIONS_PER_REQUEST, broker.config.max_created_partitions_per_request)
    for topic in body["topics"]:
        name, count = topic["name"], topic["count"]
        current = broker.store.topics().get(name)
        error, message = ErrorCode.NONE, None
        if refused := _refusal(name):
            error, message = refused
        elif current is None:
            error, message = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}"
        elif topic["assignments"] is not None:
            error, message = (
                ErrorCode.INVALID_REQUEST,
                "manual replica assignments are not supported",
            )
        elif count - current > budget:
            error, message = (
                ErrorCode.POLICY_VIOLATION,
                f"{count - current} new partitions exceed the {budget} this broker creates in "
                "one request",
            )
        else:
            try:
                broker.store.add_partitions(name, count, validate_only=body["validate_only"])
            except InvalidPartitions as exc:
                error, message = exc.error_code, str(exc)
            except OSError as exc:
                error, message = ErrorCode.KAFKA_STORAGE_ERROR, f"adding partitions: {exc}"
            else:
                budget -= count - current
            await asyncio.sleep(0)
        results.append({"name": name, "error_code": error, "error_message": message})
    return {"throttle_time_ms": 0, "results": results}


async def handle_delete_records(broker: Broker, request: Request) -> Body:
    """Move partitions' log start offsets up (DeleteRecords); -1 means the high watermark."""
    topics = []
    for topic in request.body["topics"]:
        partitions = []
        for wanted in topic["partitions"]:
            index, low, error = wanted["partition_index"], -1, ErrorCode.NONE
            log = broker.store.partition(topic["name"], index)
            if _refusal(topic["name"]):
                error = ErrorCode.INVALID_TOPIC_EXCEPTION
            elif log is None:
                error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            else:
                try:
                    low = log.delete_records(wanted["offset"])
                except LogError as exc:
                    error = exc.error_code
            partitions.append({"partition_index": index, "low_watermark": low, "error_code": error})
        topics.append({"name": topic["name"], "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}


# IncrementalAlterConfigs' operations (Kafka's AlterConfigOp.OpType).
OP_SET, OP_DELETE = 0, 1


async def handle_alter_configs(broker: Broker, request: Request) -> Body:
    """Replace a topic's whole set of overrides (the legacy API's meaning)."""
    return _alter_configs(
        broker,
        request.body,
        lambda _current, configs: {
            c["name"]: c["value"] for c in configs if c["value"] is not None
        },
    )


async def handle_incremental_alter_configs(broker: Broker, request: Request) -> Body:
    """Set or delete single overrides; append and subtract apply to list configs, of which
    this broker has none that can take more than one value."""
    return _alter_configs(broker, request.body, _apply_operations)


def _apply_operations(current: dict[str, str], configs: list[Body]) -> dict[str, str]:
    changed = dict(current)
    for config in configs:
        operation, key = config["config_operation"], config["name"]
        if operation == OP_SET:
            changed[key] = config["value"]
        elif operation == OP_DELETE:
            changed.pop(key, None)
        else:
            raise InvalidConfig(f"operation {operation} on {key!r}: not a list config here")
    return changed


def _alter_configs(
    broker: Broker,
    body: Body,
    changed: Callable[[dict[str, str], list[Body]], dict[str, str]],
) -> Body:
    responses = []
    for resource in body["resources"]:
        kind, name = resource["resource_type"], resource["resource_name"]
        error, message = ErrorCode.NONE, None
        if kind == RESOURCE_BROKER:
            error, message = ErrorCode.INVALID_REQUEST, "broker configs are static here"
        elif kind != RESOURCE_TOPIC:
            error, message = ErrorCode.INVALID_REQUEST, f"resource type {kind} is not supported"
        elif name not in broker.store.topics():
            error, message = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}"
        else:
            try:
                overrides = changed(broker.store.topic_overrides(name), resource["configs"])
                broker.store.alter_topic_config(
                    name, overrides, validate_only=body["validate_only"]
                )
            except InvalidConfig as exc:
                error, message = exc.error_code, str(exc)
            except OSError as exc:
                error, message = ErrorCode.KAFKA_STORAGE_ERROR, f"saving configs: {exc}"
        responses.append(
            {
                "error_code": error,
                "error_message": message,
                "resource_type": kind,
                "resource_name": name,
            }
        )
    return {"throttle_time_ms": 0, "responses": responses}
