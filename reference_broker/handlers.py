"""One function per API key: a decoded request dict in, a response dict out.

Handlers translate between the wire's shapes and the log's and the group coordinator's calls.
They hold no state of their own: everything lives on the ``Broker`` they are given. Field names
are the snake_case forms of Kafka's JSON message definitions (see ``reference_broker.protocol``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reference_broker.errors import ErrorCode
from reference_broker.groups import OFFSETS_TOPIC
from reference_broker.log import (
    InvalidConfig,
    InvalidTopic,
    LogError,
    OffsetOutOfRange,
    TopicExists,
    validate_topic_name,
)
from reference_broker.log.partition import PartitionLog
from reference_broker.protocol import SCHEMA_VERSIONS, ApiKey, RequestHeader
from reference_broker.records import InvalidBatch

if TYPE_CHECKING:
    from reference_broker.server import Broker

Body = dict[str, Any]

# What the broker advertises in ApiVersions: every version the codec speaks, for every API key
# with a handler (the table at the end of this module). All are implemented, except Produce 0-2:
# advertised (as Kafka 4 does) because older librdkafka enables gzip/snappy only when Produce v0
# is in range, and rejected at request time since they carry pre-v2 message formats.
FIRST_PRODUCE_VERSION_ACCEPTED = 3

CLUSTER_ID = "logbench-reference-broker"
NO_AUTHORIZED_OPERATIONS = -(2**31)
INTERNAL_TOPICS = frozenset(
    {OFFSETS_TOPIC, "__transaction_state", "__share_group_state", "__cluster_metadata"}
)
"""Names Kafka keeps for itself (its internal topics and the KRaft metadata log). Clients may
read them but never write or create them: one foreign record in ``__consumer_offsets`` is a
record the offsets loader cannot decode (Kafka: "Cannot append to internal topic")."""


class CloseConnection(Exception):
    """Raised by a handler when Kafka would close the connection instead of answering
    (for example an acks=0 produce that failed: there is no response to carry the error)."""


@dataclass(frozen=True)
class Request:
    """A decoded request and where it came from."""

    header: RequestHeader
    body: Body
    client_host: str

    @property
    def version(self) -> int:
        return self.header.api_version


Handler = Callable[["Broker", Request], Awaitable[Body | None]]


# --- helpers ---------------------------------------------------------------------------------


def _partition_or_error(
    broker: Broker, topic: str, partition: int, *, create: bool
) -> PartitionLog | ErrorCode:
    """The partition's log, auto-creating the topic when allowed, or the error to answer."""
    try:
        validate_topic_name(topic)
    except InvalidTopic:
        return ErrorCode.INVALID_TOPIC_EXCEPTION
    log = broker.store.partition(topic, partition)
    if log is not None:
        return log
    if create and broker.config.auto_create_topics and topic not in broker.store.topics():
        if topic in INTERNAL_TOPICS:
            return ErrorCode.INVALID_TOPIC_EXCEPTION
        try:
            broker.store.create_topic(topic, broker.config.num_partitions)
        except LogError as exc:  # e.g. "a.b" when "a_b" exists: their metric names collide
            return exc.error_code
        log = broker.store.partition(topic, partition)
    return log if log is not None else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


async def _auto_create(broker: Broker, names: Iterable[str]) -> dict[str, ErrorCode]:
    """Auto-create the missing topics among ``names``; return the error of each that failed.

    Kafka creates every topic a request names. Here creation runs on the event loop (a topic
    costs a metadata rewrite and directories), so one request may create at most
    ``max_created_partitions_per_request`` partitions, yielding to the loop after each topic;
    the topics beyond get LEADER_NOT_AVAILABLE, the retriable answer Kafka gives while an
    auto-created topic is not ready, and the client's retry creates the next share.
    """
    budget = broker.config.max_created_partitions_per_request
    errors: dict[str, ErrorCode] = {}
    for name in dict.fromkeys(names):
        if name in broker.store.topics() or not broker.config.auto_create_topics:
            continue
        if broker.config.num_partitions > budget:
            errors[name] = ErrorCode.LEADER_NOT_AVAILABLE
            broker.metrics.add("logbench_auto_create_deferred_topics_total")
            continue
        found = _partition_or_error(broker, name, 0, create=True)
        if isinstance(found, ErrorCode):
            errors[name] = found
        else:
            budget -= broker.config.num_partitions
            await asyncio.sleep(0)
    return errors


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- ApiVersions, Metadata, topics -----------------------------------------------------------


