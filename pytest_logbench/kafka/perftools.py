"""Kafka's own perf tools as logbench workloads: the figures Kafka engineers already know.

``kafka-producer-perf-test`` (``org.apache.kafka.tools.ProducerPerformance``) and
``kafka-consumer-perf-test`` (``ConsumerPerformance``) are what most Kafka performance numbers
in the wild come from. Wrapping them as workloads lets a user set them beside logbench's own
figures, against the reference broker or a real Kafka: the Java client does its own batching,
compression and acks, so these measure a client as much as a broker.

Each round runs the tool once in a fresh JVM. The tool times itself (after its JVM has
started and connected), and that is the time a round reports: ``seconds_by_tool`` tells the
``Meter`` to take the transfer's own seconds, so JVM start-up never dilutes the rate.
The tool's latency percentiles (producer) and fetch rate (consumer) are kept per round in
``reports``, parsed from the tool's last line.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any

from pytest_logbench.client import Transfer
from pytest_logbench.contract import Broker
from pytest_logbench.kafka.jars import classpath, fetch
from pytest_logbench.workloads import client_options

MIB = 1 << 20  # the tools' "MB" is 2^20 bytes
_TOOL_SECONDS = 600

_PRODUCER_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec \((?P<mib>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, (?P<p50>\d+) ms 50th, "
    r"(?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th, (?P<p999>\d+) ms 99.9th"
)
_CONSUMER_COLUMNS = (
    "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
    "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
)


class PerfToolError(RuntimeError):
    """A Kafka perf tool failed or printed no summary; the message holds its command and output."""


@dataclass(frozen=True)
class ProducerReport:
    """The summary line of ``kafka-producer-perf-test``; latencies in milliseconds."""

    records: int
    records_per_s: float
    mib_per_s: float
    latency_avg_ms: float
    latency_max_ms: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_p999_ms: float


@dataclass(frozen=True)
class ConsumerReport:
    """The summary of ``kafka-consumer-perf-test``. ``fetch_*`` leave out the group join
    (``rebalance_ms``), which the whole-run figures include."""

    records: int
    mib: float
    mib_per_s: float
    records_per_s: float
    rebalance_ms: float
    fetch_ms: float
    fetch_mib_per_s: float
    fetch_records_per_s: float


def parse_producer_summary(output: str) -> ProducerReport:
    """The last summary line of the producer tool's output (it also prints interim lines)."""
    matches = list(_PRODUCER_SUMMARY.finditer(output))
    if not matches:
        raise ValueError("no kafka-producer-perf-test summary line in the output")
    m = matches[-1]
    return ProducerReport(
        records=int(m["records"]),
        records_per_s=float(m["rate"]),
        mib_per_s=float(m["mib"]),
        latency_avg_ms=float(m["avg"]),
        latency_max_ms=float(m["max"]),
        latency_p50_ms=float(m["p50"]),
        latency_p95_ms=float(m["p95"]),
        latency_p99_ms=float(m["p99"]),
        latency_p999_ms=float(m["p999"]),
    )


def parse_consumer_summary(output: str) -> ConsumerReport:
    """The CSV row after the consumer tool's header line."""
    lines = [line.strip() for line in output.splitlines()]
    try:
        row = lines[lines.index(_CONSUMER_COLUMNS) + 1]
    except (ValueError, IndexError):
        raise ValueError("no kafka-consumer-perf-test header and row in the output") from None
    values = [value.strip() for value in row.split(",")]
    if len(values) != 10:
        raise ValueError(f"kafka-consumer-perf-test row has {len(values)} columns, not 10: {row}")
    mib, mib_s, records, records_s, rebalance, fetch_ms, fetch_mib_s, fetch_rec_s = map(
        float, values[2:]
    )
    return ConsumerReport(
        records=int(records),
        mib=mib,
        mib_per_s=mib_s,
        records_per_s=records_s,
        rebalance_ms=rebalance,
        fetch_ms=fetch_ms,
        fetch_mib_per_s=fetch_mib_s,
        fetch_records_per_s=fetch_rec_s,
    )


def _client_properties(broker: Broker, config: dict[str, str] | None) -> dict[str, str]:
    properties = {"bootstrap.servers": broker.bootstrap}
    cafile = client_options(broker).get("cafile")
    if cafile is not None:
        properties |= {
            "security.protocol": "SSL",
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(cafile),
        }
    return properties | {key: str(value) for key, value in (config or {}).items()}


