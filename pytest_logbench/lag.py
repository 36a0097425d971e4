"""Lagging-consumer generators: fleets of tail readers, replayers and a steady producer.

The seed's design consequence — "a fleet reading the tail is cheap; a fleet replaying history
competes for page cache and IO with everyone else" — is an experiment with three parts: a
producer appending at a steady rate (whose acknowledgement latency shows when the broker is
busy elsewhere), consumers that keep up with the tail, and consumers that replay from far
behind. ``Fleet`` runs all three at once, each member in a process of its own (threads of one
interpreter would take turns at the GIL and measure that instead of the broker), and reports
each member's throughput and latencies, so a test can compare a tail-only fleet with one that
also replays.

Beyond the tail and the full replay, the lags of real fleets: ``lagging`` consumers stay a
fixed distance behind the log end (in records, bytes or segments), the way a slow downstream job
does; ``replay`` can be paced (``rate_mb_s``: a throttled catch-up) or start at a time
(``Timestamp``: "reprocess since yesterday"). Given the broker's ``log_dir`` (a local broker),
each consumer also counts its *cold bytes*: the bytes of each fetched range whose pages were not
in the page cache just before the fetch (mincore on the segment file), so a test can tell which
member sent the broker to the disk.

The broker's own account of the same window (tail vs history bytes) is in its metrics.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_logbench.client import HarnessClient, KafkaError
from pytest_logbench.cold_bytes import ColdBytes
from pytest_logbench.members import MemberFailed, MemberGroup, Stop
from reference_broker.record_codec import build_batch


@dataclass(frozen=True)
class Timestamp:
    """A start position by time: the first record at or after ``ms`` (epoch milliseconds),
    found with ListOffsets as Kafka's ``offsetsForTimes``; the log end if none is that new."""

    ms: int


# "tail", "earliest", an offset, a fraction of the log behind the end, or a Timestamp
Start = str | int | float | Timestamp
# A lagging consumer waits this long before it looks at the log end again.
_LAG_POLL_S = 0.01


