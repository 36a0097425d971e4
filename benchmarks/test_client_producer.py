"""A real client's producer against the reference broker, beside the harness producer, and
the end-to-end latency of a record from its intended send time to a tail consumer.

Kreps measured 821,557 records/s of 100-byte records from one producer into Kafka (2014, three
brokers, 6 disks each, 1 Gb/s Ethernet); a user of this project reached about 919,000 with
confluent-kafka (linger.ms=5, lz4, acks=all) on this machine. Both producers send 100-byte
records to one partition of the reference broker, in interleaved rounds: the harness producer
re-sends one prebuilt batch (it measures the broker); confluent-kafka builds, batches and
compresses every record (it measures the client and the broker together). Figures are for
reading, not pass/fail. ``LOGBENCH_SMOKE=1`` makes every benchmark small.

Measured on the project's shared 2-core VM with five other sessions at work (load average 9 to
12), 2,000,000 records per round, 5 interleaved rounds: confluent-kafka 91,000 records/s
(69,000 to 127,000; delivery p50 46 ms, p99 0.98 s: its queue is full at full speed), the
harness producer 292,000 records/s (acks=all). The client's own loop costs about 1.5 us per
record of Python (1.0 without a delivery callback), and the broker was about 10 % busy: the
client process, starved of CPU, is the limit here, not the broker. End to end at 200 records/s:
p50 0.97 ms and p99 50 ms alone; beside two consumers re-reading 256 MiB of history (27 GB
in all), p50 143 ms and p99 1.2 s (medians of rounds 1.0 vs 128 ms and 35 vs 713 ms).
"""

from __future__ import annotations

import threading

from sizes import scaled

from pytest_logbench.client import Transfer
from pytest_logbench.client_workloads import ClientProduceWorkload
from pytest_logbench.end_to_end import EndToEndLatencyWorkload
from pytest_logbench.tables import print_comparison
from pytest_logbench.workloads import FetchWorkload, ProduceWorkload

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


class BesideReplay:
    """An end-to-end round while a fleet of consumers keeps re-reading the log's history
    (a ``FetchWorkload`` fleet, in member processes, looping in a thread of this process
    that only waits for them). Measured interleaved with the same workload alone, so the
    machine's drift hits both."""

    def __init__(self, e2e: EndToEndLatencyWorkload, history: FetchWorkload) -> None:
        self.e2e, self.history, self.broker = e2e, history, e2e.broker
        self.name = f"e2e, {history.consumers} replaying"
        self.replayed = 0

    def describe(self) -> dict:
        return {**self.e2e.describe(), "beside": self.history.describe()}

    def setup(self) -> None:
        self.history.setup()
        self.e2e.setup()

    def prepare(self) -> None:
        self.e2e.prepare()

    def run(self) -> Transfer:
        done = threading.Event()

        def replay() -> None:
            while not done.is_set():
                self.replayed += self.history.run().bytes

        thread = threading.Thread(target=replay)
        thread.start()
        try:
            return self.e2e.run()
        finally:
            done.set()
            thread.join()

    def close(self) -> None:
        self.e2e.close()
        self.history.close()


def test_end_to_end_latency_with_and_without_a_replaying_fleet(broker, measure):
    """The seed's "a fleet reading the tail is cheap; one replaying history competes": the
    end-to-end latency of a paced producer's records at a tail consumer, alone and while two
    consumers keep replaying the log's history, in interleaved rounds."""
    history = FetchWorkload(broker, scaled(256, 16) << 20, consumers=2, cache="as-is")
    beside = BesideReplay(
        EndToEndLatencyWorkload(broker, rate=E2E_RATE, seconds=E2E_SECONDS), history
    )
    alone, busy = measure.compare(
        EndToEndLatencyWorkload(broker, rate=E2E_RATE, seconds=E2E_SECONDS),
        beside,
        rounds=ROUNDS,
        names=("e2e alone", beside.name),
        syscalls=False,
    )
    print_comparison(
        f"end-to-end latency, {E2E_RATE} records/s of 100 bytes, {E2E_SECONDS} s per round",
        alone,
        busy,
        metrics=("latency_p50", "latency_p99", "latency_max"),
    )
    print(f"the replaying fleet read {beside.replayed / 1e9:.1f} GB meanwhile")
    for result in (alone, busy):
        print(result.name, result.latency(), sep=": ")
