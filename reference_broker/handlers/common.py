"""What every handler shares: the request it is given, how it refuses, topic lookup and
auto-creation, and the names Kafka reserves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from reference_broker.errors import ErrorCode
from reference_broker.groups import OFFSETS_TOPIC
from reference_broker.log import (
    InvalidTopic,
    LogError,
    UnknownTopic,
    validate_topic_name,
)
from reference_broker.log.partition import PartitionLog
from reference_broker.protocol import ZERO_UUID, RequestHeader

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


def partition_or_error(
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


async def auto_create(broker: Broker, names: Iterable[str]) -> dict[str, ErrorCode]:
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
        found = partition_or_error(broker, name, 0, create=True)
        if isinstance(found, ErrorCode):
            errors[name] = found
        else:
            budget -= broker.config.num_partitions
            await asyncio.sleep(0)
    return errors


def topic_id_of(broker: Broker, name: str) -> UUID:
    """The topic's id, or the zero UUID ("none") for a topic that does not exist."""
    try:
        return broker.store.topic_id(name)
    except UnknownTopic:
        return ZERO_UUID


def now_ms() -> int:
    return int(time.time() * 1000)