@dataclass
class MemberResult:
    """What one fleet member did during the run."""

    name: str
    role: str  # "tail", "replay", "lagging" or "producer"
    bytes: int = 0
    # Bytes of fetched ranges that were not in the page cache when fetched (None: not measured,
    # the fleet was given no log dir).
    cold_bytes: int | None = None
    # A lagging consumer's distance behind the log end (records) after each step.
    lags: list[int] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    start_offset: int = -1
    end_offset: int = -1
    error: BaseException | None = None

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def latency(self, quantile: float) -> float:
        """A latency quantile in seconds (nearest rank), 0 when nothing was measured."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    def summary(self) -> str:
        cold = "" if self.cold_bytes is None else f"  cold {self.cold_bytes / 2**20:7.1f} MiB"
        return (
            f"{self.name:<12} {self.role:<8} {self.bytes / 2**20:9.1f} MiB "
            f"{self.mb_per_s:8.1f} MB/s  p50 {self.latency(0.5) * 1e3:7.2f} ms  "
            f"p99 {self.latency(0.99) * 1e3:7.2f} ms  offsets {self.start_offset}"
            f"..{self.end_offset}{cold}"
        )


@dataclass
class FleetResult:
    members: list[MemberResult]

    def by_role(self, role: str) -> list[MemberResult]:
        return [m for m in self.members if m.role == role]

    @property
    def producer(self) -> MemberResult | None:
        found = self.by_role("producer")
        return found[0] if found else None

    def report(self) -> str:
        return "\n".join(member.summary() for member in self.members)

    def latency(self, role: str, quantile: float) -> float:
        """A latency quantile in seconds over all members of ``role`` (nearest rank), 0 when
        none was measured."""
        pooled = MemberResult("all", role)
        pooled.latencies = [x for member in self.by_role(role) for x in member.latencies]
        return pooled.latency(quantile)

    def mean_latency(self, role: str) -> float:
        """The mean latency in seconds over all members of ``role`` (0 when none)."""
        samples = [x for member in self.by_role(role) for x in member.latencies]
        return statistics.fmean(samples) if samples else 0.0

    def median_mb_per_s(self, role: str) -> float:
        rates = [m.mb_per_s for m in self.by_role(role)]
        return statistics.median(rates) if rates else 0.0


@dataclass(frozen=True)
class _MemberSpec:
    """What a member process needs to build its member: picklable, so it can cross."""

    name: str
    role: str
    bootstrap: str
    topic: str
    partition: int
    fetch_max_bytes: int
    connection: dict[str, Any]
    plan: dict[str, Any]
    log_dir: str | None

    def __call__(self, stop: Stop) -> _FleetMember:
        return _FleetMember(self, stop)


class _FleetMember:
    """A fleet member inside its own process: steps until the deadline or the fleet's stop."""

    def __init__(self, spec: _MemberSpec, stop: Stop) -> None:
        self.spec, self.stop = spec, stop
        self.result = MemberResult(spec.name, spec.role)
        self.client = HarnessClient(spec.bootstrap, **spec.connection)
        try:
            self._step = (
                self._producer_step() if spec.role == "producer" else self._consumer_step(spec.plan)
            )
        except BaseException:
            self.client.close()
            raise

    def run(self, seconds: float) -> MemberResult:
        started = time.perf_counter()
        deadline = started + seconds
        try:
            while not self.stop.is_set() and time.perf_counter() < deadline:
                self._step()
        finally:
            self.result.seconds = time.perf_counter() - started
        return self.result

    def close(self) -> None:
        self.client.close()

    def _consumer_step(self, plan: dict[str, Any]) -> Callable[[], None]:
        spec, result, client = self.spec, self.result, self.client
        lag = plan.get("lag")  # {"records": n} or {"bytes": n} behind the end
        end = client.list_offset(spec.topic, spec.partition, -1)[0]
        per_record = 0.0  # bytes per record: turns a lag in bytes into records
        if lag is None:
            position = _resolve(client, spec.topic, spec.partition, plan["start"])
        else:
            per_record = bytes_per_record(client, spec.topic, spec.partition, end)
            earliest = client.list_offset(spec.topic, spec.partition, -2)[0]
            position = max(earliest, end - _records_behind(lag, per_record))
        until = plan.get("until")
        stop_at = None if until is None else _resolve(client, spec.topic, spec.partition, until)
        rate = plan.get("rate")  # bytes per second, for a paced replay
        cold = None
        if spec.log_dir is not None:
            cold = ColdBytes(Path(spec.log_dir) / f"{spec.topic}-{spec.partition}", position)
            result.cold_bytes = 0
        result.start_offset = result.end_offset = position
        started: float | None = None  # the pace counts from the first step, not from set-up

        def step() -> None:
            nonlocal position, end, per_record, started
            if stop_at is not None and position >= stop_at:
                time.sleep(0.05)  # done: idle until the fleet stops
                return
            if rate is not None:  # paced: never ahead of rate x time
                started = started or time.perf_counter()
                pause = started + result.bytes / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            behind = None if lag is None else _records_behind(lag, per_record)
            if behind is not None and end - position <= behind:
                time.sleep(_LAG_POLL_S)
                end = client.list_offset(spec.topic, spec.partition, -1)[0]
                result.lags.append(end - position)
                return
            resident = None if cold is None else cold.page_map()
            began = time.perf_counter()
            fetched = client.fetch(
                spec.topic,
                spec.partition,
                position,
                max_bytes=spec.fetch_max_bytes,
                max_wait_ms=100,
            )
            result.latencies.append(time.perf_counter() - began)
            result.requests += 1
            if fetched.error:
                raise KafkaError(fetched.error, f"{result.name} fetch at {position}")
            end = fetched.high_watermark
            read = 0
            for _, header in fetched.batches():
                if header.last_offset < position:
                    continue
                if stop_at is not None and position >= stop_at:
                    break
                if behind is not None and end - header.next_offset < behind:
                    break  # this batch would bring the consumer closer than its lag
                read += header.size
                position = header.next_offset
            if read == 0 and behind is not None:
                time.sleep(_LAG_POLL_S)  # the next batch would cross the lag: wait for more
            result.bytes += read
            if position > result.start_offset:
                per_record = result.bytes / (position - result.start_offset)
            result.end_offset = position
            if cold is not None and resident is not None:
                result.cold_bytes = (result.cold_bytes or 0) + cold.advance(resident, read)
            if behind is not None:
                result.lags.append(end - position)

        return step

    def _producer_step(self) -> Callable[[], None]:
        spec, result, client, plan = self.spec, self.result, self.client, self.spec.plan
        per_batch = max(1, plan["batch"] // (plan["record"] + 8))
        batch = build_batch([(None, b"p" * plan["record"], [])] * per_batch)
        interval = len(batch) / (plan["rate"] * 1e6)
        next_send = time.perf_counter()

        def step() -> None:
            nonlocal next_send
            pause = next_send - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            began = time.perf_counter()
            offset = client.produce(spec.topic, spec.partition, batch, acks=1)
            result.latencies.append(time.perf_counter() - began)
            if result.start_offset < 0:
                result.start_offset = offset
            result.end_offset = offset + per_batch
            result.bytes += len(batch)
            result.requests += 1
            next_send = max(next_send + interval, began)

        return step


def _records_behind(lag: dict[str, int], per_record: float) -> int:
    """A lag in records; a lag in bytes becomes records at the bytes per record seen."""
    if "records" in lag:
        return lag["records"]
    return int(lag["bytes"] / per_record) if per_record > 0 else 0


def bytes_per_record(client: HarnessClient, topic: str, partition: int, end: int) -> float:
    """Bytes per record of the newest batch (0 for an empty log): a fetch of one byte at the
    last offset returns that whole batch (KIP-74)."""
    if end <= 0:
        return 0.0
    fetched = client.fetch(topic, partition, end - 1, max_bytes=1)
    for _, header in fetched.batches():
        return header.size / header.record_count
    return 0.0


def _resolve(client: HarnessClient, topic: str, partition: int, start: Start) -> int:
    """The offset a start (or until) position names, against the log as it is now."""
    earliest = client.list_offset(topic, partition, -2)[0]
    latest = client.list_offset(topic, partition, -1)[0]
    if isinstance(start, Timestamp):
        found = client.list_offset(topic, partition, start.ms)[0]
        return latest if found < 0 else found
    if start == "tail":
        return latest
    if start == "earliest":
        return earliest
    if isinstance(start, float):
        if not 0 <= start <= 1:
            raise ValueError(f"a fractional start is in [0, 1], got {start}")
        return latest - int((latest - earliest) * start)
    if isinstance(start, int) and earliest <= start <= latest:
        return start
    raise ValueError(
        f"start must be 'tail', 'earliest', a Timestamp, a fraction or an offset in "
        f"[{earliest}, {latest}], got {start!r}"
    )


class Fleet:
    """A producer and consumers against one topic-partition, run together for a while.

    >>> fleet = Fleet(broker.bootstrap, "events")
    >>> fleet.producer(rate_mb_s=20).tail(2).replay(1, start="earliest")
    >>> result = fleet.run(seconds=5)
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        partition: int = 0,
        fetch_max_bytes: int = 1 << 20,
        log_dir: str | os.PathLike[str] | None = None,
        **connection: Any,
    ) -> None:
        self.bootstrap, self.topic, self.partition = bootstrap, topic, partition
        self.fetch_max_bytes = fetch_max_bytes
        # The broker's log dir, when it is on this machine: consumers then count cold bytes.
        self.log_dir = None if log_dir is None else str(log_dir)
        self.connection = connection
        self._plans: list[tuple[str, str, dict[str, Any]]] = []

    def producer(
        self, *, rate_mb_s: float, batch_bytes: int = 64 * 1024, record_bytes: int = 1024
    ) -> Fleet:
        """Append at ``rate_mb_s`` (paced per batch) and record each acknowledgement's latency:
        the broker's responsiveness while the consumers run."""
        self._plans.append(
            (
                "producer",
                "producer",
                {"rate": rate_mb_s, "batch": batch_bytes, "record": record_bytes},
            )
        )
        return self

    def tail(self, count: int = 1) -> Fleet:
        """Consumers that start at the log end and keep up with it."""
        for _ in range(count):
            self._plans.append(
                (f"tail-{self._count('tail')}", "tail", {"start": "tail", "until": None})
            )
        return self

    def replay(
        self,
        count: int = 1,
        *,
        start: Start = "earliest",
        until: Start | None = None,
        rate_mb_s: float | None = None,
    ) -> Fleet:
        """Consumers that start far behind: ``"earliest"``, an offset, a ``Timestamp``, or a
        float fraction of the log behind its end (0.5 = half way back). With ``until`` (same
        forms, resolved at the start of the run) they stop reading there, so a replay stays a
        replay of history instead of catching up and joining the tail. With ``rate_mb_s`` each
        reads no faster than that: a throttled catch-up."""
        if rate_mb_s is not None and rate_mb_s <= 0:
            raise ValueError(f"rate_mb_s must be positive, got {rate_mb_s}")
        rate = None if rate_mb_s is None else rate_mb_s * 1e6
        for _ in range(count):
            self._plans.append(
                (
                    f"replay-{self._count('replay')}",
                    "replay",
                    {"start": start, "until": until, "rate": rate},
                )
            )
        return self

    def lagging(
        self,
        count: int = 1,
        *,
        records: int | None = None,
        bytes: int | None = None,
        segments: float | None = None,
        segment_bytes: int | None = None,
    ) -> Fleet:
        """Consumers that stay a fixed distance behind the log end: ``records``, ``bytes``, or
        ``segments`` (of ``segment_bytes`` each: a consumer kept off the active segment reads
        sealed ones). They read whole batches while they are further behind, and wait while
        they are not; ``MemberResult.lags`` has the distance (records) after each step. A lag
        in bytes is kept in records at the bytes per record seen (from the newest batch at the
        start, then from what they read)."""
        if segments is not None:
            if segment_bytes is None or segment_bytes <= 0:
                raise ValueError("a lag in segments needs segment_bytes (the broker's setting)")
            bytes = int(segments * segment_bytes)
        given = {k: v for k, v in (("records", records), ("bytes", bytes)) if v is not None}
        if len(given) != 1 or next(iter(given.values())) <= 0:
            raise ValueError(
                f"give exactly one positive lag (records=, bytes= or segments=), got {given}"
            )
        for _ in range(count):
            self._plans.append(
                (f"lagging-{self._count('lagging')}", "lagging", {"lag": given, "until": None})
            )
        return self

    def _count(self, role: str) -> int:
        return sum(1 for _, r, _ in self._plans if r == role)

    def run(self, seconds: float) -> FleetResult:
        """Run every member for ``seconds``, each in its own process; raise the first error a
        member hit (an error while members connect and find their offsets is raised as is)."""
        specs = [
            _MemberSpec(
                name,
                role,
                self.bootstrap,
                self.topic,
                self.partition,
                self.fetch_max_bytes,
                self.connection,
                plan,
                self.log_dir,
            )
            for name, role, plan in self._plans
        ]
        names = [spec.name for spec in specs]
        try:
            group = MemberGroup(specs, names=names)
        except MemberFailed as failure:
            raise (failure.__cause__ or failure) from None
        with group:
            try:
                return FleetResult(group.call("run", seconds, timeout=seconds + 60))
            except MemberFailed as failure:
                failed = next((n for n in names if f"{n} failed" in str(failure)), "?")
                raise RuntimeError(
                    f"fleet member {failed} failed:\n{failure}"
                ) from failure.__cause__