def _run_tool(main_class: str, arguments: list[str]) -> str:
    command = ["java", "-cp", classpath(), main_class, *arguments]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_TOOL_SECONDS,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        ran = " ".join(command)
        raise PerfToolError(f"{main_class} ran over {_TOOL_SECONDS} s: {ran}") from exc
    if done.returncode != 0:
        raise PerfToolError(
            f"{main_class} exited {done.returncode}: {' '.join(command)}\n"
            f"{(done.stdout + done.stderr).strip()[-3000:]}"
        )
    return done.stdout


@dataclass
class _PerfTool:
    """What both tools share: the broker, the records of a round, the topic, and the
    ``Workload`` steps a JVM tool has no use for."""

    broker: Broker
    records: int = 1_000_000
    record_bytes: int = 100
    config: dict[str, str] = field(default_factory=dict)
    topic: str = ""
    seconds_by_tool: bool = True

    def __post_init__(self) -> None:
        if self.records <= 0 or self.record_bytes <= 0:
            raise ValueError(
                f"records and record_bytes must be positive, not {self.records} and "
                f"{self.record_bytes}"
            )
        self.topic = self.topic or f"{self.name}-{uuid.uuid4().hex[:8]}"

    def describe(self) -> dict[str, Any]:
        return {
            "workload": self.name,
            "records": self.records,
            "record_bytes": self.record_bytes,
            **{f"client.{key}": value for key, value in sorted(self.config.items())},
        }

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class KafkaProducerPerformance(_PerfTool):
    """``kafka-producer-perf-test`` as a workload: ``records`` of ``record_bytes`` each per
    round, into a topic of its own, with the producer ``config`` given (``acks``,
    ``linger.ms``, ``compression.type``, ``batch.size``...). ``throughput`` caps records/s
    (-1: as fast as it goes)."""

    throughput: int = -1
    name: str = "kafka-producer-perf-test"
    reports: list[ProducerReport] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "throughput": self.throughput}

    def setup(self) -> None:
        fetch(quiet=True)

    def run(self) -> Transfer:
        properties = _client_properties(self.broker, self.config)
        output = _run_tool(
            "org.apache.kafka.tools.ProducerPerformance",
            [
                "--topic", self.topic, "--num-records", str(self.records),
                "--record-size", str(self.record_bytes), "--throughput", str(self.throughput),
                "--command-property", *(f"{key}={value}" for key, value in properties.items()),
            ],
        )  # fmt: skip
        report = parse_producer_summary(output)
        self.reports.append(report)
        return Transfer(
            bytes=report.records * self.record_bytes,
            records=report.records,
            batches=0,
            requests=0,
            seconds=report.records / report.records_per_s,
        )


@dataclass
class KafkaConsumerPerformance(_PerfTool):
    """``kafka-consumer-perf-test`` as a workload: each round a fresh group reads ``records``
    from the start of a topic that ``setup`` fills with the producer tool (``record_bytes``
    each). A round's time is the tool's fetch time, without the group join."""

    name: str = "kafka-consumer-perf-test"
    reports: list[ConsumerReport] = field(default_factory=list)

    def setup(self) -> None:
        KafkaProducerPerformance(
            self.broker, records=self.records, record_bytes=self.record_bytes, topic=self.topic
        ).run()

    def run(self) -> Transfer:
        properties = _client_properties(self.broker, self.config)
        output = _run_tool(
            "org.apache.kafka.tools.ConsumerPerformance",
            [
                "--bootstrap-server", self.broker.bootstrap, "--topic", self.topic,
                "--num-records", str(self.records), "--timeout", "60000",
                "--group", f"logbench-perf-{uuid.uuid4().hex[:8]}",
                # this tool takes one property per flag
                *(arg for key, value in properties.items()
                  for arg in ("--command-property", f"{key}={value}")),
            ],
        )  # fmt: skip
        report = parse_consumer_summary(output)
        if report.records < self.records:
            raise PerfToolError(
                f"kafka-consumer-perf-test read {report.records} of {self.records} records "
                f"from {self.topic} before its timeout"
            )
        self.reports.append(report)
        return Transfer(
            bytes=round(report.mib * MIB),
            records=report.records,
            batches=0,
            requests=0,
            seconds=report.fetch_ms / 1000,
        )
