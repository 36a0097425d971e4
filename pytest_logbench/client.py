"""A lean Kafka client for the harness: it moves and counts bytes, it never decodes records.

Real clients spend most of their time building and parsing records in Python; measured against
the broker, they would measure themselves. This client builds a produce request once and sends
it again and again (the broker assigns offsets, so the same bytes are valid every time), and its
consumer walks the 61-byte batch headers of a fetch response without touching record bytes.
It reuses the broker's own sans-IO codec: one codec, two users.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_logbench.connection import Connection
from pytest_logbench.errors import KafkaError
from pytest_logbench.latency import Latency
from pytest_logbench.receive import (
    FETCH_VERSION,
    FetchStream,
    PartitionProgress,
    Receive,
    SpliceDrain,
    fetch_body,
    make_drain,
    use_kernel_timeouts,
)
from reference_broker.errors import ErrorCode
from reference_broker.protocol import ApiKey, encode_request
from reference_broker.record_codec import build_batch
from reference_broker.records import Compression, iter_batches

__all__ = [
    "Connection",
    "Consumer",
    "FetchResult",
    "HarnessClient",
    "KafkaError",
    "Producer",
    "Transfer",
]

PRODUCE_VERSION = 8
METADATA_VERSION = 8
LIST_OFFSETS_VERSION = 5
CREATE_TOPICS_VERSION = 4
OFFSET_COMMIT_VERSION = 7
FIND_COORDINATOR_VERSION = 2


@dataclass(frozen=True)
class FetchResult:
    """One partition's part of a fetch response; ``records`` views the response buffer."""

    error: ErrorCode
    high_watermark: int
    log_start_offset: int
    records: memoryview

    def batches(self) -> Iterator[tuple[int, Any]]:
        """(position, BatchHeader) of the whole batches in ``records`` (a trailing partial
        batch, which Kafka may send, is skipped)."""
        return iter_batches(self.records)


