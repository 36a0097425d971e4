"""Produce, InitProducerId, Fetch and ListOffsets: the data path, bytes in and file slices out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reference_broker.errors import TRANSACTIONS_REFUSED, ErrorCode
from reference_broker.handlers.common import (
    FIRST_PRODUCE_VERSION_ACCEPTED,
    INTERNAL_TOPICS,
    Body,
    CloseConnection,
    Request,
    auto_create,
    partition_or_error,
    topic_id_of,
)
from reference_broker.log import (
    LogError,
    OffsetOutOfRange,
)
from reference_broker.log.partition import PartitionLog
from reference_broker.records import InvalidBatch

if TYPE_CHECKING:
    from reference_broker.server import Broker


async def handle_produce(broker: Broker, request: Request) -> Body | None:
    body, version = request.body, request.version
    acks = body["acks"]
    responses, failures = [], []
    refused: dict[str, ErrorCode] = {}
    if version >= FIRST_PRODUCE_VERSION_ACCEPTED and acks in (-1, 0, 1):
        refused = await auto_create(broker, (t["name"] for t in body["topic_data"]))
    for topic in body["topic_data"]:
        partitions = []
        for data in topic["partition_data"]:
            if version < FIRST_PRODUCE_VERSION_ACCEPTED:
                error, base, log, message = (
                    ErrorCode.UNSUPPORTED_VERSION,
                    -1,
                    None,
                    "produce v0-2 carry pre-v2 message formats",
                )
            elif acks not in (-1, 0, 1):
                error, base, log, message = (
                    ErrorCode.INVALID_REQUIRED_ACKS,
                    -1,
                    None,
                    f"acks must be -1, 0 or 1, got {acks}",
                )
            elif body.get("transactional_id") is not None:
                error, base, log, message = (
                    ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    -1,
                    None,
                    TRANSACTIONS_REFUSED,
                )
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
            partitions.append(
                {
                    "index": data["index"],
                    "error_code": error,
                    "base_offset": base,
                    "log_append_time_ms": -1,
                    "log_start_offset": log.log_start_offset if log else -1,
                    "record_errors": [],
                    "error_message": message,
                }
            )
        responses.append({"name": topic["name"], "partition_responses": partitions})
    if acks == 0:
        if failures:
            raise CloseConnection("acks=0 produce failed: " + "; ".join(failures))
        return None
    return {"responses": responses, "throttle_time_ms": 0}


def _more_than_one_batch(records: bytes | memoryview) -> bool:
    """Kafka refuses a partition's records that hold more than one batch in every produce
    version we serve (``ProduceRequest.validateRecords``, v3+), before any other check."""
    if len(records) < 12:  # base offset (8) + batch length (4): the log reports what is wrong
        return False
    length = int.from_bytes(records[8:12], "big", signed=True)
    return length > 0 and 12 + length < len(records)


def _append(
    broker: Broker, topic: str, data: Body
) -> tuple[ErrorCode, int, PartitionLog | None, str | None]:
    found = partition_or_error(broker, topic, data["index"], create=True)
    if isinstance(found, ErrorCode):
        return found, -1, None, None
    records = data["records"] if data["records"] is not None else b""
    if _more_than_one_batch(records):
        message = "a produce request carries exactly one record batch per partition"
        broker.metrics.add("logbench_produce_rejected_batches_total", error="INVALID_RECORD")
        return ErrorCode.INVALID_RECORD, -1, found, message
    try:
        result = found.append(records)
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
    """A producer id for an idempotent producer; a transactional one is refused (fatal for
    clients, see ``TRANSACTIONS_REFUSED``)."""
    refused = {"throttle_time_ms": 0, "producer_id": -1, "producer_epoch": -1}
    if request.body.get("transactional_id") is not None:
        return {**refused, "error_code": ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED}
    try:
        producer_id = broker.producer_ids.allocate()
    except LogError as exc:
        return {**refused, "error_code": exc.error_code}
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NONE,
        "producer_id": producer_id,
        "producer_epoch": 0,
    }


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
    named, unknown_ids = _topic_names(broker, body["topics"])
    wanted = _distinct_partitions(named)
    # Kafka caps a response at the smaller of the request's max_bytes (absent before v3) and
    # the broker's fetch.max.bytes, which also keeps it far below the 2 GiB a size field holds.
    budget = min(
        body.get("max_bytes", broker.config.fetch_max_bytes), broker.config.fetch_max_bytes
    )
    while True:
        reads = list(_read_partitions(broker, wanted, budget))
        total = sum(r.length for r in reads)
        errors = bool(unknown_ids) or any(r.partition["error_code"] for r in reads)
        remaining = deadline - time.monotonic()
        if total >= body["min_bytes"] or errors or not wanted or remaining <= 0:
            break
        await broker.appends.wait(wanted, remaining)
    history = []
    for read in reads:
        if read.length:
            kind = "tail" if read.tail_distance <= broker.config.tail_window_bytes else "history"
            broker.metrics.add("logbench_fetch_bytes_total", read.length, read=kind)
            broker.metrics.add("logbench_fetch_reads_total", 1, read=kind)
            if kind == "history":
                history.append(read.partition["records"])
    if broker.warmer is not None and history:
        warmed = await broker.warmer.warm(history)
        broker.metrics.add("logbench_fetch_warmed_bytes_total", warmed)
    topics: dict[str, list[Body]] = {}
    for read in reads:
        topics.setdefault(read.topic, []).append(read.partition)
    responses = [
        {"topic": name, "topic_id": topic_id_of(broker, name), "partitions": parts}
        for name, parts in topics.items()
    ]
    responses += [
        {
            "topic": "",
            "topic_id": topic["topic_id"],
            "partitions": [
                {
                    **_NO_PARTITION_DATA,
                    "partition_index": p["partition"],
                    "error_code": ErrorCode.UNKNOWN_TOPIC_ID,
                }
                for p in topic["partitions"]
            ],
        }
        for topic in unknown_ids
    ]
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NONE,
        "session_id": 0,
        "responses": responses,
    }


def _topic_names(broker: Broker, topics: list[Body]) -> tuple[list[tuple[str, Body]], list[Body]]:
    """The fetched topics by name, and those addressed by an id no topic has (Fetch v13+
    names topics by id; UNKNOWN_TOPIC_ID for those, as Kafka answers)."""
    named, unknown = [], []
    for topic in topics:
        if "topic_id" not in topic:
            named.append((topic["topic"], topic))
            continue
        name = broker.store.topic_name(topic["topic_id"])
        if name is None:
            unknown.append(topic)
        else:
            named.append((name, topic))
    return named, unknown


def _distinct_partitions(topics: list[tuple[str, Body]]) -> dict[tuple[str, int], Body]:
    """The requested partitions, each once: Kafka keys a fetch by partition, so a partition
    named twice is read once (with its last entry), not once per mention."""
    return {(name, p["partition"]): p for name, t in topics for p in t["partitions"]}


_NO_PARTITION_DATA: Body = {
    "high_watermark": -1,
    "last_stable_offset": -1,
    "log_start_offset": -1,
    "aborted_transactions": None,
    "preferred_read_replica": -1,
    "records": b"",
}


def _read_partitions(
    broker: Broker, wanted: dict[tuple[str, int], Body], budget: int
) -> Iterator[_FetchRead]:
    # KIP-74: the first partition with data gets its whole first batch even when that batch is
    # larger than the limits, so a consumer can always make progress.
    sent_any = False
    for (topic, index), wanted_partition in wanted.items():
        response = {**_NO_PARTITION_DATA, "partition_index": index, "error_code": ErrorCode.NONE}
        read = _FetchRead(topic, response)
        # A partition in the store has a valid name: the name is checked only when it is not.
        found = broker.store.partition(topic, index) or partition_or_error(
            broker, topic, index, create=False
        )
        if isinstance(found, ErrorCode):
            response["error_code"] = found
            yield read
            continue
        limit = min(wanted_partition["partition_max_bytes"], budget)
        try:
            result = found.read(wanted_partition["fetch_offset"], max(limit, 1))
        except OffsetOutOfRange as exc:
            result = None
            response["error_code"] = ErrorCode.OFFSET_OUT_OF_RANGE
            end, start = exc.log_end_offset, exc.log_start_offset
        else:
            end, start = result.high_watermark, result.log_start_offset
        response["high_watermark"] = response["last_stable_offset"] = end
        response["log_start_offset"] = start
        piece = result.slice if result is not None else None
        if piece is not None and (piece.length <= limit or not sent_any):
            response["records"] = piece
            read.length, read.tail_distance = piece.length, result.tail_distance
            budget -= piece.length
            sent_any = True
        yield read


# ListOffsets' special timestamps: -3 since v7 (KIP-734), -4 since v8 (KIP-405: the start of
# the log kept on local disk, which here is the whole log).
LATEST_TIMESTAMP, EARLIEST_TIMESTAMP, MAX_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP = -1, -2, -3, -4


async def handle_list_offsets(broker: Broker, request: Request) -> Body:
    topics = []
    for topic in request.body["topics"]:
        partitions = []
        for wanted in topic["partitions"]:
            error, offset, timestamp = _list_offset(broker, topic["name"], wanted)
            partitions.append(
                {
                    "partition_index": wanted["partition_index"],
                    "error_code": error,
                    "old_style_offsets": [offset] if offset >= 0 else [],
                    "timestamp": timestamp,
                    "offset": offset,
                    "leader_epoch": 0,
                }
            )
        topics.append({"name": topic["name"], "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}


def _list_offset(broker: Broker, topic: str, wanted: Body) -> tuple[ErrorCode, int, int]:
    found = partition_or_error(broker, topic, wanted["partition_index"], create=False)
    if isinstance(found, ErrorCode):
        return found, -1, -1
    timestamp = wanted["timestamp"]
    if timestamp == LATEST_TIMESTAMP:
        return ErrorCode.NONE, found.log_end_offset, -1
    if timestamp in (EARLIEST_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP):
        return ErrorCode.NONE, found.log_start_offset, -1
    if timestamp == MAX_TIMESTAMP:
        hit = found.offset_of_max_timestamp()
    elif timestamp < 0:
        return ErrorCode.INVALID_REQUEST, -1, -1
    else:
        hit = found.offset_for_timestamp(timestamp)
    return (ErrorCode.NONE, -1, -1) if hit is None else (ErrorCode.NONE, hit[0], hit[1])
