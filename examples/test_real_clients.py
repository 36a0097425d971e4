"""Tutorial: real clients get the zero-copy path too — and pay for their own copies.

The seed: "To ship bytes to a consumer, Kafka asks the kernel to copy straight from the page
cache to the socket — bypassing user space entirely." That is the broker's side. A consumer
still receives, decodes and checks every record in its own process, so the throughput a real
client sees is bounded by the client as much as by the broker.

Three consumers read the same 32 MiB (1 KiB records, warm in the page cache) from one reference
broker: confluent-kafka (librdkafka, C), kafka-python (pure Python) and logbench's harness
consumer (which splices the record bytes to /dev/null and decodes nothing, so the broker is what
it measures). For each, the broker's own counters say how the bytes left it.

Asserted, exactly (counters, not timings): for every client, every record byte the broker
shipped went by ``sendfile`` from the page cache, none by a copy. The printed table shows what
each client made of it.
"""

from __future__ import annotations

import time

import pytest

from pytest_logbench.client import Consumer, fill

MIB = 1 << 20
TOTAL = 32 * MIB
RECORD = 1024


def _confluent(bootstrap: str, topic: str, count: int) -> int:
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import TopicPartition

    consumer = KafkaConsumer(
        {"bootstrap.servers": bootstrap, "group.id": "tutorial", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    read = 0
    try:
        while read < count:
            for message in consumer.consume(num_messages=10_000, timeout=1.0):
                assert message.error() is None, message.error()
                read += 1
    finally:
        consumer.close()
    return read


def _kafka_python(bootstrap: str, topic: str, count: int) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=50 * MIB
    )
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek(partition, 0)
    read = 0
    try:
        while read < count:
            for records in consumer.poll(timeout_ms=1000, max_records=10_000).values():
                read += len(records)
    finally:
        consumer.close()
    return read


def _harness(bootstrap: str, topic: str, count: int) -> int:
    consumer = Consumer(bootstrap)
    try:
        return consumer.consume(topic, until_offset=count).records
    finally:
        consumer.close()


PATHS = ("zerocopy", "copy")
CLIENTS = {"confluent-kafka": _confluent, "kafka-python": _kafka_python, "harness": _harness}


@pytest.mark.slow
def test_every_client_is_served_by_sendfile(broker, page_cache):
    transfer = fill(broker.bootstrap, "events", TOTAL, record_bytes=RECORD)
    count = transfer.records
    page_cache.warm(broker.segment_files("events"))

    print(f"\n--- {TOTAL // MIB} MiB of {RECORD}-byte records, warm, read by each client ---")
    print(f"{'client':<16} {'MB/s':>8} {'records/s':>11} {'zero-copy MiB':>14} {'copied MiB':>11}")
    for name, read in CLIENTS.items():
        before = {path: broker.metric("logbench_bytes_sent_total", path=path) for path in PATHS}
        started = time.perf_counter()
        assert read(broker.bootstrap, "events", count) >= count
        seconds = time.perf_counter() - started
        sent = {p: broker.metric("logbench_bytes_sent_total", path=p) - before[p] for p in PATHS}
        print(
            f"{name:<16} {TOTAL / seconds / 1e6:8,.0f} {count / seconds:11,.0f} "
            f"{sent['zerocopy'] / MIB:14,.1f} {sent['copy'] / MIB:11,.1f}"
        )
        assert sent["zerocopy"] >= TOTAL * 0.99 and sent["copy"] == 0, (name, sent)
    print(
        "The broker sent every client's bytes the same way; the differences in MB/s are the "
        "clients' own work (connecting, receiving into user space, parsing records, checking "
        "CRCs). Real clients prefetch: the broker shipped them more than they had read when "
        "they stopped."
    )
