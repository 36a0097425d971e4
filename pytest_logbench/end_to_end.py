"""End-to-end latency: from the moment a record was meant to be sent to the moment a consumer
reading the tail has it (Kafka's EndToEndLatency tool, the OpenMessaging Benchmark's
end-to-end latency).

A paced producer stamps each record's value with its *intended* send time (CLOCK_MONOTONIC,
which every process of the machine shares); a tail consumer, long-polling from the end of the
log, decodes each record and records now minus the stamp. A producer that falls behind keeps
its schedule's stamps (``latency.Pacer``), so a stall shows as the latency of every record it
delayed, not as one slow sample (coordinated omission). Producer and consumer each run in a
member process of their own: in one interpreter, the consumer's decoding and the producer's
sleeps would take turns at the GIL, and the measurement would include that wait.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any

from pytest_logbench.client import HarnessClient, Transfer
from pytest_logbench.contract import Broker
from pytest_logbench.latency import Latency, Pacer
from pytest_logbench.members import MemberGroup, Stop
from pytest_logbench.workloads import broker_traits, client_options, fresh_topic
from reference_broker.record_codec import build_batch, iter_records

STAMP = struct.Struct(">q")  # intended send time (monotonic ns) at the start of each value


@dataclass(frozen=True)
class PacedProducerSpec:
    """Builds a ``PacedProducer`` in a member process."""

    bootstrap: str
    connection: dict[str, Any]
    topic: str
    record_bytes: int
    acks: int
    batch_records: int = 1  # records per produce request (see ``PacedProducer``)
    until: Stop | None = None  # ends a round early when set (e.g. by a consumer)
    latency_after: Stop | None = None  # acks are recorded once this is set (None: always)

    def __call__(self, stop: Stop) -> PacedProducer:
        return PacedProducer(self, stop)


class PacedProducer:
    """Sends produce requests of ``batch_records`` records at a steady rate. Each record is
    stamped with its own intended time on the schedule (one record every ``1 / rate`` s) and
    a request goes out at its last record's time, so a record's latency includes its wait in
    the batch, as ``linger.ms`` does in a real producer. The acknowledgement latency is
    measured from the request's intended send time."""

    def __init__(self, spec: PacedProducerSpec, stop: Stop) -> None:
        if spec.record_bytes < STAMP.size:
            raise ValueError(f"record_bytes must be >= {STAMP.size} (the time stamp)")
        self.spec, self.stop = spec, stop
        self.client = HarnessClient(spec.bootstrap, **spec.connection)
        self.client.ensure_topic(spec.topic)
        self._padding = bytes(spec.record_bytes - STAMP.size)

    def produce(self, rate: float, seconds: float) -> Transfer:
        """``rate * seconds`` records (whole requests), paced; stops early when the group's
        stop or the spec's ``until`` is set."""
        spec, count = self.spec, self.spec.batch_records
        pacer, latency = Pacer(rate / count), Latency()
        record_ns = round(1e9 / rate)
        started, sent = time.perf_counter(), 0
        for _ in range(max(1, round(rate * seconds / count))):
            if self.stop.is_set() or (spec.until is not None and spec.until.is_set()):
                break
            intended = pacer.next()  # the batch's last record's time
            stamps = (intended - (count - 1 - i) * record_ns for i in range(count))
            records = [(None, STAMP.pack(stamp) + self._padding, []) for stamp in stamps]
            self.client.produce(spec.topic, 0, build_batch(records), acks=spec.acks)
            if spec.latency_after is None or spec.latency_after.is_set():
                latency.record_since(intended)
            sent += spec.batch_records
        seconds_taken = time.perf_counter() - started
        requests = sent // spec.batch_records
        size = sent * spec.record_bytes
        return Transfer(size, sent, requests, requests, seconds_taken, latency=latency)

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class TailReaderSpec:
    """Builds a ``TailReader`` in a member process."""

    bootstrap: str
    connection: dict[str, Any]
    topic: str

    def __call__(self, stop: Stop) -> TailReader:
        return TailReader(self, stop)


