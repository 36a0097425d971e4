"""Workloads that drive a real client, confluent-kafka (librdkafka), with the user's own
configuration: what ``linger.ms``, ``batch.size``, ``compression.type`` or ``acks`` do to
records/s, MB/s and latency, as kafka-producer-perf-test and kafka-consumer-perf-test report.

The harness's own producer re-sends one prebuilt batch: it measures the broker, never a
client's batching and compression. These workloads measure the client and the broker together.
The client runs in a member process: librdkafka's threads, the delivery callbacks and the
Python loop that feeds it share no GIL with the harness.

Records are ``record_bytes`` of random upper-case letters, one value for all records, as
kafka-producer-perf-test makes its payload: compressible about as much as text is.
"""

from __future__ import annotations

import importlib.metadata
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from pytest_logbench.client import HarnessClient, Producer, Transfer
from pytest_logbench.contract import Broker
from pytest_logbench.latency import Latency, Pacer
from pytest_logbench.members import MemberGroup, Stop
from pytest_logbench.workloads import broker_traits, client_options, fresh_topic

POLL_EVERY = 1000  # serve delivery callbacks this often while producing
FLUSH_TIMEOUT_S = 120.0


def client_config(broker: Broker, config: dict[str, Any]) -> dict[str, Any]:
    """librdkafka's configuration for ``broker``: its address (and CA, for TLS), then the
    user's ``config``, which wins."""
    base: dict[str, Any] = {"bootstrap.servers": broker.bootstrap}
    cafile = client_options(broker).get("cafile")
    if cafile is not None:
        base.update({"security.protocol": "SSL", "ssl.ca.location": cafile})
    return {**base, **config}


def payload(record_bytes: int) -> bytes:
    """kafka-producer-perf-test's payload: random letters A-Z (seeded, so runs compare)."""
    rng = random.Random(record_bytes)
    return bytes(rng.randrange(65, 91) for _ in range(record_bytes))


def _describe(kind: str, config: dict[str, Any], record_bytes: int, records: int) -> dict:
    return {
        "kind": kind,
        "client": f"confluent-kafka {importlib.metadata.version('confluent-kafka')}",
        "config": {k: v for k, v in config.items() if k != "bootstrap.servers"},
        "record_bytes": record_bytes,
        "records": records,
    }


# --- producing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientProducerSpec:
    """Builds a ``ClientProducer`` in a member process."""

    config: dict[str, Any]
    topic: str
    record_bytes: int

    def __call__(self, stop: Stop) -> ClientProducer:
        return ClientProducer(self, stop)


class ClientProducer:
    """A confluent-kafka producer that sends records as fast as it accepts them."""

    def __init__(self, spec: ClientProducerSpec, stop: Stop) -> None:
        from confluent_kafka import Producer as KafkaProducer

        self.spec, self.stop = spec, stop
        self.producer = KafkaProducer(spec.config)
        self.value = payload(spec.record_bytes)

    def produce(self, records: int, rate: float | None = None) -> Transfer:
        """Send ``records`` records to partition 0 and wait for every delivery report; the
        latency of each is from ``produce()`` to its delivery report (linger included, as
        kafka-producer-perf-test measures it). Reports of one partition come in order.

        With a ``rate`` (records/s) the records are paced in steps of a millisecond's worth,
        and each record's latency counts from its step's intended time (no coordinated
        omission: a client that falls behind its schedule shows it as latency)."""
        produce, poll = self.producer.produce, self.producer.poll
        topic, value = self.spec.topic, self.value
        sent_at: deque[int] = deque()
        latency, failures = Latency(), []
        step = max(1, round(rate / 1000)) if rate else 1
        pacer = Pacer(rate / step) if rate else None
        intended = 0

        def delivered(error: Any, _message: Any) -> None:
            latency.record_since(sent_at.popleft())
            if error is not None:
                failures.append(error)

        started = time.perf_counter()
        for i in range(records):
            if i % POLL_EVERY == 0:
                poll(0)
                if self.stop.is_set():
                    break
            if pacer is not None and i % step == 0:
                intended = pacer.next()
            while True:
                sent_at.append(intended if pacer is not None else time.monotonic_ns())
                try:
                    produce(topic, value, partition=0, on_delivery=delivered)
                    break
                except BufferError:  # the client's queue is full: let it send
                    sent_at.pop()
                    poll(0.01)
        left = self.producer.flush(FLUSH_TIMEOUT_S)
        seconds = time.perf_counter() - started
        if left or failures:
            raise RuntimeError(
                f"{topic}: {left} records undelivered after {FLUSH_TIMEOUT_S:g} s, "
                f"{len(failures)} failed (first: {failures[:1]})"
            )
        done = latency.count
        return Transfer(done * len(value), done, 0, 0, seconds, latency=latency)

    def close(self) -> None:
        self.producer.flush(FLUSH_TIMEOUT_S)


