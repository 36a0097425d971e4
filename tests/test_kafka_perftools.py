"""Kafka's own perf tools as workloads, run against the reference broker and a real Kafka.

The tools are real (kafka-tools from Maven Central, in a JVM); what is checked is what they
did to the broker's log and that the figures logbench reports are the tools' own.
"""

from __future__ import annotations

import pytest

from pytest_logbench import kafka
from pytest_logbench.client import HarnessClient
from pytest_logbench.kafka.perftools import (
    KafkaConsumerPerformance,
    KafkaProducerPerformance,
    PerfToolError,
    parse_consumer_summary,
    parse_producer_summary,
)
from reference_broker.records import Compression, iter_batches

UNAVAILABLE = kafka.unavailable_reason()
pytestmark = [
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
    pytest.mark.slow,
]
LATEST = -1


def _log_end(broker, topic: str) -> int:
    with HarnessClient(broker.bootstrap) as client:
        return client.list_offset(topic, 0, LATEST)[0]


def test_producer_tool_writes_its_records_with_the_config_given(broker_factory, measure):
    broker = broker_factory()
    tool = KafkaProducerPerformance(
        broker,
        records=20_000,
        record_bytes=100,
        config={"compression.type": "lz4", "linger.ms": "5", "acks": "all"},
    )
    result = measure(tool, rounds=2, warmup=0)
    assert _log_end(broker, tool.topic) == 2 * 20_000
    codecs = {
        header.compression
        for path in broker.segment_files(tool.topic)
        for _, header in iter_batches(path.read_bytes())
    }
    assert codecs == {Compression.LZ4}
    report = tool.reports[-1]
    assert report.records == 20_000
    assert report.latency_p50_ms <= report.latency_p99_ms <= report.latency_max_ms
    # the round's rate is the tool's own, not diluted by the JVM's start-up
    assert result.rounds[-1].records / result.rounds[-1].seconds == pytest.approx(
        report.records_per_s, rel=1e-6
    )


def test_consumer_tool_reads_what_the_producer_tool_wrote(broker_factory):
    broker = broker_factory()
    tool = KafkaConsumerPerformance(broker, records=10_000, record_bytes=200)
    tool.setup()
    tool.run()
    report = tool.reports[-1]
    assert report.records == 10_000
    assert report.mib == pytest.approx(10_000 * 200 / (1 << 20), abs=0.001)


def test_a_tool_that_fails_says_what_it_ran(broker_factory):
    tool = KafkaProducerPerformance(broker_factory(), records=10, config={"acks": "banana"})
    with pytest.raises(PerfToolError, match=r"ProducerPerformance exited .*acks"):
        tool.run()


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="must be positive"):
        KafkaProducerPerformance(None, records=0)  # type: ignore[arg-type]


def test_the_producer_tool_runs_unchanged_on_kafka(tmp_path_factory):
    work = tmp_path_factory.mktemp("kafka-perf")
    broker = kafka.KafkaBroker(work / "data", work_dir=work)
    broker.start()
    try:
        tool = KafkaProducerPerformance(broker, records=5_000, config={"acks": "all"})
        tool.run()
        assert _log_end(broker, tool.topic) == 5_000
    finally:
        broker.stop()


def test_summaries_that_are_not_there_are_named():
    with pytest.raises(ValueError, match="producer-perf-test summary"):
        parse_producer_summary("1000 records sent, 10.0 records/sec (0.00 MB/sec)")
    with pytest.raises(ValueError, match="consumer-perf-test header"):
        parse_consumer_summary("WARN something went wrong\n")
