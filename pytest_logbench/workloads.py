"""Workloads: what a measurement runs against a broker, round after round.

Each workload seeds its data once (``setup``, untimed), puts the page cache in a known state
before every round (``prepare``, untimed), moves bytes (``run``, timed) and cleans up
(``close``, also after a failure). Consumers of a fleet run in processes of their own, so the
GIL never serialises them; a single consumer runs in the test process, whose receive path
(splice to /dev/null) costs less than the broker's send.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pytest

from pytest_logbench.contract import Broker
from pytest_logbench.stats import parse_size

if TYPE_CHECKING:
    from pytest_logbench.client import Consumer, Producer, Transfer
    from pytest_logbench.members import MemberGroup, Stop

# --- workloads -------------------------------------------------------------------------------


class Workload(Protocol):
    """What ``Meter`` runs. ``setup`` once (untimed: seed data, connect), ``prepare`` before
    every round (untimed: put the page cache in a known state), ``run`` timed, ``close`` at
    the end, also after a failure."""

    broker: Broker
    name: str

    def describe(self) -> dict[str, Any]: ...

    def setup(self) -> None: ...

    def prepare(self) -> None: ...

    def run(self) -> Transfer: ...

    def close(self) -> None: ...


def client_options(broker: Broker) -> dict[str, Any]:
    """Connection arguments for the harness clients: a TLS broker needs its CA trusted."""
    options = getattr(broker, "options", None)
    if options is not None and options.tls:
        return {"cafile": str(broker.ca_path)}
    return {}


def fresh_topic(prefix: str) -> str:
    """A fresh topic per workload: two workloads on one broker never read each other's data."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class ProduceWorkload:
    """Each round appends ``size`` bytes of records to one partition (one producer)."""

    name = "produce"

    def __init__(
        self,
        broker: Broker,
        size: int | str = "64 MiB",
        *,
        topic: str | None = None,
        record_bytes: int = 1024,
        batch_bytes: int = 256 << 10,
        acks: int = 1,
    ) -> None:
        self.broker = broker
        self.size = parse_size(size)
        self.topic = topic or fresh_topic("logbench-produce")
        self.record_bytes, self.batch_bytes, self.acks = record_bytes, batch_bytes, acks
        self._producer: Producer | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "produce",
            "bytes": self.size,
            "record_bytes": self.record_bytes,
            "batch_bytes": self.batch_bytes,
            "acks": self.acks,
            **broker_traits(self.broker),
        }

    def setup(self) -> None:
        from pytest_logbench.client import Producer

        self._producer = Producer(self.broker.bootstrap, **client_options(self.broker))

    def prepare(self) -> None:
        """Nothing: appends go to the page cache whatever its state."""

    def against(self, broker: Broker) -> ProduceWorkload:
        """The same workload on another broker (a reference revision's, for the gate)."""
        return ProduceWorkload(
            broker,
            self.size,
            record_bytes=self.record_bytes,
            batch_bytes=self.batch_bytes,
            acks=self.acks,
        )

    def control(self) -> Workload | None:
        """The machine's append ceiling: the same bytes received and written to a file on the
        log's filesystem by the raw peer. None for brokers without a local log dir."""
        from pytest_logbench.ceiling import RawAppendWorkload

        log_dir = _local_log_dir(self.broker)
        if log_dir is None or client_options(self.broker):
            return None
        return RawAppendWorkload(None, self.size, near=log_dir.parent)

    def run(self) -> Transfer:
        return self.run_part(0, 1)

    def run_part(self, part: int, parts: int) -> Transfer:
        """Append ``size / parts`` bytes (a round beside its control runs in parts)."""
        assert self._producer is not None, "setup() not called"
        return self._producer.produce(
            self.topic,
            self.size // parts,
            record_bytes=self.record_bytes,
            batch_bytes=self.batch_bytes,
            acks=self.acks,
        )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()


@dataclass(frozen=True)
class ConsumerSpec:
    """Builds a harness ``Consumer`` in a member process (picklable, unlike a socket)."""

    bootstrap: str
    connection: dict[str, Any]

    def __call__(self, stop: Stop) -> Consumer:
        from pytest_logbench.client import Consumer

        return Consumer(self.bootstrap, **self.connection)