class TailReader:
    """Long-polls a partition from an offset and records, for every record, the time since
    the send time stamped in its value."""

    def __init__(self, spec: TailReaderSpec, stop: Stop) -> None:
        self.spec, self.stop = spec, stop
        self.client = HarnessClient(spec.bootstrap, **spec.connection)

    def read(self, offset: int, records: int, timeout: float = 60.0) -> Transfer:
        """Read ``records`` records from ``offset`` (or fewer, when the group is stopped)."""
        latency, position, seen, size = Latency(), offset, 0, 0
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        requests = 0
        while seen < records and not self.stop.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen} of {records} records arrived within {timeout:g} s")
            fetched = self.client.fetch(self.spec.topic, 0, position, max_wait_ms=100)
            requests += 1
            if fetched.error:
                raise RuntimeError(f"Fetch {self.spec.topic} at {position}: {fetched.error!r}")
            for at, _ in fetched.batches():
                for record in iter_records(fetched.records[at:]):
                    if record.offset < position or record.value is None:
                        continue
                    now = time.monotonic_ns()
                    latency.record_since(STAMP.unpack_from(record.value)[0], now)
                    position, seen, size = record.offset + 1, seen + 1, size + len(record.value)
        return Transfer(size, seen, 0, requests, time.perf_counter() - started, position, latency)

    def close(self) -> None:
        self.client.close()


class ProducerAndReader:
    """What a paced producer and a reader of one topic, each in a process of its own, share:
    ``setup`` connects and makes the topic, then starts the members ``members(options)``
    names; ``run`` asks the log end first (``log_end``); ``close`` stops both."""

    broker: Broker
    topic: str
    record_bytes: int
    acks: int
    batch_records: int
    _client: HarnessClient | None = None
    _members: MemberGroup | None = None

    def members(self, options: dict[str, Any]) -> tuple[list[Any], list[str]]:
        raise NotImplementedError

    def paced_producer(self, options: dict[str, Any], **stops: Stop | None) -> PacedProducerSpec:
        """The paced producer of this workload's records (``until`` / ``latency_after``)."""
        return PacedProducerSpec(
            self.broker.bootstrap,
            options,
            self.topic,
            self.record_bytes,
            self.acks,
            batch_records=self.batch_records,
            **stops,
        )

    def setup(self) -> None:
        options = client_options(self.broker)
        self._client = HarnessClient(self.broker.bootstrap, **options)
        self._client.ensure_topic(self.topic)
        specs, names = self.members(options)
        self._members = MemberGroup(specs, names=names)

    def log_end(self) -> int:
        assert self._client is not None and self._members is not None, "setup() not called"
        return self._client.list_offset(self.topic, 0, -1)[0]

    def close(self) -> None:
        if self._members is not None:
            self._members.close()
        if self._client is not None:
            self._client.close()


class EndToEndLatencyWorkload(ProducerAndReader):
    """Each round a producer sends ``rate`` records per second for ``seconds``, in requests
    of ``batch_records`` records, while a consumer reads them at the tail; the round's
    latency is end to end (each record's intended send time to consumed), its records and
    bytes those consumed. One request at a time keeps a few hundred requests per second on a
    busy 2-core machine; beyond what it keeps, the latency grows with the backlog of the
    schedule, as it should. Batching raises the rate it keeps, at the price of the records'
    wait in their batch (up to ``batch_records / rate``), which their latency includes."""

    name = "end-to-end"

    def __init__(
        self,
        broker: Broker,
        *,
        rate: float = 200.0,
        record_bytes: int = 100,
        seconds: float = 2.0,
        acks: int = 1,
        batch_records: int = 1,
        topic: str | None = None,
    ) -> None:
        if batch_records < 1:
            raise ValueError(f"batch_records must be >= 1, got {batch_records}")
        if rate <= 0 or seconds <= 0:
            raise ValueError(f"rate and seconds must be > 0, got {rate} and {seconds}")
        if record_bytes < STAMP.size:
            raise ValueError(f"record_bytes must be >= {STAMP.size} (the time stamp)")
        self.broker, self.rate, self.record_bytes = broker, rate, record_bytes
        self.seconds, self.acks, self.batch_records = seconds, acks, batch_records
        self.topic = topic or fresh_topic("logbench-e2e")

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "end-to-end",
            "rate": self.rate,
            "record_bytes": self.record_bytes,
            "seconds": self.seconds,
            "acks": self.acks,
            "batch_records": self.batch_records,
            "latency": "end to end, from the intended send time",
            **broker_traits(self.broker),
        }

    def members(self, options: dict[str, Any]) -> tuple[list[Any], list[str]]:
        tail = TailReaderSpec(self.broker.bootstrap, options, self.topic)
        return [self.paced_producer(options), tail], ["producer", "tail"]

    def prepare(self) -> None:
        """Nothing: the tail is in the page cache by nature."""

    def run(self) -> Transfer:
        end = self.log_end()
        assert self._members is not None
        records = max(1, round(self.rate * self.seconds / self.batch_records)) * self.batch_records
        _, consumed = self._members.call_each(
            [
                ("produce", (self.rate, self.seconds), {}),
                ("read", (end, records), {"timeout": self.seconds + 60}),
            ]
        )
        return consumed