def api_versions_body(error: ErrorCode = ErrorCode.NONE) -> Body:
    """The ApiVersions response; also sent (as v0) to clients asking with a newer version."""
    return {
        "error_code": error,
        "api_keys": [
            {"api_key": int(key), "min_version": lo, "max_version": hi}
            for key, (lo, hi) in sorted(ADVERTISED.items())
        ],
        "throttle_time_ms": 0,
    }


async def handle_api_versions(broker: Broker, request: Request) -> Body:
    return api_versions_body()


async def handle_metadata(broker: Broker, request: Request) -> Body:
    body, version = request.body, request.version
    requested = body.get("topics")
    if requested is None or (version == 0 and not requested):
        names = sorted(broker.store.topics())
    else:
        names = [t["name"] for t in requested]
    allow_create = body.get("allow_auto_topic_creation", True) if version >= 4 else True
    errors = await _auto_create(broker, names) if allow_create else {}
    topics = [_topic_metadata(broker, name, errors.get(name)) for name in names]
    return {
        "throttle_time_ms": 0,
        "brokers": [
            {"node_id": broker.config.node_id, "host": broker.host, "port": broker.port,
             "rack": None}
        ],
        "cluster_id": CLUSTER_ID,
        "controller_id": broker.config.node_id,
        "topics": topics,
        "cluster_authorized_operations": NO_AUTHORIZED_OPERATIONS,
    }