class FetchWorkload:
    """Each round ``consumers`` consumers read the same ``size`` bytes, seeded once by setup.

    ``cache="warm"`` reads the segments into the page cache before every round (what a
    consumer at the tail sees), ``"cold"`` evicts them (a lagging consumer replaying history:
    the broker must go to disk), ``"as-is"`` leaves the cache alone (e.g. an external cluster,
    whose files we cannot touch). More than one consumer makes a fleet reading concurrently,
    each consumer in a process of its own. ``receive`` is the consumers' receive path
    (``pytest_logbench.receive``: ``"auto"`` splices, ``"copy"`` pays what a client pays).
    """

    def __init__(
        self,
        broker: Broker,
        size: int | str = "64 MiB",
        *,
        topic: str | None = None,
        cache: Literal["warm", "cold", "as-is"] = "warm",
        consumers: int = 1,
        max_bytes: int = 8 << 20,
        receive: str = "auto",
    ) -> None:
        if cache not in ("warm", "cold", "as-is"):
            raise ValueError(f"cache must be 'warm', 'cold' or 'as-is', got {cache!r}")
        if consumers < 1:
            raise ValueError(f"consumers must be >= 1, got {consumers}")
        self.broker = broker
        self.size = parse_size(size)
        self.topic = topic or fresh_topic("logbench-fetch")
        self.cache, self.consumers, self.max_bytes = cache, consumers, max_bytes
        self.receive = receive
        self.name = f"fetch-{cache}" if consumers == 1 else f"fleet{consumers}-{cache}"
        self._end = self._part_position = 0
        self._consumer: Consumer | None = None
        self._members: MemberGroup | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "fetch",
            "bytes": self.size,
            "cache": self.cache,
            "consumers": self.consumers,
            "max_bytes": self.max_bytes,
            "receive": self.receive,
            **broker_traits(self.broker),
        }

    def setup(self) -> None:
        from pytest_logbench import pagecache
        from pytest_logbench.client import Consumer, Producer
        from pytest_logbench.members import MemberGroup

        options = client_options(self.broker)
        producer = Producer(self.broker.bootstrap, **options)
        try:
            producer.produce(self.topic, self.size)
            self._end, _ = producer.client.list_offset(self.topic, 0, -1)
        finally:
            producer.close()
        if self.cache == "cold":
            supported, reason = pagecache.eviction_supported(
                self.broker.segment_files(self.topic)[0].parent
            )
            if not supported:
                pytest.skip(f"a cold fetch needs page-cache eviction: {reason}")
        connection = {**options, "receive": self.receive}
        if self.consumers == 1:
            self._consumer = Consumer(self.broker.bootstrap, **connection)
        else:
            spec = ConsumerSpec(self.broker.bootstrap, connection)
            self._members = MemberGroup(
                [spec] * self.consumers, names=[f"consumer-{i}" for i in range(self.consumers)]
            )

    def prepare(self) -> None:
        from pytest_logbench import pagecache

        if self.cache == "as-is":
            return
        files = self.broker.segment_files(self.topic)
        if self.cache == "warm":
            pagecache.warm(files)
            return
        evicted = pagecache.evict(files)
        if not evicted.complete:
            raise RuntimeError(f"could not make {self.topic} cold:\n{evicted.report()}")

    def run(self) -> Transfer:
        from pytest_logbench.client import Transfer
        from pytest_logbench.latency import Latency

        started = time.perf_counter()
        if self._consumer is not None:
            transfers = [
                self._consumer.consume(self.topic, until_offset=self._end, max_bytes=self.max_bytes)
            ]
        else:
            assert self._members is not None, "setup() not called"
            transfers = self._members.call(
                "consume", self.topic, until_offset=self._end, max_bytes=self.max_bytes
            )
        seconds = time.perf_counter() - started
        return Transfer(
            sum(t.bytes for t in transfers),
            sum(t.records for t in transfers),
            sum(t.batches for t in transfers),
            sum(t.requests for t in transfers),
            seconds,
            latency=Latency.merge(t.latency for t in transfers),  # every member's requests
        )

    def run_part(self, part: int, parts: int) -> Transfer:
        """One of ``parts`` consecutive stretches of a round (a round beside its control is
        run in alternating parts); each part continues exactly where the previous one ended.
        A fleet's members cannot split a round exactly: it runs whole in the first part."""
        if self._consumer is None:
            from pytest_logbench.client import Transfer

            return self.run() if part == 0 else Transfer(0, 0, 0, 0, 0.0)
        start = 0 if part == 0 else self._part_position
        until = self._end if part == parts - 1 else self._end * (part + 1) // parts
        done = self._consumer.consume(
            self.topic, offset=start, until_offset=until, max_bytes=self.max_bytes
        )
        self._part_position = done.next_offset
        return done

    def against(self, broker: Broker) -> FetchWorkload:
        """The same workload on another broker (a reference revision's, for the gate)."""
        return FetchWorkload(
            broker,
            self.size,
            cache=self.cache,
            consumers=self.consumers,
            max_bytes=self.max_bytes,
            receive=self.receive,
        )

    def control(self) -> Workload | None:
        """The machine's fetch ceiling for this workload: the same number of bytes served by
        bare sendfile from a file on the log's filesystem, read by the same receive path.
        None for fleets and for brokers without a local log dir."""
        from pytest_logbench.ceiling import RawFetchWorkload

        log_dir = _local_log_dir(self.broker)
        if log_dir is None or self.consumers > 1 or self.cache == "as-is":
            return None
        receive = "copy" if client_options(self.broker) else self.receive
        return RawFetchWorkload(
            None, self.size, near=log_dir.parent, cache=self.cache, receive=receive
        )

    def close(self) -> None:
        if self._members is not None:
            self._members.close()
        if self._consumer is not None:
            self._consumer.close()


def _local_log_dir(broker: Broker) -> Path | None:
    """The broker's log dir when it is a local directory we may write beside, else None."""
    try:
        log_dir = Path(broker.log_dir)
        broker.pid  # noqa: B018 - external brokers raise LocalOnly here
    except Exception:
        return None
    return log_dir if log_dir.is_dir() else None


def broker_traits(broker: Broker) -> dict[str, Any]:
    """The broker options a reader of a report needs to interpret its figures."""
    options = getattr(broker, "options", None)
    if options is None:
        return {"broker": "external"}
    return {
        "broker": "tls" if options.tls else ("copy" if options.copy else "zerocopy"),
        "fetch_slowdown": options.fetch_slowdown,
    }
