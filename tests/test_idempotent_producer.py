"""Idempotent producers against a real broker: the raw protocol rules, and confluent-kafka with
``enable.idempotence`` while the broker is SIGKILLed under it.

A producer retries a batch whose answer it did not get; only the broker's per-producer sequence
state turns those retries into the original offsets instead of second copies.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from pytest_logbench.brokers import ExternalBroker
from pytest_logbench.client import HarnessClient, KafkaError
from pytest_logbench.log_model import fetch_batches
from reference_broker.errors import ErrorCode
from reference_broker.protocol import ApiKey
from reference_broker.record_codec import build_batch

pytestmark = [pytest.mark.logbench_local, pytest.mark.conformance]

TOPIC = "idempotent"
PARTITIONS = 8


def _local(broker: Any) -> Any:
    if isinstance(broker, ExternalBroker):
        pytest.skip("restarts and kills need a reference broker started by logbench")
    return broker


def init_producer_id(client: HarnessClient) -> tuple[int, int]:
    body = client.request(
        ApiKey.INIT_PRODUCER_ID, 1, {"transactional_id": None, "transaction_timeout_ms": 60_000}
    )
    assert body["error_code"] == ErrorCode.NONE
    return body["producer_id"], body["producer_epoch"]


class RawProducer:
    """Sends hand-made idempotent batches, as a client's retries would resend them."""

    def __init__(self, bootstrap: str, producer_id: int, epoch: int) -> None:
        self.bootstrap, self.producer_id, self.epoch = bootstrap, producer_id, epoch

    def send(self, sequence: int, records: int = 1, *, epoch: int | None = None) -> int:
        batch = build_batch(
            [(None, f"{sequence}+{i}".encode()) for i in range(records)],
            producer_id=self.producer_id,
            producer_epoch=self.epoch if epoch is None else epoch,
            base_sequence=sequence,
        )
        with HarnessClient(self.bootstrap) as client:
            return client.produce(TOPIC, 0, batch)

    def refused(self, sequence: int, *, epoch: int | None = None) -> ErrorCode:
        with pytest.raises(KafkaError) as raised:
            self.send(sequence, epoch=epoch)
        return raised.value.code


def stored_values(bootstrap: str, topic: str, partition: int = 0) -> list[bytes]:
    with HarnessClient(bootstrap) as client:
        return [
            record.value
            for _, batches in fetch_batches(client, topic, partition, 0)
            for _, records in batches
            for record in records
        ]


def test_retries_gaps_and_stale_epochs_follow_kafkas_rules(broker_factory: Any) -> None:
    broker = _local(broker_factory(segment_bytes=4096))
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic(TOPIC, 1)
        producer_id, epoch = init_producer_id(client)
    producer = RawProducer(broker.bootstrap, producer_id, epoch)
    assert producer.send(0, 2) == 0
    produced_bytes = broker.metric("logbench_produce_bytes_total")
    assert producer.send(0, 2) == 0  # a retry: the original offsets, nothing appended
    assert broker.metric("logbench_produce_bytes_total") == produced_bytes
    assert producer.send(2) == 2
    assert producer.refused(4) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER == 45
    assert producer.send(0, epoch=epoch + 1) == 3  # a new epoch starts again at 0
    assert producer.refused(3) == ErrorCode.INVALID_PRODUCER_EPOCH == 47
    assert len(stored_values(broker.bootstrap, TOPIC)) == 4
    assert broker.metric("logbench_produce_duplicate_batches_total") == 1

    producer.epoch = epoch + 1
    for kill in (False, True):  # a clean restart reads the snapshot, a SIGKILL replays the log
        broker.restart(kill=kill)
        assert producer.send(0) == 3
        assert producer.refused(2) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert producer.refused(0, epoch=epoch) == ErrorCode.INVALID_PRODUCER_EPOCH
    assert producer.send(1) == 4
    assert len(stored_values(broker.bootstrap, TOPIC)) == 5
    with HarnessClient(broker.bootstrap) as client:
        assert init_producer_id(client)[0] > producer_id  # ids never repeat across restarts


@pytest.mark.slow
def test_no_acknowledged_record_is_duplicated_when_the_broker_is_killed(
    broker_factory: Any,
) -> None:
    """confluent-kafka with enable.idempotence keeps producing to 8 partitions while the broker
    is SIGKILLed and restarted; it resends whatever was in flight. With fsync=always a produce
    request spends most of its time between its first append and its answer, so kills land
    there: the resent batches must get their original offsets, never second copies. Every
    acknowledged record is stored exactly once, in the order it was produced."""
    from confluent_kafka import Producer

    broker = _local(broker_factory(fsync="always", segment_bytes=1 << 20))
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic(TOPIC, PARTITIONS)
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 120_000,
            "retry.backoff.ms": 20,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 100,
            "log_level": 0,  # the refused connections while the broker is down are expected
        }
    )
    acked: list[bytes] = []
    failed: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is None:
            acked.append(message.value())
        else:
            failed.append(str(error))

    stop = threading.Event()

    def produce() -> None:
        sequence = 0
        while not stop.is_set():
            try:
                for _ in range(100):  # bursts keep produce requests in flight
                    value = f"{sequence:09d}".encode() + bytes(200)
                    producer.produce(
                        TOPIC, value, partition=sequence % PARTITIONS, on_delivery=delivered
                    )
                    sequence += 1
            except BufferError:
                pass
            producer.poll(0.002)

    thread = threading.Thread(target=produce, name="idempotent-producer")
    thread.start()
    try:
        rng = random.Random(10)
        for _ in range(5):
            time.sleep(rng.uniform(0.5, 1.5))
            broker.kill()
            time.sleep(rng.uniform(0, 0.2))  # the producer retries against a dead broker
            broker.start()
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert producer.flush(120) == 0
    assert not failed, failed[:5]
    for partition in range(PARTITIONS):
        stored = stored_values(broker.bootstrap, TOPIC, partition)
        duplicates = len(stored) - len(set(stored))
        assert duplicates == 0, f"partition {partition}: {duplicates} duplicates in {len(stored)}"
        assert stored == sorted(stored), f"partition {partition}: records out of order"
        mine = {value for value in acked if int(value[:9]) % PARTITIONS == partition}
        assert mine <= set(stored), f"partition {partition}: an acknowledged record was lost"
    assert len(acked) > 1000