def _topic_metadata(broker: Broker, name: str, error: ErrorCode | None) -> Body:
    found = error or _partition_or_error(broker, name, 0, create=False)
    if isinstance(found, ErrorCode):
        return {"error_code": found, "name": name, "is_internal": False, "partitions": [],
                "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS}
    node = broker.config.node_id
    partitions = [
        {"error_code": ErrorCode.NONE, "partition_index": index, "leader_id": node,
         "leader_epoch": 0, "replica_nodes": [node], "isr_nodes": [node], "offline_replicas": []}
        for index in range(broker.store.topics()[name])
    ]
    return {"error_code": ErrorCode.NONE, "name": name,
            "is_internal": name in INTERNAL_TOPICS, "partitions": partitions,
            "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS}


MAX_PARTITIONS_PER_REQUEST = 10_000
"""Kafka refuses a CreateTopics request for more partitions than this in total (KAFKA-17870,
"Excessively large number of partitions per request"); a fuzzer's num_partitions of
2**31 - 1 would otherwise fill the disk."""


async def handle_create_topics(broker: Broker, request: Request) -> Body:
    body = request.body
    requested = sum(broker.config.num_partitions if t["num_partitions"] == -1
                    else max(t["num_partitions"], 0) for t in body["topics"])
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
            results.append({"name": topic["name"], "error_code": error, "error_message": message})
            await asyncio.sleep(0)  # let other connections in between topics
        return {"throttle_time_ms": 0, "topics": results}
    return {
        "throttle_time_ms": 0,
        "topics": [
            {"name": t["name"], "error_code": error, "error_message": message}
            for t in body["topics"]
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
            configs = {"broker.id": str(broker.config.node_id),
                       "auto.create.topics.enable": str(broker.config.auto_create_topics).lower(),
                       "num.partitions": str(broker.config.num_partitions)}
        else:
            error, message = ErrorCode.INVALID_REQUEST, f"resource type {kind} is not supported"
        wanted = resource.get("configuration_keys")
        entries = [
            {"name": key, "value": value, "read_only": kind == RESOURCE_BROKER,
             "is_default": key not in overridden and kind == RESOURCE_TOPIC,
             "config_source": _config_source(kind, key in overridden), "is_sensitive": False,
             "synonyms": [], "config_type": 0, "documentation": None}
            for key, value in sorted(configs.items())
            if wanted is None or key in wanted
        ]
        results.append({"error_code": error, "error_message": message, "resource_type": kind,
                        "resource_name": name, "configs": entries})
    return {"throttle_time_ms": 0, "results": results}


def _config_source(kind: int, overridden: bool) -> int:
    if kind == RESOURCE_BROKER:
        return CONFIG_SOURCE_STATIC_BROKER
    return CONFIG_SOURCE_TOPIC if overridden else CONFIG_SOURCE_DEFAULT


# --- Produce ---------------------------------------------------------------------------------


async def handle_produce(broker: Broker, request: Request) -> Body | None:
    body, version = request.body, request.version
    acks = body["acks"]
    responses, failures = [], []
    refused: dict[str, ErrorCode] = {}
    if version >= FIRST_PRODUCE_VERSION_ACCEPTED and acks in (-1, 0, 1):
        refused = await _auto_create(broker, (t["name"] for t in body["topic_data"]))
    for topic in body["topic_data"]:
        partitions = []
        for data in topic["partition_data"]:
            if version < FIRST_PRODUCE_VERSION_ACCEPTED:
                error, base, log, message = (ErrorCode.UNSUPPORTED_VERSION, -1, None,
                                             "produce v0-2 carry pre-v2 message formats")
            elif acks not in (-1, 0, 1):
                error, base, log, message = (ErrorCode.INVALID_REQUIRED_ACKS, -1, None,
                                             f"acks must be -1, 0 or 1, got {acks}")
            elif topic["name"] in INTERNAL_TOPICS:
                error, base, log, message = (
                    ErrorCode.INVALID_TOPIC_EXCEPTION,
                    -1,
                    None,
                    f"Cannot append to internal topic {topic['name']}",
                )
            elif topic["name"] in refused:
                error, base, log, message = refused[topic["name"]], -1, None, None
            else:
                error, base, log, message = _append(broker, topic["name"], data)
            if error != ErrorCode.NONE:
                failures.append(f"{topic['name']}-{data['index']}: {error.name} {message or ''}")
            partitions.append({
                "index": data["index"], "error_code": error, "base_offset": base,
                "log_append_time_ms": -1,
                "log_start_offset": log.log_start_offset if log else -1,
                "record_errors": [], "error_message": message,
            })
        responses.append({"name": topic["name"], "partition_responses": partitions})
    if acks == 0:
        if failures:
            raise CloseConnection("acks=0 produce failed: " + "; ".join(failures))
        return None
    return {"responses": responses, "throttle_time_ms": 0}


def _append(
    broker: Broker, topic: str, data: Body
) -> tuple[ErrorCode, int, PartitionLog | None, str | None]:
    found = _partition_or_error(broker, topic, data["index"], create=True)
    if isinstance(found, ErrorCode):
        return found, -1, None, None
    records = data["records"]
    try:
        result = found.append(records if records is not None else b"")
    except (InvalidBatch, LogError) as exc:
        broker.metrics.add("logbench_produce_rejected_batches_total", error=exc.error_code.name)
        return exc.error_code, -1, found, str(exc)
    if result.duplicate:  # an idempotent producer's retry: answered, nothing appended
        broker.metrics.add("logbench_produce_duplicate_batches_total")
    else:
        broker.metrics.add("logbench_produce_bytes_total", result.size)
        broker.metrics.add("logbench_produce_records_total", result.record_count)
        broker.appends.notify(topic, data["index"])
    return ErrorCode.NONE, result.base_offset, found, None


async def handle_init_producer_id(broker: Broker, request: Request) -> Body:
    if request.body.get("transactional_id") is not None:
        return {"throttle_time_ms": 0, "error_code": ErrorCode.INVALID_REQUEST,
                "producer_id": -1, "producer_epoch": -1}
    try:
        producer_id = broker.producer_ids.allocate()
    except LogError as exc:
        return {"throttle_time_ms": 0, "error_code": exc.error_code,
                "producer_id": -1, "producer_epoch": -1}
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE,
            "producer_id": producer_id, "producer_epoch": 0}


# --- Fetch and ListOffsets -------------------------------------------------------------------


@dataclass
class _FetchRead:
    topic: str
    partition: Body
    tail_distance: int = -1
    length: int = 0


async def handle_fetch(broker: Broker, request: Request) -> Body:
    """Read every requested partition; long-poll until min_bytes arrive or max_wait passes."""
    body = request.body
    deadline = time.monotonic() + body["max_wait_ms"] / 1000
    wanted = _distinct_partitions(body)
    # Kafka caps a response at the smaller of the request's max_bytes (absent before v3) and
    # the broker's fetch.max.bytes, which also keeps it far below the 2 GiB a size field holds.
    budget = min(
        body.get("max_bytes", broker.config.fetch_max_bytes), broker.config.fetch_max_bytes
    )
    while True:
        reads = list(_read_partitions(broker, wanted, budget))
        total = sum(r.length for r in reads)
        errors = any(r.partition["error_code"] != ErrorCode.NONE for r in reads)
        remaining = deadline - time.monotonic()
        if total >= body["min_bytes"] or errors or not wanted or remaining <= 0:
            break
        await broker.appends.wait(wanted, remaining)
    for read in reads:
        if read.length:
            kind = "tail" if read.tail_distance <= broker.config.tail_window_bytes else "history"
            broker.metrics.add("logbench_fetch_bytes_total", read.length, read=kind)
            broker.metrics.add("logbench_fetch_reads_total", 1, read=kind)
    topics: dict[str, list[Body]] = {}
    for read in reads:
        topics.setdefault(read.topic, []).append(read.partition)
    return {
        "throttle_time_ms": 0, "error_code": ErrorCode.NONE, "session_id": 0,
        "responses": [{"topic": name, "partitions": parts} for name, parts in topics.items()],
    }


def _distinct_partitions(body: Body) -> dict[tuple[str, int], Body]:
    """The requested partitions, each once: Kafka keys a fetch by partition, so a partition
    named twice is read once (with its last entry), not once per mention."""
    return {(t["topic"], p["partition"]): p for t in body["topics"] for p in t["partitions"]}


def _read_partitions(
    broker: Broker, wanted: dict[tuple[str, int], Body], budget: int
) -> Iterator[_FetchRead]:
    # KIP-74: the first partition with data gets its whole first batch even when that batch is
    # larger than the limits, so a consumer can always make progress.
    sent_any = False
    for (topic, index), wanted_partition in wanted.items():
        response = {
            "partition_index": index,
            "error_code": ErrorCode.NONE,
            "high_watermark": -1,
            "last_stable_offset": -1,
            "log_start_offset": -1,
            "aborted_transactions": None,
            "preferred_read_replica": -1,
            "records": b"",
        }
        read = _FetchRead(topic, response)
        found = _partition_or_error(broker, topic, index, create=False)
        if isinstance(found, ErrorCode):
            response["error_code"] = found
            yield read
            continue
        limit = min(wanted_partition["partition_max_bytes"], budget)
        try:
            result = found.read(wanted_partition["fetch_offset"], max(limit, 1))
        except OffsetOutOfRange:
            result = None
            response["error_code"] = ErrorCode.OFFSET_OUT_OF_RANGE
        response["high_watermark"] = found.log_end_offset
        response["last_stable_offset"] = found.log_end_offset
        response["log_start_offset"] = found.log_start_offset
        piece = result.slice if result is not None else None
        if piece is not None and (piece.length <= limit or not sent_any):
            response["records"] = piece
            read.length, read.tail_distance = piece.length, result.tail_distance
            budget -= piece.length
            sent_any = True
        yield read


async def handle_list_offsets(broker: Broker, request: Request) -> Body:
    topics = []
    for topic in request.body["topics"]:
        partitions = []
        for wanted in topic["partitions"]:
            error, offset, timestamp = _list_offset(broker, topic["name"], wanted)
            partitions.append({
                "partition_index": wanted["partition_index"], "error_code": error,
                "old_style_offsets": [offset] if offset >= 0 else [],
                "timestamp": timestamp, "offset": offset, "leader_epoch": 0,
            })
        topics.append({"name": topic["name"], "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}


LATEST_TIMESTAMP, EARLIEST_TIMESTAMP = -1, -2


def _list_offset(broker: Broker, topic: str, wanted: Body) -> tuple[ErrorCode, int, int]:
    found = _partition_or_error(broker, topic, wanted["partition_index"], create=False)
    if isinstance(found, ErrorCode):
        return found, -1, -1
    timestamp = wanted["timestamp"]
    if timestamp == LATEST_TIMESTAMP:
        return ErrorCode.NONE, found.log_end_offset, -1
    if timestamp == EARLIEST_TIMESTAMP:
        return ErrorCode.NONE, found.log_start_offset, -1
    if timestamp < 0:
        return ErrorCode.INVALID_REQUEST, -1, -1
    hit = found.offset_for_timestamp(timestamp)
    return (ErrorCode.NONE, -1, -1) if hit is None else (ErrorCode.NONE, hit[0], hit[1])


# --- Consumer groups -------------------------------------------------------------------------

COORDINATOR_KEY_GROUP = 0


async def handle_find_coordinator(broker: Broker, request: Request) -> Body:
    if request.body.get("key_type", COORDINATOR_KEY_GROUP) != COORDINATOR_KEY_GROUP:
        return {"throttle_time_ms": 0, "error_code": ErrorCode.COORDINATOR_NOT_AVAILABLE,
                "error_message": "transactions are not supported", "node_id": -1, "host": "",
                "port": -1}
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "error_message": None,
            "node_id": broker.config.node_id, "host": broker.host, "port": broker.port}


async def handle_join_group(broker: Broker, request: Request) -> Body:
    body = request.body
    result = await broker.coordinator.join_group(
        group_id=body["group_id"], member_id=body["member_id"],
        group_instance_id=body.get("group_instance_id"), protocol_type=body["protocol_type"],
        protocols=[(p["name"], bytes(p["metadata"])) for p in body["protocols"]],
        session_timeout_ms=body["session_timeout_ms"],
        rebalance_timeout_ms=body.get("rebalance_timeout_ms", -1) if request.version >= 1
        else body["session_timeout_ms"],
        client_id=request.header.client_id or "", client_host=request.client_host,
        require_known_member_id=request.version >= 4,
    )
    return {
        "throttle_time_ms": 0, "error_code": result.error, "generation_id": result.generation_id,
        "protocol_name": result.protocol_name or "", "leader": result.leader_id,
        "member_id": result.member_id,
        "members": [
            {"member_id": m.member_id, "group_instance_id": m.group_instance_id,
             "metadata": m.metadata}
            for m in result.members
        ],
    }


async def handle_sync_group(broker: Broker, request: Request) -> Body:
    body = request.body
    result = await broker.coordinator.sync_group(
        group_id=body["group_id"], generation_id=body["generation_id"],
        member_id=body["member_id"], group_instance_id=body.get("group_instance_id"),
        protocol_type=body.get("protocol_type"), protocol_name=body.get("protocol_name"),
        assignments={a["member_id"]: bytes(a["assignment"]) for a in body["assignments"]},
    )
    return {"throttle_time_ms": 0, "error_code": result.error, "assignment": result.assignment}


async def handle_heartbeat(broker: Broker, request: Request) -> Body:
    body = request.body
    error = broker.coordinator.heartbeat(
        body["group_id"], body["generation_id"], body["member_id"], body.get("group_instance_id")
    )
    return {"throttle_time_ms": 0, "error_code": error}


async def handle_leave_group(broker: Broker, request: Request) -> Body:
    body = request.body
    if request.version >= 3:
        leaving = [(m["member_id"], m.get("group_instance_id")) for m in body["members"]]
    else:
        leaving = [(body["member_id"], None)]
    result = broker.coordinator.leave_group(body["group_id"], leaving)
    error = result.error
    if request.version < 3 and error == ErrorCode.NONE:
        error = result.members[0][2]  # v0-2 carry one member and no per-member errors
    return {
        "throttle_time_ms": 0, "error_code": error,
        "members": [
            {"member_id": member, "group_instance_id": instance, "error_code": error}
            for member, instance, error in result.members
        ],
    }


async def handle_offset_commit(broker: Broker, request: Request) -> Body:
    body = request.body
    offsets = [
        (topic["name"], p["partition_index"], p["committed_offset"], p.get("committed_metadata"))
        for topic in body["topics"] for p in topic["partitions"]
    ]
    errors = broker.coordinator.commit_offsets(
        body["group_id"], body.get("generation_id_or_member_epoch", -1), body.get("member_id", ""),
        body.get("group_instance_id"), offsets,
    )
    return {
        "throttle_time_ms": 0,
        "topics": [
            {"name": topic["name"], "partitions": [
                {"partition_index": p["partition_index"],
                 "error_code": errors[(topic["name"], p["partition_index"])]}
                for p in topic["partitions"]
            ]}
            for topic in body["topics"]
        ],
    }


async def handle_offset_fetch(broker: Broker, request: Request) -> Body:
    body = request.body
    requested = body.get("topics")
    wanted = None if requested is None else [
        (t["name"], index) for t in requested for index in t["partition_indexes"]
    ]
    error, committed = broker.coordinator.fetch_offsets(body["group_id"], wanted)
    # v0-1 have no top-level error code: the error goes on every partition instead.
    partition_error = error if request.version < 2 else ErrorCode.NONE
    topics: dict[str, list[Body]] = {}
    for (topic, index), (offset, metadata) in sorted(committed.items()):
        topics.setdefault(topic, []).append({
            "partition_index": index, "committed_offset": offset, "committed_leader_epoch": -1,
            "metadata": metadata, "error_code": partition_error,
        })
    return {
        "throttle_time_ms": 0, "error_code": error,
        "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()],
    }


HANDLERS: dict[ApiKey, Handler] = {
    ApiKey.PRODUCE: handle_produce,
    ApiKey.FETCH: handle_fetch,
    ApiKey.LIST_OFFSETS: handle_list_offsets,
    ApiKey.METADATA: handle_metadata,
    ApiKey.OFFSET_COMMIT: handle_offset_commit,
    ApiKey.OFFSET_FETCH: handle_offset_fetch,
    ApiKey.FIND_COORDINATOR: handle_find_coordinator,
    ApiKey.JOIN_GROUP: handle_join_group,
    ApiKey.HEARTBEAT: handle_heartbeat,
    ApiKey.LEAVE_GROUP: handle_leave_group,
    ApiKey.SYNC_GROUP: handle_sync_group,
    ApiKey.API_VERSIONS: handle_api_versions,
    ApiKey.CREATE_TOPICS: handle_create_topics,
    ApiKey.INIT_PRODUCER_ID: handle_init_producer_id,
    ApiKey.DESCRIBE_CONFIGS: handle_describe_configs,
}
ADVERTISED: dict[ApiKey, tuple[int, int]] = {key: SCHEMA_VERSIONS[key] for key in HANDLERS}

__all__ = ["ADVERTISED", "HANDLERS", "CloseConnection", "Request", "api_versions_body"]
