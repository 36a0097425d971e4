"""A Hypothesis state machine of log semantics, to run against the reference broker or any
Kafka cluster.

Each example creates a fresh topic on a broker shared by ``examples_per_broker`` examples
(starting a broker per example would spend the CI budget on start-ups; sharing one for a whole
run would make every restart slower, since a broker opens all its partitions at start-up)
and drives it with produces, fetches from any offset, segment-sized batches, ListOffsets,
waits for retention and restarts, checking after every step what a Kafka log promises:

- offsets are dense and strictly increasing per partition: a produce gets the log end offset
  as its base offset, and the next one starts right after it;
- a produce request carries one batch per partition: one with more is refused whole
  (INVALID_RECORD), as is one too large for a segment, and the log is unchanged after it;
- a fetch from offset ``o`` returns exactly the records from ``o`` on, with the keys, values,
  headers and timestamps that were produced;
- the high watermark (one replica: the log end offset) is the next offset to be assigned;
- the log start offset only moves forward, to a batch boundary, and a fetch below it gets
  OFFSET_OUT_OF_RANGE, as does a fetch above the end;
- after a restart, clean (SIGTERM) or not (SIGKILL: the page cache survives a process kill,
  so under every fsync policy nothing acknowledged may be lost), every record is still there.

Against an external cluster (``--logbench-bootstrap``) the broker has no local powers: the
restart and retention rules are disabled (their preconditions are false, and an ``event``
records why) and the rest runs unchanged.

Extend it by subclassing and adding ``@rule``s that use ``produce``, ``read`` and
``offsets``; run it with ``run_log_state_machine(broker_factory, MyMachine)``.
"""

from __future__ import annotations

import contextlib
import time
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from hypothesis import HealthCheck, event
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pytest_logbench.brokers import ExternalBroker, LocalOnly
from pytest_logbench.client import HarnessClient, KafkaError
from pytest_logbench.log_model import PartitionModel, fetch_batches
from pytest_logbench.strategies import BatchSpec, batch_of_size, batches, examples, timestamps
from reference_broker.errors import ErrorCode

LOG_MACHINE_CI_EXAMPLES = 60
"""Examples per CI run (each up to the profile's ``stateful_step_count`` steps)."""

REFUSALS = frozenset({ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.RECORD_LIST_TOO_LARGE})
"""Errors a produce may legitimately get for its size; the log must be unchanged after one."""

PATIENCE_S = 15.0
"""How long to wait for something the broker must eventually do (a new topic's leaders, a
retention pass). A liveness bound, not a performance one: it only ends a wait that would
otherwise never end."""


