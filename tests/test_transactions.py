"""Transactions are refused at once, with an error every client treats as fatal.

The broker has no transaction coordinator. It used to answer a transactional id's coordinator
lookup with COORDINATOR_NOT_AVAILABLE, which clients retry until their own timeout (15 s for
confluent-kafka, 10 s for kafka-python; aiokafka retried forever). Now FindCoordinator for a
transactional id, InitProducerId with one, and transactional produces all get
TRANSACTIONAL_ID_AUTHORIZATION_FAILED with a message that says why, and the clients give up on
the first answer. The bound below is the shortest of the clients' default timeouts, so a test
on the old behaviour fails it (or times out waiting); the time actually taken is far below it.
"""

from __future__ import annotations

import asyncio
import struct
import time

import crc32c
import pytest

from pytest_logbench.client import Connection, HarnessClient, KafkaError
from reference_broker.errors import TRANSACTIONS_REFUSED, ErrorCode
from reference_broker.protocol import ApiKey
from reference_broker.record_codec import build_batch

CLIENT_TIMEOUT_S = 10.0  # kafka-python's default max_block_ms for init_transactions
TRANSACTIONAL_ID = "logbench-tx"


def _confluent_init(bootstrap: str) -> Exception:
    from confluent_kafka import KafkaException, Producer

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": TRANSACTIONAL_ID})
    with pytest.raises(KafkaException) as failure:
        producer.init_transactions(CLIENT_TIMEOUT_S)
    error = failure.value.args[0]
    assert error.code() == error.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    assert error.fatal()
    return failure.value


def _kafka_python_init(bootstrap: str) -> Exception:
    from kafka import KafkaProducer
    from kafka.errors import TransactionalIdAuthorizationFailedError

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=TRANSACTIONAL_ID,
        max_block_ms=int(CLIENT_TIMEOUT_S * 1000),
    )
    try:
        with pytest.raises(TransactionalIdAuthorizationFailedError) as failure:
            producer.init_transactions()
    finally:
        producer.close(timeout=1)
    return failure.value


def _aiokafka_init(bootstrap: str) -> Exception:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import TransactionalIdAuthorizationFailed

    async def start() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=TRANSACTIONAL_ID)
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(TransactionalIdAuthorizationFailed) as failure:
        asyncio.run(asyncio.wait_for(start(), CLIENT_TIMEOUT_S))
    return failure.value


@pytest.mark.parametrize(
    "init",
    [_confluent_init, _kafka_python_init, _aiokafka_init],
    ids=["confluent", "kafka-python", "aiokafka"],
)
def test_a_transactional_producer_fails_at_once_with_a_fatal_error(broker, init):
    started = time.monotonic()
    error = init(broker.bootstrap)
    elapsed = time.monotonic() - started
    assert elapsed < CLIENT_TIMEOUT_S, f"took {elapsed:.1f} s: the client retried"
    assert "Transactional" in type(error).__name__ or "Transactional" in str(error)


def test_every_transactional_request_is_refused_with_the_reason(broker):
    with Connection(broker.bootstrap) as conn:
        coordinator = conn.request(
            ApiKey.FIND_COORDINATOR, 2, {"key": TRANSACTIONAL_ID, "key_type": 1}
        )
        assert coordinator["error_code"] == ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        assert coordinator["error_message"] == TRANSACTIONS_REFUSED
        init = conn.request(
            ApiKey.INIT_PRODUCER_ID,
            1,
            {"transactional_id": TRANSACTIONAL_ID, "transaction_timeout_ms": 60_000},
        )
        assert init["error_code"] == ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        assert init["producer_id"] == -1
        idempotent = conn.request(
            ApiKey.INIT_PRODUCER_ID, 1, {"transactional_id": None, "transaction_timeout_ms": 0}
        )
        assert idempotent["error_code"] == ErrorCode.NONE
        batch = build_batch(
            [(b"k", b"v", [])],
            producer_id=idempotent["producer_id"],
            producer_epoch=0,
            base_sequence=0,
        )
        produce = conn.request(
            ApiKey.PRODUCE,
            8,
            {
                "transactional_id": TRANSACTIONAL_ID,
                "acks": -1,
                "timeout_ms": 10_000,
                "topic_data": [{"name": "tx", "partition_data": [{"index": 0, "records": batch}]}],
            },
        )
        [part] = produce["responses"][0]["partition_responses"]
        assert part["error_code"] == ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        assert part["error_message"] == TRANSACTIONS_REFUSED

    # A batch marked transactional is refused even without a transactional id, and nothing
    # is appended: a consumer could never learn whether it was committed.
    marked = bytearray(batch)
    struct.pack_into(">h", marked, 21, struct.unpack_from(">h", marked, 21)[0] | 0x10)
    struct.pack_into(">I", marked, 17, crc32c.crc32c(bytes(marked[21:])))
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("tx")
        with pytest.raises(KafkaError) as failure:
            client.produce("tx", 0, bytes(marked))
        assert failure.value.code == ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        assert client.list_offset("tx", 0, -1)[0] == 0
        assert client.produce("tx", 0, batch) == 0
