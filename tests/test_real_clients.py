"""Unmodified Kafka clients from PyPI against the reference broker: produce, fetch, list offsets.

Each client writes 10,000 records (keys, null keys and values, headers, a compression codec)
and reads them back byte-identical with manual assignment, from the start and from the middle,
and again after the broker restarted between produce and consume.
"""

from __future__ import annotations

import random

import pytest

from tests.kafka_clients import CLIENTS, Record, consume, list_offsets, produce

pytestmark = pytest.mark.conformance

COUNT = 10_000
CODEC = {"confluent": "lz4", "kafka-python": "gzip", "aiokafka": "gzip"}
BASE_TIMESTAMP = 1_700_000_000_000


def make_records(count: int, seed: int = 7) -> list[Record]:
    rng = random.Random(seed)
    records: list[Record] = []
    for i in range(count):
        key = None if i % 7 == 0 and i % 11 else f"key-{i}".encode()  # never both null
        value = None if i % 11 == 0 else rng.randbytes(rng.randrange(0, 300))
        headers = [] if i % 3 else [("trace", f"t{i}".encode()), ("empty", b"")]
        records.append((key, value, headers))
    return records


@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
def test_produce_and_fetch_byte_identical_across_restart(broker, client):
    records = make_records(COUNT)
    timestamps = [BASE_TIMESTAMP + 10 * i for i in range(COUNT)]
    topic = f"roundtrip-{client}"
    produce(
        client, broker.bootstrap, topic, records, compression=CODEC[client], timestamps=timestamps
    )

    got = consume(client, broker.bootstrap, topic, count=COUNT)
    assert [c.offset for c in got] == list(range(COUNT))
    assert [c.record for c in got] == records
    assert [c.timestamp for c in got] == timestamps

    middle = 4_321
    tail = consume(client, broker.bootstrap, topic, offset=middle, count=COUNT - middle)
    assert [c.offset for c in tail] == list(range(middle, COUNT))
    assert [c.record for c in tail] == records[middle:]

    broker.restart()
    again = consume(client, broker.bootstrap, topic, count=COUNT)
    assert [c.record for c in again] == records

    earliest, latest, by_time = list_offsets(
        client, broker.bootstrap, topic, 0, BASE_TIMESTAMP + 10 * 6_000
    )
    assert (earliest, latest, by_time) == (0, COUNT, 6_000)
    assert list_offsets(client, broker.bootstrap, topic, 0, BASE_TIMESTAMP + 10 * COUNT)[2] is None


@pytest.mark.slow
def test_clients_read_each_others_batches(broker):
    """The broker keeps batches as produced: what librdkafka wrote with zstd, the Python
    clients decode, and the reverse."""
    records = make_records(2_000, seed=11)
    produce("confluent", broker.bootstrap, "mixed", records, compression="zstd")
    produce("kafka-python", broker.bootstrap, "mixed", records, compression="gzip")
    for client in CLIENTS:
        got = consume(client, broker.bootstrap, "mixed", count=4_000)
        assert [c.record for c in got] == records + records, client


def test_restart_after_kill_keeps_acknowledged_records(broker):
    records = make_records(500, seed=3)
    produce("kafka-python", broker.bootstrap, "killed", records)
    broker.kill()
    broker.start()
    got = consume("kafka-python", broker.bootstrap, "killed", count=500)
    assert [c.record for c in got] == records
    produce("kafka-python", broker.bootstrap, "killed", records[:10])
    more = consume("kafka-python", broker.bootstrap, "killed", offset=500, count=10)
    assert [c.offset for c in more] == list(range(500, 510))