class LogStateMachine(RuleBasedStateMachine):
    """Log semantics, checked after every step against a broker (see the module docstring).

    Subclasses may override ``topic_configs`` (the configs its topic is created with: 1 KiB
    segments roll every few produces, and retention deletes them within a step or two, so both
    happen in short examples), ``broker_options`` (what ``broker_factory`` is called with),
    ``examples_per_broker``, ``partitions`` per topic and ``max_restarts`` per example (a
    restart costs a few hundred milliseconds). Helpers for new rules: ``produce`` (checks the
    base offset), ``read`` (checks every record of a fetch from an offset to the end),
    ``offsets`` (checks ListOffsets earliest/latest), ``verify_all``; the model of partition
    ``p`` is ``self.logs[p]``, the broker ``self.broker``.

    The segment and retention sizes are topic configs, not broker settings, so the machine
    runs unchanged on a real Kafka: Kafka 4.x refuses ``segment.bytes`` below 1 MiB from users
    (INVALID_CONFIG) and takes smaller sizes as its test-only ``internal.segment.bytes``.
    """

    topic_configs: ClassVar[dict[str, str]] = {
        "segment.bytes": "1024",
        "retention.bytes": "3072",
        # timestamps are drawn from years back; only retention.bytes deletes
        "retention.ms": "-1",
    }
    broker_options: ClassVar[dict[str, Any]] = {"retention_check_interval_ms": 20}
    examples_per_broker: ClassVar[int] = 20
    partitions: ClassVar[int] = 2
    max_restarts: ClassVar[int] = 1
    # How long Hypothesis may shrink a failure: every example it tries drives a broker, so
    # its own bound (five minutes) would hold a CI job that long before the report.
    shrink_seconds: ClassVar[float] = 45.0
    brokers: ClassVar[BrokerSupply | None] = None  # bound by run_log_state_machine

    def __init__(self) -> None:
        super().__init__()
        if self.brokers is None:
            raise RuntimeError(
                "run the machine with run_log_state_machine(broker_factory, machine)"
            )
        self.broker = self.brokers.next()
        self.local = not isinstance(self.broker, ExternalBroker)
        segment = self.topic_configs.get("segment.bytes")
        self.segment_bytes: int | None = int(segment) if segment is not None else None
        retention = int(self.topic_configs.get("retention.bytes", -1))
        # An external cluster checks retention when its own interval says (5 min by default).
        self.retention_bytes = retention if retention >= 0 and self.local else None
        if not self.local:
            event(
                "restart and retention rules off: the external cluster at "
                f"{self.broker.bootstrap} cannot be restarted or configured by logbench"
            )
        self.topic = f"logbench-log-{uuid.uuid4().hex[:12]}"
        self.client = HarnessClient(self.broker.bootstrap)
        self._create_topic()
        self.logs = [PartitionModel() for _ in range(self.partitions)]
        self.restarts = 0  # create_topic returned once every partition answers as leader

    def _create_topic(self) -> None:
        try:
            self.client.create_topic(self.topic, self.partitions, self.topic_configs)
        except KafkaError as exc:
            small = self.segment_bytes is not None and self.segment_bytes < 1 << 20
            if exc.code != ErrorCode.INVALID_CONFIG or not small:
                raise
            configs = dict(self.topic_configs)
            configs["internal.segment.bytes"] = configs.pop("segment.bytes")
            self.client.create_topic(self.topic, self.partitions, configs)

    def teardown(self) -> None:
        self.client.close()

    # --- helpers for rules -------------------------------------------------------------------

    def produce(self, partition: int, specs: list[BatchSpec]) -> int | None:
        """Produce ``specs`` as one request; return the base offset, or None if the broker
        refused the request (then the log must not have changed): for its size, or for
        carrying more than one batch (Kafka takes exactly one per partition and request)."""
        log = self.logs[partition]
        encoded = [spec.encode() for spec in specs]
        size = sum(map(len, encoded))
        try:
            base = self.client.produce(self.topic, partition, b"".join(encoded))
        except KafkaError as exc:
            if len(specs) > 1:
                assert exc.code == ErrorCode.INVALID_RECORD, f"{len(specs)} batches: {exc}"
                return None
            assert exc.code in REFUSALS, f"produce of {size} bytes: {exc}"
            if self.segment_bytes is not None:
                assert size > self.segment_bytes, f"{size} bytes fit a segment, yet {exc}"
            return None
        assert len(specs) == 1, (
            f"a produce of {len(specs)} batches in one request was accepted (Kafka answers "
            "INVALID_RECORD)"
        )
        if self.segment_bytes is not None:
            assert size <= self.segment_bytes, (
                f"a {size}-byte produce was accepted though segment.bytes is "
                f"{self.segment_bytes} (Kafka answers RECORD_LIST_TOO_LARGE)"
            )
        assert base == log.end, f"produce got base offset {base}, the log end is {log.end}"
        log.append(specs[0], size)
        return base

    def read(self, partition: int, offset: int, max_bytes: int = 1 << 20) -> None:
        """Fetch from ``offset`` to the end, ``max_bytes`` at a time, checking each record.

        Out of range (below the log start, above the end) it must get OFFSET_OUT_OF_RANGE.
        In range it must get exactly the model's records from ``offset`` on, unless retention
        moves the log start past the fetch position meanwhile (which ``offsets`` verifies).
        """
        log = self.logs[partition]
        if not log.log_start <= offset <= log.end:
            error = self.client.fetch(self.topic, partition, offset, max_bytes=max_bytes).error
            assert error == ErrorCode.OFFSET_OUT_OF_RANGE, (
                f"fetch at {offset} outside [{log.log_start}, {log.end}] got {error.name}"
            )
            return
        position, got = offset, []
        for result, fetched in fetch_batches(
            self.client, self.topic, partition, offset, max_bytes=max_bytes
        ):
            if result.error == ErrorCode.OFFSET_OUT_OF_RANGE:
                start, _ = self.offsets(partition)
                assert start > position, (
                    f"fetch at {position} got OFFSET_OUT_OF_RANGE inside [{start}, {log.end}]"
                )
                return  # retention moved the log start past the position: nothing to compare
            assert result.error == ErrorCode.NONE, f"fetch at {position}: {result.error.name}"
            self._observe(partition, result.log_start_offset, result.high_watermark)
            for header, records in fetched:
                assert header.base_offset in log.boundaries(), (
                    f"a batch starts at {header.base_offset}, no produced batch did"
                )
                for record in records:
                    assert record == log.record(record.offset), (
                        f"offset {record.offset}: fetched {record}, "
                        f"produced {log.record(record.offset)}"
                    )
                    if record.offset >= position:
                        assert record.offset == position, (
                            f"fetch from {position} skipped to offset {record.offset}"
                        )
                        got.append(record)
                        position += 1
        assert got == log.records_from(offset), (
            f"fetch from {offset} (max_bytes {max_bytes}) stopped at {position}, "
            f"the log ends at {log.end}"
        )

    def offsets(self, partition: int) -> tuple[int, int]:
        """ListOffsets earliest and latest, checked against the model; returns them."""
        start, _ = self.client.list_offset(self.topic, partition, -2)
        end, _ = self.client.list_offset(self.topic, partition, -1)
        self._observe(partition, start, end)
        return start, end

    def _observe(self, partition: int, log_start: int, high_watermark: int) -> None:
        log = self.logs[partition]
        assert high_watermark == log.end, (
            f"high watermark {high_watermark}, but the next offset is {log.end}"
        )
        assert log_start >= log.log_start, (
            f"log start offset moved back from {log.log_start} to {log_start}"
        )
        assert log_start in log.boundaries(), (
            f"log start offset {log_start} is inside a batch (boundaries "
            f"{sorted(log.boundaries())})"
        )
        log.log_start = log_start

    def verify_all(self) -> None:
        """Read every partition from its log start to its end."""
        for partition, log in enumerate(self.logs):
            self.read(partition, log.log_start)

    # --- rules -------------------------------------------------------------------------------

    @rule(data=st.data(), specs=st.lists(batches(), min_size=1, max_size=3))
    def produce_batches(self, data: st.DataObject, specs: list[BatchSpec]) -> None:
        partition = data.draw(st.integers(0, self.partitions - 1), label="partition")
        for spec in specs:
            self.produce(partition, [spec])

    @rule(data=st.data(), specs=st.lists(batches(max_records=2), min_size=2, max_size=3))
    def produce_batches_in_one_request(self, data: st.DataObject, specs: list[BatchSpec]) -> None:
        """Two or more batches in one request are refused whole: nothing of them is stored."""
        partition = data.draw(st.integers(0, self.partitions - 1), label="partition")
        self.produce(partition, specs)

    @precondition(lambda self: self.segment_bytes is not None)
    @rule(data=st.data(), slack=st.integers(-80, 8))
    def produce_segment_sized(self, data: st.DataObject, slack: int) -> None:
        """A batch of segment.bytes + ``slack``: it fills a segment to the byte (so the next
        produce rolls), or is a few bytes too large for any segment."""
        assert self.segment_bytes is not None
        partition = data.draw(st.integers(0, self.partitions - 1), label="partition")
        self.produce(partition, [batch_of_size(self.segment_bytes + slack)])

    @rule(data=st.data())
    def fetch(self, data: st.DataObject) -> None:
        """Fetch from any offset: below the log start, inside, at the end, past the end."""
        partition = data.draw(st.integers(0, self.partitions - 1), label="partition")
        offset = data.draw(st.integers(0, self.logs[partition].end + 2), label="offset")
        max_bytes = data.draw(st.sampled_from([1, 100, 1024, 1 << 20]), label="max_bytes")
        self.read(partition, offset, max_bytes)

    @rule(data=st.data(), timestamp=timestamps())
    def list_offset_by_time(self, data: st.DataObject, timestamp: int) -> None:
        """ListOffsets by timestamp answers between the base offset of the batch holding the
        first record at or after ``timestamp`` and that record's offset: Kafka's answer (that
        record) and a batch-granular one (its batch) both qualify, so that brokers which do
        not decode batches can run the machine too."""
        partition = data.draw(st.integers(0, self.partitions - 1), label="partition")
        log = self.logs[partition]
        start = log.log_start
        offset, found = self.client.list_offset(self.topic, partition, timestamp)
        if self.offsets(partition)[0] != start:
            return  # retention ran meanwhile: the answer may predate the new log start
        first = next(
            (
                (base, r)
                for base, spec, _ in log.batches
                if base >= start
                for r in spec.at(base)
                if r.timestamp >= timestamp
            ),
            None,
        )
        if first is None:
            assert offset == -1, f"no record at or after {timestamp}, yet offset {offset}"
            return
        batch_base, record = first
        assert batch_base <= offset <= record.offset, (
            f"timestamp {timestamp}: offset {offset}, expected one in "
            f"[{batch_base}, {record.offset}]"
        )
        assert found >= timestamp, f"timestamp {timestamp}: answered timestamp {found}"

    @precondition(
        lambda self: (
            self.local
            and self.restarts < self.max_restarts
            and any(log.end > log.log_start for log in self.logs)
        )
    )
    @rule(kill=st.booleans())
    def restart(self, kill: bool) -> None:
        """Restart the broker, cleanly or with SIGKILL, once there is something to lose, and
        read everything back.

        A SIGKILL loses no acknowledged produce under any fsync policy: the appends are in
        the page cache, which outlives the process (only a power loss or an OS crash loses
        unsynced pages; tests/test_crash_recovery.py simulates those).
        """
        self.client.close()
        self.broker.restart(kill=kill)
        self.restarts += 1
        self.client = HarnessClient(self.broker.bootstrap)
        # Kafka answers NOT_LEADER_OR_FOLLOWER for a moment after its "started" line.
        self.client.await_leaders(self.topic, range(self.partitions), PATIENCE_S)
        self.verify_all()

    @precondition(lambda self: self.retention_bytes is not None and self.segment_bytes is not None)
    @rule()
    def await_retention(self) -> None:
        """Wait for retention.bytes to apply: Kafka deletes the oldest segment while the rest
        still hold retention.bytes, so a log keeps less than retention.bytes plus one segment.
        """
        assert self.retention_bytes is not None and self.segment_bytes is not None
        bound = self.retention_bytes + self.segment_bytes
        deadline = time.monotonic() + PATIENCE_S
        for partition, log in enumerate(self.logs):
            while log.retained_bytes() >= bound:
                assert time.monotonic() < deadline, (
                    f"{self.topic}-{partition} still holds {log.retained_bytes()} bytes "
                    f"(retention.bytes {self.retention_bytes}) after {PATIENCE_S} s"
                )
                time.sleep(0.02)
                self.offsets(partition)

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def watermarks_and_log_start(self) -> None:
        """After every step: ListOffsets and an empty fetch at the end agree with the model."""
        for partition, log in enumerate(self.logs):
            self.offsets(partition)
            result = self.client.fetch(self.topic, partition, log.end)
            assert result.error == ErrorCode.NONE, f"fetch at the end: {result.error.name}"
            assert len(result.records) == 0, "a fetch at the log end returned records"
            self._observe(partition, result.log_start_offset, result.high_watermark)

    @invariant()
    def segments_start_at_batches(self) -> None:
        """Where the segment files are visible: each starts at a batch boundary, none holds
        the log start unless it starts there, and none is larger than segment.bytes.

        A segment wholly below the log start may linger for a moment: Kafka moves the log
        start first and renames the deleted segment (``.log.deleted``) a little later.
        """
        for partition, log in enumerate(self.logs):
            try:
                paths = self.broker.segment_files(self.topic, partition)
            except LocalOnly:
                return
            bases = [int(path.stem) for path in paths]
            for path, base in zip(paths, bases, strict=True):
                assert base in log.boundaries(), f"{path.name}: not a batch start"
                assert base >= log.log_start or any(base < b <= log.log_start for b in bases), (
                    f"{path.name}: holds the log start {log.log_start} but starts below it"
                )
                try:
                    size = path.stat().st_size
                except FileNotFoundError:  # retention deleted it after the listing
                    continue
                if self.segment_bytes is not None:
                    assert size <= self.segment_bytes, f"{path.name}: {size} bytes"


