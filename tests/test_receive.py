"""The consumer's receive paths count exactly what the log holds, however the bytes arrive.

Ground truth is the segment files themselves: the batches between two offsets, read from disk.
The splice receiver (bytes never enter Python) and the copying receiver (bytes received into a
reused buffer) must both report those batches' bytes, records and next offset, across
responses cut mid-batch, compressed batches, several partitions in one fetch and segment rolls.
"""

from __future__ import annotations

import pytest

from pytest_logbench.client import Consumer, HarnessClient, KafkaError, Producer
from pytest_logbench.receive import splice_supported
from pytest_logbench.workloads import client_options
from reference_broker.records import Compression, iter_batches

pytestmark = pytest.mark.skipif(not splice_supported()[0], reason=splice_supported()[1])


def _on_disk(broker, topic: str, partition: int, start: int = 0, end: int | None = None):
    """(bytes, records, batches, next offset) of the whole batches holding [start, end)."""
    size = records = batches = 0
    position = start
    for path in broker.segment_files(topic, partition):
        for _, header in iter_batches(memoryview(path.read_bytes())):
            if header.last_offset < position or (end is not None and position >= end):
                continue
            size, records, batches = size + header.size, records + header.record_count, batches + 1
            position = header.next_offset
    return size, records, batches, position


def _both(broker, topic: str, **consume):
    counts = {}
    for receive in ("splice", "copy"):
        consumer = Consumer(broker.bootstrap, receive=receive)
        try:
            assert consumer.receive == receive
            got = consumer.consume(topic, **consume)
        finally:
            consumer.close()
        counts[receive] = (got.bytes, got.records, got.batches)
    return counts


def test_partial_trailing_batches_and_segment_rolls(broker_factory):
    broker = broker_factory(segment_bytes=1 << 20)
    sent = Producer(broker.bootstrap).produce(
        "cut", 5 << 20, batch_bytes=96 << 10, record_bytes=700
    )
    assert len(broker.segment_files("cut", 0)) >= 5
    # 250 KiB per fetch cuts every response inside its third batch.
    counts = _both(broker, "cut", max_bytes=250 << 10)
    truth = _on_disk(broker, "cut", 0)
    assert counts["splice"] == counts["copy"] == truth[:3]
    assert truth[1] == sent.records


def test_middle_offsets_and_exact_stop(broker_factory):
    broker = broker_factory(segment_bytes=1 << 20)
    Producer(broker.bootstrap).produce("mid", 3 << 20, batch_bytes=64 << 10)
    start, stop = 1000, 2500
    counts = _both(broker, "mid", offset=start, until_offset=stop, max_bytes=200 << 10)
    assert counts["splice"] == counts["copy"] == _on_disk(broker, "mid", 0, start, stop)[:3]


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.LZ4, Compression.ZSTD])
def test_compressed_batches(broker, compression):
    pytest.importorskip(
        {Compression.LZ4: "lz4", Compression.ZSTD: "zstandard"}.get(compression, "gzip")
    )
    Producer(broker.bootstrap).produce("packed", 2 << 20, compression=compression)
    counts = _both(broker, "packed", max_bytes=100 << 10)
    assert counts["splice"] == counts["copy"] == _on_disk(broker, "packed", 0)[:3]


def test_several_partitions_in_one_fetch(broker):
    with HarnessClient(broker.bootstrap) as admin:
        admin.create_topic("wide", partitions=3)
    producer = Producer(broker.bootstrap)
    for partition, size in enumerate((1 << 20, 3 << 20, 2 << 20)):
        producer.produce("wide", size, partition=partition)
    producer.close()
    counts = _both(broker, "wide", partition=[0, 1, 2], max_bytes=300 << 10)
    truths = [_on_disk(broker, "wide", p) for p in range(3)]
    assert counts["splice"] == counts["copy"] == tuple(sum(t[i] for t in truths) for i in range(3))


def test_pipelining_leaves_the_connection_in_step(broker):
    """A pipelined fetch is sent only when the next offset is known and needed: after a read
    that stops mid-log, nothing is left in flight and the connection serves other calls."""
    Producer(broker.bootstrap).produce("steps", 4 << 20, batch_bytes=128 << 10)
    consumer = Consumer(broker.bootstrap, pipeline=True)
    try:
        first = consumer.consume("steps", until_offset=1000, max_bytes=512 << 10)
        assert consumer.client.list_offset("steps", 0, -2) == (0, -1)
        rest = consumer.consume("steps", offset=_on_disk(broker, "steps", 0, 0, 1000)[3])
        whole = _on_disk(broker, "steps", 0)
        assert first.bytes + rest.bytes == whole[0]
        assert first.records + rest.records == whole[1]
    finally:
        consumer.close()


def test_partition_errors_raise_kafka_errors(broker):
    Producer(broker.bootstrap).produce("small", 64 << 10)
    consumer = Consumer(broker.bootstrap)
    try:
        with pytest.raises(KafkaError, match="OFFSET_OUT_OF_RANGE"):
            consumer.consume("small", offset=10**9)
    finally:
        consumer.close()


def test_tls_falls_back_to_copying(broker_factory):
    broker = broker_factory(tls=True)
    Producer(broker.bootstrap, **client_options(broker)).produce("secret", 1 << 20)
    consumer = Consumer(broker.bootstrap, **client_options(broker))
    try:
        assert consumer.receive == "copy"
        got = consumer.consume("secret")
    finally:
        consumer.close()
    assert (got.bytes, got.records, got.batches) == _on_disk(broker, "secret", 0)[:3]
    with pytest.raises(ValueError, match="impossible over TLS"):
        Consumer(broker.bootstrap, receive="splice", **client_options(broker))


def test_unknown_receive_mode_is_refused(broker):
    with pytest.raises(ValueError, match="receive must be"):
        Consumer(broker.bootstrap, receive="mmap")