class ClientProduceWorkload:
    """Each round a confluent-kafka producer configured by ``config`` sends ``records``
    records of ``record_bytes`` to one partition, as fast as it accepts them or at ``rate``
    records/s (kafka-producer-perf-test's ``--throughput``, but measured from the intended
    send times); latency is the delivery-report latency."""

    name = "client-produce"

    def __init__(
        self,
        broker: Broker,
        config: dict[str, Any],
        *,
        record_bytes: int = 100,
        records: int = 100_000,
        rate: float | None = None,
        topic: str | None = None,
    ) -> None:
        if record_bytes < 1 or records < 1:
            raise ValueError(f"need record_bytes and records >= 1, got {record_bytes}, {records}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 records/s (or None), got {rate}")
        self.broker, self.config = broker, dict(config)
        self.record_bytes, self.records, self.rate = record_bytes, records, rate
        self.topic = topic or fresh_topic("logbench-client-produce")
        self._members: MemberGroup | None = None

    def describe(self) -> dict[str, Any]:
        described = _describe("client-produce", self.config, self.record_bytes, self.records)
        return {**described, "rate": self.rate, **broker_traits(self.broker)}

    def setup(self) -> None:
        with HarnessClient(self.broker.bootstrap, **client_options(self.broker)) as client:
            client.ensure_topic(self.topic)
        spec = ClientProducerSpec(
            client_config(self.broker, self.config), self.topic, self.record_bytes
        )
        self._members = MemberGroup([spec], names=["client-producer"])

    def prepare(self) -> None:
        """Nothing: appends go to the page cache whatever its state."""

    def run(self) -> Transfer:
        assert self._members is not None, "setup() not called"
        [done] = self._members.call("produce", self.records, self.rate)
        return done

    def close(self) -> None:
        if self._members is not None:
            self._members.close()


# --- consuming -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConsumerSpec:
    """Builds a ``ClientConsumer`` in a member process."""

    config: dict[str, Any]
    topic: str

    def __call__(self, stop: Stop) -> ClientConsumer:
        return ClientConsumer(self, stop)


class ClientConsumer:
    """A confluent-kafka consumer assigned partition 0 (no group membership)."""

    def __init__(self, spec: ClientConsumerSpec, stop: Stop) -> None:
        from confluent_kafka import Consumer as KafkaConsumer

        defaults = {"group.id": f"logbench-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        self.spec, self.stop = spec, stop
        self.consumer = KafkaConsumer({**defaults, **spec.config})

    def consume(self, offset: int, until: int, batch: int = 10_000) -> Transfer:
        """Read from ``offset`` to ``until``; the latency of each ``consume()`` call is how
        long the application waited for its records (librdkafka fetches ahead, so at full
        speed this is mostly the time to hand over its queue)."""
        from confluent_kafka import TopicPartition

        self.consumer.assign([TopicPartition(self.spec.topic, 0, offset)])
        latency, position, size, records = Latency(), offset, 0, 0
        started = time.perf_counter()
        while position < until and not self.stop.is_set():
            asked = time.monotonic_ns()
            # never more than are left: consume() waits its timeout for a full batch
            messages = self.consumer.consume(num_messages=min(batch, until - position), timeout=1.0)
            if messages:
                latency.record_since(asked)
            for message in messages:
                if message.error() is not None:
                    raise RuntimeError(f"consume {self.spec.topic}: {message.error()}")
                if message.offset() >= until:
                    continue
                position = message.offset() + 1
                size += len(message.value() or b"")
                records += 1
        seconds = time.perf_counter() - started
        return Transfer(size, records, 0, 0, seconds, position, latency)

    def close(self) -> None:
        self.consumer.close()


class ClientConsumeWorkload:
    """Each round a confluent-kafka consumer configured by ``config`` reads the records of
    ``record_bytes`` that setup produced with the harness producer (``records``, rounded up
    to whole batches)."""

    name = "client-consume"

    def __init__(
        self,
        broker: Broker,
        config: dict[str, Any],
        *,
        record_bytes: int = 100,
        records: int = 100_000,
        topic: str | None = None,
    ) -> None:
        if record_bytes < 1 or records < 1:
            raise ValueError(f"need record_bytes and records >= 1, got {record_bytes}, {records}")
        self.broker, self.config = broker, dict(config)
        self.record_bytes, self.records = record_bytes, records
        self.topic = topic or fresh_topic("logbench-client-consume")
        self._end = 0
        self._members: MemberGroup | None = None

    def describe(self) -> dict[str, Any]:
        described = _describe("client-consume", self.config, self.record_bytes, self.records)
        return {**described, **broker_traits(self.broker)}

    def setup(self) -> None:
        producer = Producer(self.broker.bootstrap, **client_options(self.broker))
        try:
            while self._end < self.records:  # whole batches: at least ``records``
                missing = (self.records - self._end) * self.record_bytes
                producer.produce(self.topic, missing, record_bytes=self.record_bytes)
                self._end, _ = producer.client.list_offset(self.topic, 0, -1)
        finally:
            producer.close()
        spec = ClientConsumerSpec(client_config(self.broker, self.config), self.topic)
        self._members = MemberGroup([spec], names=["client-consumer"])

    def prepare(self) -> None:
        """Nothing: the records were just written, and stay in the page cache."""

    def run(self) -> Transfer:
        assert self._members is not None, "setup() not called"
        [done] = self._members.call("consume", 0, self._end)
        return done

    def close(self) -> None:
        if self._members is not None:
            self._members.close()