class BrokerSupply:
    """Hands each example a broker: a new one from ``factory(**options)`` every ``per_broker``
    examples (the previous one is stopped), the same external cluster every time."""

    def __init__(
        self, factory: Callable[..., Any], options: dict[str, Any], per_broker: int
    ) -> None:
        self.factory = factory
        self.options = options
        self.per_broker = per_broker
        self.current: Any = None
        self.served = 0

    def next(self) -> Any:
        if self.current is None or self.served >= self.per_broker:
            if self.current is not None and not isinstance(self.current, ExternalBroker):
                self.current.stop()
            self.current = self.factory(**self.options)
            self.served = 0
        self.served += 1
        return self.current


def run_log_state_machine(
    broker_factory: Callable[..., Any],
    machine: type[LogStateMachine] = LogStateMachine,
    *,
    settings: Settings | None = None,
) -> None:
    """Run ``machine`` (``LogStateMachine`` or a subclass) as a test, on brokers from
    ``broker_factory`` (the fixture: reference brokers, or the ``--logbench-bootstrap``
    cluster; any callable taking ``BrokerOptions`` fields works).

    ``settings`` default to ``LOG_MACHINE_CI_EXAMPLES`` examples scaled by the loaded profile.
    The machine is bound to its brokers in a subclass of the same name, so ``@seed`` and
    ``@reproduce_failure`` placed on ``machine`` apply, and the printed failing program reads
    ``state = <machine>()``. A failure prints its ``@reproduce_failure`` blob, and shrinking
    stops after ``machine.shrink_seconds``.
    """
    supply = BrokerSupply(broker_factory, machine.broker_options, machine.examples_per_broker)
    namespace = {
        "brokers": supply,
        "__module__": machine.__module__,
        "__qualname__": machine.__qualname__,
    }
    bound = types.new_class(machine.__name__, (machine,), exec_body=lambda ns: ns.update(namespace))
    # Without a profile (a user's project has no logbench conftest), still no deadline and no
    # too-slow health check: steps talk to a real broker and restarts take what they take.
    default = examples(
        LOG_MACHINE_CI_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,  # a CI failure is replayed locally with @reproduce_failure
    )
    with shrinking_bounded(machine.shrink_seconds):
        run_state_machine_as_test(bound, settings=settings or default)


@contextlib.contextmanager
def shrinking_bounded(seconds: float) -> Iterator[None]:
    """Let Hypothesis shrink a failure for at most ``seconds`` (it then reports the smallest
    example found so far, with a warning that it stopped shrinking).

    Hypothesis has no setting for this; its engine's ``MAX_SHRINKING_SECONDS`` (five minutes)
    is documented there as the value to monkeypatch, so it is changed for this run only.
    """
    from hypothesis.internal.conjecture import engine

    saved = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = min(saved, seconds)  # type: ignore[assignment]
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = saved