class HarnessClient(Connection):
    """Admin, produce and fetch calls with errors raised as ``KafkaError``."""

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        configs: dict[str, str] | None = None,
        *,
        exist_ok: bool = True,
    ) -> None:
        body = {
            "topics": [
                {
                    "name": name,
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()],
                }
            ],
            "timeout_ms": 30_000,
        }
        [result] = self.request(ApiKey.CREATE_TOPICS, CREATE_TOPICS_VERSION, body)["topics"]
        code = result["error_code"]
        if code and not (exist_ok and code == ErrorCode.TOPIC_ALREADY_EXISTS):
            raise KafkaError(code, f"CreateTopics {name}", result.get("error_message"))
        self.await_leaders(name, range(partitions))

    def ensure_topic(self, topic: str, partition: int = 0, timeout: float = 10.0) -> None:
        """Ask for ``topic``'s metadata, which creates it where the broker creates topics
        automatically, and wait until ``partition`` answers as its leader. Real clients do
        the same: Apache Kafka creates topics on Metadata, never on Produce, and answers
        UNKNOWN_TOPIC_OR_PARTITION until the topic exists. A topic still unknown after
        ``timeout`` (no auto-creation) is left to fail the request that needs it."""
        body = {"topics": [{"name": topic}], "allow_auto_topic_creation": True}
        deadline = time.monotonic() + timeout
        while True:
            [found] = self.request(ApiKey.METADATA, METADATA_VERSION, body)["topics"]
            if not found["error_code"]:
                self.await_leaders(topic, [partition])
                return
            if found["error_code"] not in _NOT_YET_LEADER or time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def await_leaders(self, topic: str, partitions: Iterable[int], timeout: float = 30.0) -> None:
        """Wait until each of ``partitions`` answers as its leader. Apache Kafka answers
        CreateTopics once its controller committed the topic; its broker becomes leader a few
        milliseconds later, and a produce in between fails (UNKNOWN_TOPIC_OR_PARTITION,
        NOT_LEADER_OR_FOLLOWER), as after a restart. ListOffsets asks the same leader, and
        changes nothing."""
        deadline = time.monotonic() + timeout
        for partition in partitions:
            while True:
                try:
                    self.list_offset(topic, partition, -1)
                    break
                except KafkaError as exc:
                    if exc.code not in _NOT_YET_LEADER or time.monotonic() > deadline:
                        raise
                time.sleep(0.01)

    def partitions(self, topic: str) -> int:
        """The partition count of ``topic`` (it must exist)."""
        body = {"topics": [{"name": topic}], "allow_auto_topic_creation": False}
        [found] = self.request(ApiKey.METADATA, METADATA_VERSION, body)["topics"]
        if found["error_code"]:
            raise KafkaError(found["error_code"], f"Metadata {topic}")
        return len(found["partitions"])

    def produce(self, topic: str, partition: int, records: bytes, *, acks: int = -1) -> int:
        """Append record batch bytes; returns the base offset the broker assigned."""
        [response] = self.request(
            ApiKey.PRODUCE, PRODUCE_VERSION, _produce_body(topic, partition, records, acks)
        )["responses"]
        [part] = response["partition_responses"]
        if part["error_code"]:
            raise KafkaError(
                part["error_code"], f"Produce {topic}-{partition}", part.get("error_message")
            )
        return part["base_offset"]

    def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_bytes: int = 50 << 20,
        max_wait_ms: int = 0,
        min_bytes: int = 1,
    ) -> FetchResult:
        """Fetch from one partition; errors come back in ``FetchResult.error``."""
        body = fetch_body(
            topic,
            [(partition, offset)],
            max_bytes=max_bytes,
            max_wait_ms=max_wait_ms,
            min_bytes=min_bytes,
        )
        response = self.request(ApiKey.FETCH, FETCH_VERSION, body)
        [part] = response["responses"][0]["partitions"]
        return FetchResult(
            ErrorCode(part["error_code"]),
            part["high_watermark"],
            part["log_start_offset"],
            part["records"] or memoryview(b""),
        )

    def list_offset(self, topic: str, partition: int, timestamp: int) -> tuple[int, int]:
        """(offset, timestamp) for -1 (latest), -2 (earliest) or a timestamp in ms."""
        body = {
            "replica_id": -1,
            "isolation_level": 0,
            "topics": [
                {
                    "name": topic,
                    "partitions": [
                        {
                            "partition_index": partition,
                            "timestamp": timestamp,
                            "current_leader_epoch": -1,
                        }
                    ],
                }
            ],
        }
        [topic_result] = self.request(ApiKey.LIST_OFFSETS, LIST_OFFSETS_VERSION, body)["topics"]
        [part] = topic_result["partitions"]
        if part["error_code"]:
            raise KafkaError(part["error_code"], f"ListOffsets {topic}-{partition}")
        return part["offset"], part["timestamp"]

    def await_coordinator(self, group: str, timeout: float = 30.0) -> None:
        """Wait until this broker answers as ``group``'s coordinator. Apache Kafka creates its
        offsets topic on the first FindCoordinator and answers COORDINATOR_NOT_AVAILABLE,
        then loads it (COORDINATOR_LOAD_IN_PROGRESS); group requests sent before get
        NOT_COORDINATOR. The harness talks to one broker, so it assumes that broker coordinates
        (on a cluster where another one does, group requests keep failing NOT_COORDINATOR)."""
        deadline = time.monotonic() + timeout
        body = {"key": group, "key_type": 0}
        while True:
            found = self.request(ApiKey.FIND_COORDINATOR, FIND_COORDINATOR_VERSION, body)
            code = found["error_code"]
            if not code:
                return
            if code not in _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                raise KafkaError(code, f"FindCoordinator {group}", found.get("error_message"))
            time.sleep(0.05)

    def group_request(
        self,
        group: str,
        api_key: ApiKey,
        version: int,
        body: dict[str, Any],
        errors: Callable[[dict[str, Any]], Iterable[int]],
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send a request to ``group``'s coordinator (this broker), retried while the
        coordinator is still loading: ``errors`` lists the error codes of a response."""
        deadline = time.monotonic() + timeout
        while True:
            self.await_coordinator(group, timeout)
            response = self.request(api_key, version, body)
            codes = [c for c in errors(response) if c]
            if not set(codes) & _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                return response
            time.sleep(0.05)

    def commit(self, group: str, topic: str, partition: int, offset: int) -> None:
        """Commit ``offset`` for ``group`` as a standalone consumer (no membership: generation
        -1, as Kafka allows for a group with no members): a consumer group's position, for
        lag tools and tutorials, without running a group member."""
        body = {
            "group_id": group,
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "topics": [
                {
                    "name": topic,
                    "partitions": [{"partition_index": partition, "committed_offset": offset}],
                }
            ],
        }
        response = self.group_request(
            group,
            ApiKey.OFFSET_COMMIT,
            OFFSET_COMMIT_VERSION,
            body,
            lambda r: [p["error_code"] for t in r["topics"] for p in t["partitions"]],
        )
        [part] = response["topics"][0]["partitions"]
        if part["error_code"]:
            raise KafkaError(part["error_code"], f"OffsetCommit {group} {topic}-{partition}")


# What a group's coordinator answers while it is being created or loaded.
_COORDINATOR_NOT_READY = frozenset(
    {
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode.NOT_COORDINATOR,
    }
)

# What a partition answers between its creation and its broker becoming its leader.
_NOT_YET_LEADER = (
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.LEADER_NOT_AVAILABLE,
)


def _produce_body(topic: str, partition: int, records: bytes, acks: int) -> dict[str, Any]:
    return {
        "transactional_id": None,
        "acks": acks,
        "timeout_ms": 30_000,
        "topic_data": [
            {"name": topic, "partition_data": [{"index": partition, "records": records}]}
        ],
    }


@dataclass(frozen=True)
class Transfer:
    """What one produce or consume run moved, and how long it took."""

    bytes: int
    records: int
    batches: int
    requests: int
    seconds: float
    next_offset: int = -1  # where a one-partition read stopped (consume), -1 otherwise
    latency: Latency | None = None  # of each request (produce ack, fetch response)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else float("inf")


class Producer:
    """Produces a topic's worth of bytes fast: one batch, built once, sent many times."""

    def __init__(self, bootstrap: str, **connection: Any) -> None:
        self.client = HarnessClient(bootstrap, **connection)
        self._ready: set[tuple[str, int]] = set()

    def close(self) -> None:
        self.client.close()

    def produce(
        self,
        topic: str,
        total_bytes: int,
        *,
        partition: int = 0,
        record_bytes: int = 1024,
        batch_bytes: int = 256 * 1024,
        acks: int = 1,
        compression: Compression = Compression.NONE,
        in_flight: int = 5,
    ) -> Transfer:
        """Append at least ``total_bytes`` of records of ``record_bytes`` each (values of
        incompressible-looking bytes, no keys), ``batch_bytes`` per produce request, with up
        to ``in_flight`` requests unanswered (Kafka's producer pipelines 5 by default). Each
        request's latency (send to acknowledgement) goes into the transfer's histogram."""
        if (topic, partition) not in self._ready:
            self.client.ensure_topic(topic, partition)
            self._ready.add((topic, partition))
        per_batch = max(1, batch_bytes // (record_bytes + 8))
        value = (bytes(range(256)) * (record_bytes // 256 + 1))[:record_bytes]
        batch = build_batch([(None, value, [])] * per_batch, compression=compression)
        frame = bytearray(
            encode_request(
                ApiKey.PRODUCE,
                PRODUCE_VERSION,
                0,
                self.client.client_id,
                _produce_body(topic, partition, batch, acks),
            )
        )
        requests = -(-total_bytes // len(batch))
        pending: deque[tuple[int, int]] = deque()  # (correlation id, sent at)
        latency = Latency() if acks != 0 else None
        started = time.perf_counter()
        for _ in range(requests):
            correlation = self.client.next_correlation_id()
            sent = time.monotonic_ns()
            self.client.send_frame(frame, correlation)
            if latency is not None:
                pending.append((correlation, sent))
                if len(pending) >= in_flight:
                    self._check_ack(topic, partition, *pending.popleft(), latency)
        while pending:
            self._check_ack(topic, partition, *pending.popleft(), latency)
        seconds = time.perf_counter() - started
        return Transfer(
            requests * len(batch), requests * per_batch, requests, requests, seconds, -1, latency
        )

    def _check_ack(
        self, topic: str, partition: int, correlation: int, sent: int, latency: Latency
    ) -> None:
        [response] = self.client.read_response(ApiKey.PRODUCE, PRODUCE_VERSION, correlation)[
            "responses"
        ]
        latency.record_since(sent)
        [part] = response["partition_responses"]
        if part["error_code"]:
            raise KafkaError(
                part["error_code"], f"Produce {topic}-{partition}", part.get("error_message")
            )


def fill(bootstrap: str, topic: str, total_bytes: int, **options: Any) -> Transfer:
    """Append ``total_bytes`` to ``topic`` with a producer of its own, closed afterwards (the
    set-up step of most experiments); ``options`` go to ``Producer.produce``."""
    producer = Producer(bootstrap)
    try:
        return producer.produce(topic, total_bytes, **options)
    finally:
        producer.close()


class Consumer:
    """Fetches partitions from an offset to a target, counting bytes, records and batches.

    ``receive`` chooses how record bytes leave the socket (``pytest_logbench.receive``):
    ``"splice"`` moves them to /dev/null inside the kernel, so the consumer is never what a
    measurement measures; ``"copy"`` receives them into a reused buffer, as a real client must;
    ``"auto"`` (default) splices where it can and copies over TLS. ``pipeline`` sends the next
    fetch while the last batch of a response is still being drained.
    """

    def __init__(
        self, bootstrap: str, *, receive: Receive = "auto", pipeline: bool = True, **connection: Any
    ) -> None:
        self.client = HarnessClient(bootstrap, **connection)
        try:
            self.drain = make_drain(receive, self.client.sock)
        except BaseException:
            self.client.close()
            raise
        if isinstance(self.drain, SpliceDrain):
            use_kernel_timeouts(self.client.sock, self.client.timeout)
        self.pipeline = pipeline
        self._streams: dict[tuple[str, tuple[int, ...], int, int], FetchStream] = {}

    @property
    def receive(self) -> str:
        """The receive path in use: ``"splice"`` or ``"copy"``."""
        return self.drain.kind

    def close(self) -> None:
        self.drain.close()
        self.client.close()

    def consume(
        self,
        topic: str,
        *,
        partition: int | Sequence[int] = 0,
        offset: int = 0,
        until_offset: int | None = None,
        max_bytes: int = 8 << 20,
        max_wait_ms: int = 100,
    ) -> Transfer:
        """Read each partition from ``offset`` until ``until_offset`` (default: its high
        watermark in the first response); several partitions share each fetch request, and
        each one's latency (send to the end of its response) is recorded. A fetch
        may start below the requested offset (it returns whole batches): only batches at or
        after the position count; a trailing partial batch, or one past the end, never does."""
        partitions = (partition,) if isinstance(partition, int) else tuple(partition)
        key = (topic, partitions, max_bytes, max_wait_ms)
        stream = self._streams.get(key)
        if stream is None:
            stream = FetchStream(
                self.client.sock,
                self.drain,
                topic,
                partitions,
                client_id=self.client.client_id,
                max_bytes=max_bytes,
                max_wait_ms=max_wait_ms,
                pipeline=self.pipeline,
            )
            self._streams[key] = stream
        progress = [PartitionProgress(p, offset, until_offset) for p in partitions]
        requests_before = stream.requests
        latency = Latency()
        started = time.perf_counter()
        stream.read(progress, latency)
        seconds = time.perf_counter() - started
        return Transfer(
            sum(p.bytes for p in progress),
            sum(p.records for p in progress),
            sum(p.batches for p in progress),
            stream.requests - requests_before,
            seconds,
            progress[0].position if len(progress) == 1 else -1,
            latency,
        )
