"""Real-client workloads (client_workloads.py): confluent-kafka with the user's configuration,
in a member process, against the reference broker. The configuration must reach the log: what
the broker stores shows the client's batching and compression."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_logbench.client_workloads import ClientConsumeWorkload, ClientProduceWorkload
from pytest_logbench.latency import Latency
from reference_broker.records import Compression, batch_codec, iter_batches

pytest.importorskip("confluent_kafka")


def _stored_batches(files: list[Path]) -> list[tuple[Compression, int]]:
    """(codec, record count) of every batch in the segment files, read from their headers."""
    found = []
    for path in files:
        data = memoryview(path.read_bytes())
        found += [(batch_codec(h, at), h.record_count) for at, h in iter_batches(data)]
    return found


@pytest.mark.parametrize(
    ("codec", "stored"), [("lz4", Compression.LZ4), ("none", Compression.NONE)]
)
def test_the_producer_config_reaches_the_log(broker, measure, codec, stored):
    config = {"compression.type": codec, "linger.ms": 5, "acks": "all"}
    workload = ClientProduceWorkload(broker, config, record_bytes=100, records=5000)
    result = measure(workload, rounds=1, warmup=0, syscalls=False)
    [round_] = result.rounds
    assert round_.records == 5000 and round_.bytes == 5000 * 100
    assert Latency.decode(round_.latency).count == 5000  # one delivery report per record
    batches = _stored_batches(broker.segment_files(workload.topic))
    codecs = {c for c, _ in batches}
    # librdkafka sends a batch that its codec could not shrink uncompressed
    assert stored in codecs and codecs <= {stored, Compression.NONE}
    compressed = sum(n for c, n in batches if c == stored)
    assert compressed > 2500  # most records went compressed
    assert sum(n for _, n in batches) == 5000
    assert len(batches) < 5000  # the client batched (linger.ms)
    assert result.workload["config"] == config


def test_the_consumer_reads_every_record(broker, measure):
    workload = ClientConsumeWorkload(broker, {"fetch.min.bytes": 1}, records=20_000)
    result = measure(workload, rounds=2, warmup=0, syscalls=False)
    for round_ in result.rounds:
        assert round_.records >= 20_000 and round_.bytes == round_.records * 100
        assert Latency.decode(round_.latency).count > 0
    assert result.values("records") and result.values("latency_p99")


def test_a_paced_producer_keeps_its_schedule_and_reports_every_record(broker):
    workload = ClientProduceWorkload(broker, {"linger.ms": 1}, records=2000, rate=20_000)
    try:
        workload.setup()
        done = workload.run()
    finally:
        workload.close()
    assert done.records == 2000 and done.latency.count == 2000
    # Never ahead of its schedule (load can only slow it): 100 steps of 20 records, one per
    # millisecond, the last 99 ms after the first.
    assert done.seconds >= 0.09
    assert workload.describe()["rate"] == 20_000
