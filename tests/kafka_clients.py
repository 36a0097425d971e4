"""The three real Kafka clients from PyPI behind one small interface, for the tests.

Each adapter produces records and reads them back with manual assignment, so one test body
checks confluent-kafka (librdkafka), kafka-python and aiokafka against the same broker.
Consumer groups: ``tests/kafka_group_clients.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Header = tuple[str, bytes | None]
Record = tuple[bytes | None, bytes | None, list[Header]]

CLIENTS = ("confluent", "kafka-python", "aiokafka")
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Consumed:
    offset: int
    timestamp: int
    record: Record
    partition: int = 0


def _normal_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> list[Header]:
    return [(k, None if v is None else bytes(v)) for k, v in (headers or [])]


def confluent_consumed(m: Any) -> Consumed:
    """A confluent-kafka ``Message`` as a ``Consumed``."""
    record = (m.key(), m.value(), _normal_headers(m.headers()))
    return Consumed(m.offset(), m.timestamp()[1], record, m.partition())


def python_consumed(m: Any) -> Consumed:
    """A kafka-python or aiokafka ``ConsumerRecord`` (the same fields) as a ``Consumed``."""
    return Consumed(
        m.offset, m.timestamp, (m.key, m.value, _normal_headers(m.headers)), m.partition
    )


def produce(
    client: str,
    bootstrap: str,
    topic: str,
    records: Sequence[Record],
    *,
    partition: int = 0,
    compression: str = "none",
    timestamps: Sequence[int] | None = None,
) -> None:
    """Produce ``records`` to one partition and wait until every one was acknowledged."""
    stamps = list(timestamps) if timestamps is not None else [None] * len(records)
    if client == "confluent":
        from confluent_kafka import Producer

        failures: list[str] = []
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "compression.type": compression,
                "linger.ms": 5,
                "acks": "all",
            }
        )
        for (key, value, headers), stamp in zip(records, stamps, strict=True):
            while True:
                try:
                    producer.produce(
                        topic,
                        value=value,
                        key=key,
                        partition=partition,
                        headers=headers or None,
                        timestamp=stamp or 0,
                        on_delivery=lambda err, _m: failures.append(str(err)) if err else None,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(TIMEOUT_S) == 0, "confluent producer did not flush"
        assert not failures, failures[:3]
    elif client == "kafka-python":
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            compression_type=None if compression == "none" else compression,
        )
        futures = [
            producer.send(
                topic,
                value=value,
                key=key,
                partition=partition,
                headers=headers,
                timestamp_ms=stamp,
            )
            for (key, value, headers), stamp in zip(records, stamps, strict=True)
        ]
        producer.flush(TIMEOUT_S)
        for future in futures:
            future.get(TIMEOUT_S)
        producer.close()
    elif client == "aiokafka":
        asyncio.run(_aiokafka_produce(bootstrap, topic, records, partition, compression, stamps))
    else:
        raise ValueError(f"unknown client {client!r}")


async def _aiokafka_produce(
    bootstrap: str,
    topic: str,
    records: Sequence[Record],
    partition: int,
    compression: str,
    stamps: Sequence[int | None],
) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        compression_type=None if compression == "none" else compression,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                value=value,
                key=key,
                partition=partition,
                headers=headers,
                timestamp_ms=stamp,
            )
            for (key, value, headers), stamp in zip(records, stamps, strict=True)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def consume(
    client: str, bootstrap: str, topic: str, *, partition: int = 0, offset: int = 0, count: int
) -> list[Consumed]:
    """Read ``count`` records from ``offset`` with manual assignment (no consumer group)."""
    deadline = time.monotonic() + TIMEOUT_S
    out: list[Consumed] = []
    if client == "confluent":
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "logbench-assign",
                "enable.auto.commit": False,
                "check.crcs": True,
            }
        )
        consumer.assign([TopicPartition(topic, partition, offset)])
        try:
            while len(out) < count and time.monotonic() < deadline:
                for m in consumer.consume(num_messages=1000, timeout=0.5):
                    if m.error():
                        raise AssertionError(f"confluent consumer error: {m.error()}")
                    out.append(confluent_consumed(m))
        finally:
            consumer.close()
    elif client == "kafka-python":
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, check_crcs=True
        )
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        try:
            while len(out) < count and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=500).values():
                    out += [python_consumed(m) for m in batch]
        finally:
            consumer.close()
    elif client == "aiokafka":
        out = asyncio.run(_aiokafka_consume(bootstrap, topic, partition, offset, count, deadline))
    else:
        raise ValueError(f"unknown client {client!r}")
    return out[:count] if len(out) >= count else out


async def _aiokafka_consume(
    bootstrap: str, topic: str, partition: int, offset: int, count: int, deadline: float
) -> list[Consumed]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, check_crcs=True
    )
    await consumer.start()
    out: list[Consumed] = []
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        while len(out) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                out += [python_consumed(m) for m in batch]
    finally:
        await consumer.stop()
    return out


def list_offsets(
    client: str, bootstrap: str, topic: str, partition: int, timestamp: int
) -> tuple[int, int, int | None]:
    """(earliest, latest, first offset at or after ``timestamp`` or None) as the client sees
    them through ListOffsets."""
    if client == "confluent":
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "logbench-offsets"})
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=TIMEOUT_S
            )
            [hit] = consumer.offsets_for_times(
                [TopicPartition(topic, partition, timestamp)], timeout=TIMEOUT_S
            )
            return low, high, None if hit.offset < 0 else hit.offset
        finally:
            consumer.close()
    if client == "kafka-python":
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        tp = TopicPartition(topic, partition)
        try:
            low = consumer.beginning_offsets([tp])[tp]
            high = consumer.end_offsets([tp])[tp]
            hit = consumer.offsets_for_times({tp: timestamp})[tp]
            return low, high, None if hit is None else hit.offset
        finally:
            consumer.close()
    if client == "aiokafka":
        return asyncio.run(_aiokafka_offsets(bootstrap, topic, partition, timestamp))
    raise ValueError(f"unknown client {client!r}")


async def _aiokafka_offsets(
    bootstrap: str, topic: str, partition: int, timestamp: int
) -> tuple[int, int, int | None]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    tp = TopicPartition(topic, partition)
    try:
        low = (await consumer.beginning_offsets([tp]))[tp]
        high = (await consumer.end_offsets([tp]))[tp]
        hit = (await consumer.offsets_for_times({tp: timestamp}))[tp]
        return low, high, None if hit is None else hit.offset
    finally:
        await consumer.stop()
