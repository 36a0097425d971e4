"""Lagging-consumer generators: fleets of tail readers, replayers and a steady producer.

The seed's design consequence — "a fleet reading the tail is cheap; a fleet replaying history
competes for page cache and IO with everyone else" — is an experiment with three parts: a
producer appending at a steady rate (whose acknowledgement latency shows when the broker is
busy elsewhere), consumers that keep up with the tail, and consumers that replay from far
behind. ``Fleet`` runs all three at once, each member in a process of its own (threads of one
interpreter would take turns at the GIL and measure that instead of the broker), and reports
each member's throughput and latencies, so a test can compare a tail-only fleet with one that
also replays.

The broker's own account of the same window (tail vs history bytes) is in its metrics.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_logbench.client import HarnessClient, KafkaError
from pytest_logbench.members import MemberFailed, MemberGroup, Stop
from reference_broker.record_codec import build_batch

Start = str | int | float  # "tail", "earliest", an offset, or a fraction of the log behind the end


@dataclass
class MemberResult:
    """What one fleet member did during the run."""

    name: str
    role: str  # "tail", "replay" or "producer"
    bytes: int = 0
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
        return (
            f"{self.name:<12} {self.role:<8} {self.bytes / 2**20:9.1f} MiB "
            f"{self.mb_per_s:8.1f} MB/s  p50 {self.latency(0.5) * 1e3:7.2f} ms  "
            f"p99 {self.latency(0.99) * 1e3:7.2f} ms  offsets {self.start_offset}"
            f"..{self.end_offset}"
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
                self._producer_step()
                if spec.role == "producer"
                else self._consumer_step(spec.plan["start"], spec.plan["until"])
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

    def _consumer_step(self, start: Start, until: Start | None) -> Callable[[], None]:
        spec, result, client = self.spec, self.result, self.client
        position = _resolve(client, spec.topic, spec.partition, start)
        stop_at = None if until is None else _resolve(client, spec.topic, spec.partition, until)
        result.start_offset = result.end_offset = position

        def step() -> None:
            nonlocal position
            if stop_at is not None and position >= stop_at:
                time.sleep(0.05)  # done: idle until the fleet stops
                return
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
            for _, header in fetched.batches():
                if header.last_offset >= position and (stop_at is None or position < stop_at):
                    result.bytes += header.size
                    position = header.next_offset
            result.end_offset = position

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


def _resolve(client: HarnessClient, topic: str, partition: int, start: Start) -> int:
    """The offset a start (or until) position names, against the log as it is now."""
    earliest = client.list_offset(topic, partition, -2)[0]
    latest = client.list_offset(topic, partition, -1)[0]
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
        f"start must be 'tail', 'earliest', a fraction or an offset in "
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
        **connection: Any,
    ) -> None:
        self.bootstrap, self.topic, self.partition = bootstrap, topic, partition
        self.fetch_max_bytes = fetch_max_bytes
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
        self, count: int = 1, *, start: Start = "earliest", until: Start | None = None
    ) -> Fleet:
        """Consumers that start far behind: ``"earliest"``, an offset, or a float fraction of
        the log behind its end (0.5 = half way back). With ``until`` (same forms, resolved at
        the start of the run) they stop reading there, so a replay stays a replay of history
        instead of catching up and joining the tail."""
        for _ in range(count):
            self._plans.append(
                (f"replay-{self._count('replay')}", "replay", {"start": start, "until": until})
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
