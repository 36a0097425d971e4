"""Backlog drain, as the OpenMessaging Benchmark measures it (Vanlightly's 2023 Kafka backlog
tests are the model): producers keep a steady rate while the consumer is paused until a backlog
of a given size has built; then the consumer resumes and must catch up with a log that is
still growing. What matters is how long the drain takes, and what it does to the producers'
latency meanwhile: reading history competes with appending for the broker's loop, the page
cache and the disk.

Producer and consumer are member processes of their own. The consumer is the harness's
(splice to /dev/null): it reads as fast as the broker sends, so the drain time is the broker's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from pytest_logbench.client import Consumer, HarnessClient, Transfer
from pytest_logbench.contract import Broker
from pytest_logbench.end_to_end import STAMP, ProducerAndReader
from pytest_logbench.members import Stop, event
from pytest_logbench.stats import parse_rate, parse_size
from pytest_logbench.workloads import broker_traits, fresh_topic

POLL_S = 0.01  # how often the paused consumer looks at the log's end


@dataclass(frozen=True)
class BacklogReaderSpec:
    """Builds a ``BacklogReader`` in a member process."""

    bootstrap: str
    connection: dict[str, Any]
    topic: str
    draining: Stop  # set by the reader when it resumes
    drained: Stop  # set by the reader once it caught up

    def __call__(self, stop: Stop) -> BacklogReader:
        return BacklogReader(self, stop)


class BacklogReader:
    """A consumer that waits for a backlog, then reads until it has caught up."""

    def __init__(self, spec: BacklogReaderSpec, stop: Stop) -> None:
        self.spec, self.stop = spec, stop
        self.client = HarnessClient(spec.bootstrap, **spec.connection)
        self.consumer = Consumer(spec.bootstrap, **spec.connection)

    def drain(self, start: int, backlog_records: int, slack: int, timeout: float) -> Transfer:
        """Paused until the log holds ``backlog_records`` past ``start``; then read from
        ``start`` until within ``slack`` records (one producer request) of the end. The
        transfer's seconds are the drain's."""
        topic, deadline = self.spec.topic, time.monotonic() + timeout
        end = start
        while end - start < backlog_records:
            if self.stop.is_set() or time.monotonic() > deadline:
                raise TimeoutError(f"the backlog reached {end - start} of {backlog_records}")
            time.sleep(POLL_S)
            end, _ = self.client.list_offset(topic, 0, -1)
        self.spec.draining.set()
        started = time.perf_counter()
        position, size, records = start, 0, 0
        while end - position > slack and not self.stop.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"still {end - position} records behind after {timeout:g} s")
            done = self.consumer.consume(topic, offset=position, until_offset=end)
            position, size, records = done.next_offset, size + done.bytes, records + done.records
            end, _ = self.client.list_offset(topic, 0, -1)
        self.spec.drained.set()
        return Transfer(size, records, 0, 0, time.perf_counter() - started, position)

    def close(self) -> None:
        self.consumer.close()
        self.client.close()


class BacklogDrainWorkload(ProducerAndReader):
    """Each round: a producer appends at ``rate`` (``"20 MB/s"`` or ``"20k records/s"``) while
    the consumer is paused until ``backlog`` bytes have built; then the consumer drains it.
    The round's bytes, records and seconds are the drain's (so throughput is the drain rate
    and ``Round.seconds`` the drain time); its latency is the producer's acknowledgement
    latency while the drain ran, from each request's intended send time."""

    name = "backlog-drain"

    def __init__(
        self,
        broker: Broker,
        *,
        backlog: int | str = "64 MiB",
        rate: str = "20 MB/s",
        record_bytes: int = 1024,
        batch_bytes: int = 64 << 10,
        acks: int = 1,
        timeout: float = 300.0,
        topic: str | None = None,
    ) -> None:
        self.broker, self.backlog = broker, parse_size(backlog)
        self.rate = parse_rate(rate)
        if record_bytes < STAMP.size:
            raise ValueError(f"record_bytes must be >= {STAMP.size} (the time stamp)")
        self.record_bytes, self.acks, self.timeout = record_bytes, acks, timeout
        self.batch_records = max(1, batch_bytes // record_bytes)
        per_second = self.rate.per_second
        if self.rate.kind == "bytes":
            per_second /= record_bytes
        self.records_per_s = per_second
        self.topic = topic or fresh_topic("logbench-backlog")
        self._draining, self._drained = event(), event()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "backlog-drain",
            "backlog": self.backlog,
            "rate": str(self.rate),
            "record_bytes": self.record_bytes,
            "batch_records": self.batch_records,
            "acks": self.acks,
            "latency": "producer acks during the drain, from the intended send time",
            **broker_traits(self.broker),
        }

    def members(self, options: dict[str, Any]) -> tuple[list[Any], list[str]]:
        producer = self.paced_producer(options, until=self._drained, latency_after=self._draining)
        reader = BacklogReaderSpec(
            self.broker.bootstrap, options, self.topic, self._draining, self._drained
        )
        return [producer, reader], ["producer", "backlog-reader"]

    def prepare(self) -> None:
        self._draining.clear()
        self._drained.clear()

    def run(self) -> Transfer:
        start = self.log_end()
        assert self._members is not None
        backlog_records = math.ceil(self.backlog / self.record_bytes)
        produced, drained = self._members.call_each(
            [
                ("produce", (self.records_per_s, self.timeout), {}),
                ("drain", (start, backlog_records, self.batch_records, self.timeout), {}),
            ],
            timeout=self.timeout + 60,
        )
        return Transfer(
            drained.bytes,
            drained.records,
            0,
            produced.requests,
            drained.seconds,
            drained.next_offset,
            produced.latency,
        )
