"""Quickstart: a real Kafka client against the reference broker, and where the bytes went.

Run it with ``pytest examples/test_quickstart.py -s``. It starts a reference broker, produces
64 MiB with confluent-kafka (librdkafka), reads it back with a confluent-kafka consumer, then
reads it again with logbench's lean harness consumer (which only counts bytes, so the broker is
what is measured). It prints the throughput of each and the broker's own account of how the
fetched bytes left it: by ``sendfile`` straight from the page cache, or by a copy.

The same test runs against a broker started with ``--copy``: the records then pass through the
broker's user space, and the counters say so.
"""

from __future__ import annotations

import time

import pytest

from pytest_logbench.client import Consumer

TOTAL_BYTES = 64 * 1024 * 1024
VALUE = bytes(range(256)) * 4  # 1 KiB records


def _produce_with_confluent(bootstrap: str, topic: str) -> tuple[int, float]:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 10,
            "acks": 1,
            "batch.size": 1_000_000,
            "queue.buffering.max.kbytes": 256_000,
        }
    )
    count = TOTAL_BYTES // len(VALUE)
    started = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, VALUE, partition=0)
                break
            except BufferError:
                producer.poll(0.01)
    assert producer.flush(60) == 0
    return count, time.perf_counter() - started


def _consume_with_confluent(bootstrap: str, topic: str, count: int) -> float:
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import TopicPartition

    consumer = KafkaConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "quickstart",
            "enable.auto.commit": False,
            "fetch.max.bytes": 50 << 20,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen, started = 0, time.perf_counter()
    deadline = started + 120
    while seen < count and time.perf_counter() < deadline:
        seen += len(consumer.consume(num_messages=10_000, timeout=1))
    elapsed = time.perf_counter() - started
    consumer.close()
    assert seen == count, f"consumed {seen} of {count} records"
    return elapsed


@pytest.mark.parametrize("mode", ["zerocopy", "copy"])
def test_quickstart(broker_factory, mode):
    broker = broker_factory(copy=mode == "copy")
    count, produce_s = _produce_with_confluent(broker.bootstrap, "quickstart")
    consume_s = _consume_with_confluent(broker.bootstrap, "quickstart", count)
    harness = Consumer(broker.bootstrap)
    try:
        fetched = harness.consume("quickstart")
    finally:
        harness.close()
    mib = TOTAL_BYTES / 2**20
    sendfile_bytes = broker.metric("logbench_bytes_sent_total", path="zerocopy")
    copied_bytes = broker.metric("logbench_bytes_sent_total", path="copy")
    print(f"\n--- quickstart, broker in {mode} mode ({broker.bootstrap}) ---")
    print(
        f"confluent-kafka produce : {count} records, {mib:.0f} MiB in {produce_s:.2f} s "
        f"= {mib / produce_s:.0f} MiB/s"
    )
    print(f"confluent-kafka consume : {mib / consume_s:.0f} MiB/s (decodes every record)")
    print(
        f"harness consume         : {fetched.bytes / 2**20:.0f} MiB in {fetched.seconds:.2f} s"
        f" = {fetched.mb_per_s:.0f} MB/s in {fetched.requests} fetches (counts bytes only)"
    )
    print(
        f"broker sent by sendfile : {sendfile_bytes / 2**20:.0f} MiB;"
        f" by copy: {copied_bytes / 2**20:.0f} MiB"
    )
    if mode == "zerocopy":
        assert copied_bytes == 0 and sendfile_bytes >= 2 * TOTAL_BYTES
        print("every fetched byte went from the page cache to the socket inside the kernel")
    else:
        assert sendfile_bytes == 0 and copied_bytes >= 2 * TOTAL_BYTES
        print("every fetched byte was read into the broker's memory and written back out")
