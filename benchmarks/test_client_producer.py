"""A real client's producer against the reference broker, beside the harness producer, and
the end-to-end latency of a record from its intended send time to a tail consumer.

Kreps measured 821,557 records/s of 100-byte records from one producer into Kafka (2014, three
brokers, 6 disks each, 1 Gb/s Ethernet); a user of this project reached about 919,000 with
confluent-kafka (linger.ms=5, lz4, acks=all) on this machine. Both producers send 100-byte
records to one partition of the reference broker, in interleaved rounds: the harness producer
re-sends one prebuilt batch (it measures the broker); confluent-kafka builds, batches and
compresses every record (it measures the client and the broker together). Figures are for
reading, not pass/fail. ``LOGBENCH_SMOKE=1`` makes every benchmark small.
"""

from __future__ import annotations

import threading

from sizes import scaled

from pytest_logbench.client import Producer
from pytest_logbench.client_workloads import ClientProduceWorkload
from pytest_logbench.end_to_end import EndToEndLatencyWorkload
from pytest_logbench.lag import Fleet
from pytest_logbench.tables import print_comparison
from pytest_logbench.workloads import ProduceWorkload

RECORDS = scaled(2_000_000, 20_000)
ROUNDS = scaled(5, 2)
CONFIG = {"linger.ms": 5, "compression.type": "lz4", "acks": "all"}
E2E_RATE = 200  # records/s, one per request: what a one-at-a-time producer keeps here
E2E_SECONDS = scaled(5, 1)


def test_confluent_kafka_producer_beside_the_harness_producer(broker, measure):
    client, harness = measure.compare(
        ClientProduceWorkload(broker, CONFIG, record_bytes=100, records=RECORDS),
        ProduceWorkload(broker, RECORDS * 100, record_bytes=100, acks=-1),
        rounds=ROUNDS,
        names=("confluent-kafka", "harness producer"),
        syscalls=False,
    )
    print_comparison(
        f"100-byte records into one partition, {RECORDS:,} per round ({CONFIG})",
        client,
        harness,
        metrics=("records", "throughput", "latency_p99"),
    )
    print(client.describe("records"), client.latency(), sep="\n")


def test_end_to_end_latency_with_and_without_a_replaying_fleet(broker_factory, measure):
    """The seed's "a fleet reading the tail is cheap; one replaying history competes": the
    end-to-end latency of a paced producer's records at a tail consumer, alone and while two
    consumers replay the log's history from its start."""
    broker = broker_factory()
    history = scaled(256, 16) << 20
    Producer(broker.bootstrap).produce("history", history)
    alone = measure(
        EndToEndLatencyWorkload(broker, rate=E2E_RATE, seconds=E2E_SECONDS),
        rounds=ROUNDS,
        name="e2e alone",
        syscalls=False,
    )
    fleet = Fleet(broker.bootstrap, "history").replay(2)
    replaying = threading.Thread(target=fleet.run, args=(E2E_SECONDS * (ROUNDS + 2) + 10,))
    replaying.start()
    try:
        busy = measure(
            EndToEndLatencyWorkload(broker, rate=E2E_RATE, seconds=E2E_SECONDS),
            rounds=ROUNDS,
            name="e2e beside 2 replaying consumers",
            syscalls=False,
        )
    finally:
        replaying.join()
    for result in (alone, busy):
        print(result.key, result.latency(), sep="\n  ")
