"""Crash recovery: SIGKILL at random points of a produce stream, damage the active segment's
tail while the broker is down, restart, and check what the recovered log holds.

What each fsync policy guarantees for an acknowledged produce:

- Process kill (SIGKILL, OOM killer, a bug), any policy: nothing acknowledged is lost. The
  appends are in the page cache, which belongs to the kernel and outlives the process; only
  an in-flight request (read, maybe appended, not answered) may or may not be in the log.
- Power loss or OS crash, ``fsync=never`` (Kafka's default, replication being its defence):
  acknowledged batches not yet written back by the kernel can be lost, and the tail can be torn
  anywhere after the last write-back: recovery keeps the longest valid prefix.
- Power loss, ``fsync=interval``: as ``never``, bounded to what was appended since the last
  sync (at most ``fsync_interval_ms`` ago).
- Power loss, ``fsync=always``: every acknowledged batch was fdatasync'ed before its
  acknowledgement, so a torn write can only hit unacknowledged bytes; recovery keeps all
  acknowledged batches.

A test cannot pull the plug, so it simulates what a power loss leaves behind: the damage is
confined to the bytes after the last acknowledged batch for ``always``, and may hit anywhere
in the active segment for ``never``. Either way the recovered log must be a prefix of what was
sent, hold every batch that lies wholly before the first damaged byte, and take the next
produce at its end offset.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given

from pytest_logbench.brokers import ExternalBroker
from pytest_logbench.client import HarnessClient
from pytest_logbench.log_model import fetch_batches
from pytest_logbench.strategies import (
    BatchSpec,
    Crash,
    CrashRound,
    crash_plans,
    examples,
    shrink_timeout,
)
from reference_broker.records import Record, iter_batches

pytestmark = [pytest.mark.slow, pytest.mark.logbench_local, shrink_timeout()]

SEGMENT_BYTES = 4096  # a few batches per segment: kills land before, at and after rolls
AFTER_RECOVERY = BatchSpec((Record(0, 1_000, b"after", b"recovery", []),))


@pytest.fixture(params=["never", "always"])
def crashing_broker(request: pytest.FixtureRequest, broker_factory: Any) -> Any:
    """One broker per fsync policy, shared by all examples of the test (each uses its own
    topic): a broker per example would spend the time budget on start-ups."""
    broker = broker_factory(fsync=request.param, segment_bytes=SEGMENT_BYTES)
    if isinstance(broker, ExternalBroker):
        pytest.skip(
            "crash recovery kills the broker and edits its segment files: it needs a "
            "reference broker started by logbench, not --logbench-bootstrap"
        )
    return broker


@dataclass
class Partition:
    """What was sent to one partition: batches in order, and how many were acknowledged."""

    topic: str
    sent: list[BatchSpec] = field(default_factory=list)
    acked: int = 0

    def end(self, batches: int) -> int:
        """The offset after the first ``batches`` sent batches."""
        return sum(len(spec) for spec in self.sent[:batches])


@examples(40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=crash_plans())
def test_recovered_log_is_a_prefix_holding_every_acknowledged_batch(
    crashing_broker: Any, plan: list[CrashRound]
) -> None:
    """Rounds of acknowledged produces, each ended by a SIGKILL during a produce stream and
    maybe tail damage; after each restart the log is checked and takes the next produce."""
    broker = crashing_broker
    always = broker.options.fsync == "always"
    log = Partition(f"crash-{uuid.uuid4().hex[:12]}")
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic(log.topic, 1, {"retention.ms": "-1"})
    event(f"{len(plan)} kill point(s)")
    for round_ in plan:
        _produce(broker, log, round_.produced)
        _kill_during_stream(broker, log, round_.crash)
        survives_below = _damage(broker, log, round_.crash, always)
        broker.start()
        recovered = _check_log(broker, log, survives_below)
        event(f"recovered {recovered - log.acked:+d} batches against the acknowledged ones")
        # The log is what recovery kept. The next acknowledged produce appends after it (and,
        # with fsync=always, syncs the file up to its own end), so all of it counts as acked.
        del log.sent[recovered:]
        log.acked = recovered
        _produce(broker, log, [AFTER_RECOVERY])
    _check_log(broker, log, log.end(log.acked))


def _produce(broker: Any, log: Partition, specs: list[BatchSpec]) -> None:
    """Produce ``specs`` one by one; each must get the next offset."""
    with HarnessClient(broker.bootstrap) as client:
        for spec in specs:
            assert client.produce(log.topic, 0, spec.encode()) == log.end(log.acked)
            log.sent.append(spec)
            log.acked += 1


def _kill_during_stream(broker: Any, log: Partition, crash: Crash) -> None:
    """Produce ``crash.stream`` from a thread, SIGKILL the broker after ``crash.pause_us``;
    the batches whose produce returned are acknowledged, the next one may be in the log."""
    outcome: list[int] = []

    def stream() -> None:
        try:
            with HarnessClient(broker.bootstrap) as client:
                for spec in crash.stream:
                    log.sent.append(spec)
                    outcome.append(client.produce(log.topic, 0, spec.encode()))
        except OSError:  # the broker died: ConnectionError, or a reset while sending
            return

    producer = threading.Thread(target=stream, name="produce-stream")
    producer.start()
    time.sleep(crash.pause_us / 1e6)
    broker.kill()
    producer.join()
    for base in outcome:
        assert base == log.end(log.acked), f"base offset {base}, expected {log.end(log.acked)}"
        log.acked += 1
    event(f"killed with {len(log.sent) - log.acked} request(s) unanswered")


def _damage(broker: Any, log: Partition, crash: Crash, always: bool) -> int:
    """Damage the active segment as ``crash.damage`` says; return the offset of the first
    batch that may be lost: everything below it must survive recovery."""
    path = broker.segment_files(log.topic, 0)[-1]
    base = int(path.stem)
    layout = _batch_ends(path, base)  # (end position, next offset) of each whole batch
    acked_end = log.end(log.acked)
    if crash.damage is None:  # a process kill: the page cache keeps every acknowledged byte
        return max([acked_end, *(offset for _, offset in layout)])
    # fsync=always: a power loss can only tear what was never acknowledged.
    lowest = max((end for end, offset in layout if offset <= acked_end), default=0)
    next_offset = layout[-1][1] if layout else base
    changed = crash.damage.apply(path, lowest if always else 0, next_offset)
    event(f"damage: {crash.damage.kind}")
    intact = max((offset for end, offset in layout if end <= changed), default=base)
    return max(intact, acked_end) if always else intact


def _batch_ends(path: Path, base: int) -> list[tuple[int, int]]:
    data = path.read_bytes()
    ends = []
    for position, header in iter_batches(data):
        assert header.base_offset == (ends[-1][1] if ends else base)
        ends.append((position + header.size, header.next_offset))
    return ends


def _check_log(broker: Any, log: Partition, survives_below: int) -> int:
    """Check that the log is a prefix of what was sent reaching at least ``survives_below``;
    return its batch count."""
    with HarnessClient(broker.bootstrap) as client:
        fetched = [
            batch for result, batches in fetch_batches(client, log.topic, 0, 0) for batch in batches
        ]
        end, _ = client.list_offset(log.topic, 0, -1)
        recovered = len(fetched)
        assert recovered <= len(log.sent), f"{recovered} batches recovered, {len(log.sent)} sent"
        for i, (header, records) in enumerate(fetched):
            assert header.base_offset == log.end(i), f"batch {i} at {header.base_offset}"
            assert records == log.sent[i].at(log.end(i)), f"batch {i} differs from the sent one"
        assert end == log.end(recovered), f"log end {end}, the batches end at {log.end(recovered)}"
        assert end >= survives_below, (
            f"recovery lost intact batches: the log ends at {end}, every batch below "
            f"{survives_below} was whole and undamaged (acknowledged: up to {log.end(log.acked)})"
        )
        return recovered
