"""Consumer groups with unmodified clients: assignment, committed offsets, failover, lag.

What a group promises its application, checked end to end with each of confluent-kafka,
kafka-python and aiokafka against a broker process:

- members of one group split a topic's partitions between them, and together read every record
  exactly once while nobody fails;
- a member that leaves hands its partitions over at once, and its successor carries on from the
  committed offsets rather than from the start;
- committed offsets outlive the consumers, a clean broker restart and a SIGKILL (they are in the
  ``__consumer_offsets`` log, replayed at start-up);
- a member that stops without leaving is evicted once its session times out;
- the lag view (CLI and metrics) reports how far each group trails each partition.

Records are produced with the harness client, one batch per partition per round, so that offsets
and batch sizes are known exactly; the clients' own produce paths are tested elsewhere.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_logbench.brokers import die_with_parent
from pytest_logbench.client import HarnessClient
from reference_broker.record_codec import build_batch
from tests.kafka_clients import CLIENTS, Consumed
from tests.kafka_group_clients import (
    SESSION_TIMEOUT_MS,
    GroupConsumer,
    committed_offsets,
    wait_until,
)

pytestmark = pytest.mark.conformance

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4
ALL = frozenset(range(PARTITIONS))
PER_ROUND = 25
"""Records per partition in each produce round."""

HANDOVER_SESSION_MS = 30_000
"""Session timeout of the members that hand over by leaving: far longer than the handover may
take (``HANDOVER_WAIT_S``), so only a LeaveGroup the broker acted on, not an expired session,
can have moved the partitions."""
HANDOVER_WAIT_S = 20.0

Expected = list[tuple[int, int, bytes]]
"""(partition, offset, value) of records, sorted."""


def produce_round(bootstrap: str, topic: str, label: str, count: int = PER_ROUND) -> Expected:
    """Append ``count`` records to every partition, one batch each; what was appended where.
    Values name their round, so a record read twice or from the wrong round is told apart."""
    expected = []
    with HarnessClient(bootstrap) as harness:
        for partition in range(PARTITIONS):
            values = [f"{label}/p{partition}/{i}".encode() for i in range(count)]
            base = harness.produce(topic, partition, build_batch([(None, v, []) for v in values]))
            expected += [(partition, base + i, v) for i, v in enumerate(values)]
    return sorted(expected)


def seen(records: list[Consumed]) -> Expected:
    """What a test compares with ``produce_round``: sorted, so duplicates stay visible."""
    return sorted((r.partition, r.offset, r.record[1]) for r in records)


def log_ends(expected: Expected) -> dict[int, int]:
    return {p: max(o for q, o, _ in expected if q == p) + 1 for p in range(PARTITIONS)}


def consume_all(members: list[GroupConsumer], expected: Expected, before: int = 0) -> None:
    """Wait until ``members`` have consumed ``len(expected)`` records beyond ``before``."""
    wait_until(
        lambda: sum(len(m.records()) for m in members) >= before + len(expected),
        f"{len(expected)} records by {members}",
    )


def leave_requests(broker) -> float:
    return broker.metric("logbench_requests_total", api="LEAVE_GROUP")


@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
def test_group_splits_hands_over_and_resumes_from_commits(broker, client):
    """The life of a group's offsets: split, exactly-once consumption without failures, a
    handover by LeaveGroup, then newcomers resuming from the commits (and not from the start,
    as ``auto.offset.reset=earliest`` would make them if the broker forgot) after a plain
    reconnect, a clean restart and a SIGKILL."""
    topic, group = f"orders-{client}", f"billing-{client}"
    with HarnessClient(broker.bootstrap) as harness:
        harness.create_topic(topic, PARTITIONS)

    first, second = (
        GroupConsumer(
            client,
            broker.bootstrap,
            group,
            topic,
            session_timeout_ms=HANDOVER_SESSION_MS,
            rebalance_timeout_ms=HANDOVER_SESSION_MS,
        )
        for _ in range(2)
    )
    try:
        # The group settles before records exist, so no record is read by a member that then
        # loses its partition (that re-delivery is allowed by at-least-once, but not tested).
        wait_until(
            lambda: (
                len(first.assignment) == len(second.assignment) == 2
                and first.assignment | second.assignment == ALL
            ),
            "two members splitting four partitions",
        )
        assert not first.assignment & second.assignment

        round1 = produce_round(broker.bootstrap, topic, "round1")
        consume_all([first, second], round1)
        assert seen(first.records() + second.records()) == round1
        for member in (first, second):
            assert {r.partition for r in member.records()} == member.assignment
            assert member.commit() == {p: PER_ROUND for p in member.assignment}
        assert committed_offsets(broker.bootstrap, group, topic, PARTITIONS) == log_ends(round1)

        leaves = leave_requests(broker)
        first.close()
        assert leave_requests(broker) == leaves + 1, "closing did not send LeaveGroup"
        wait_until(
            lambda: second.assignment == ALL, "the survivor to take all partitions", HANDOVER_WAIT_S
        )

        # The survivor starts the partitions it took over at their committed offsets, so it
        # reads the new records only, not the first member's again.
        before = len(second.records())
        round2 = produce_round(broker.bootstrap, topic, "round2")
        consume_all([second], round2, before)
        assert seen(second.records()[before:]) == round2
        assert second.commit() == log_ends(round2)
    finally:
        first.close()
        second.close()

    def kill_and_start() -> None:
        broker.kill()
        broker.start()

    ends = log_ends(round2)
    for label, disruption in (
        ("resume", None),
        ("restart", broker.restart),
        ("kill", kill_and_start),
    ):
        if disruption is not None:
            disruption()
        assert committed_offsets(broker.bootstrap, group, topic, PARTITIONS) == ends, label
        expected = produce_round(broker.bootstrap, topic, label)
        with GroupConsumer(client, broker.bootstrap, group, topic) as newcomer:
            consume_all([newcomer], expected)
            assert newcomer.assignment == ALL
            assert seen(newcomer.records()) == expected, label
            ends = log_ends(expected)
            assert newcomer.commit() == ends


def read_assignment(
    process: subprocess.Popen[str], stderr: Path, timeout: float = 60
) -> frozenset[int]:
    """The next assignment a ``tests.kafka_group_clients member`` process reports."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line:
        tail = "\n".join(stderr.read_text(errors="replace").splitlines()[-20:])
        raise AssertionError(f"member process reported nothing (exit {process.poll()}):\n{tail}")
    return frozenset(json.loads(line)["assignment"])


@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
def test_member_that_stops_heartbeating_is_evicted(broker, client, tmp_path):
    """A member frozen by SIGSTOP keeps its connections open but sends nothing: only the
    session timeout can remove it (a LeaveGroup or a closed socket cannot be what did). Its
    partitions must then move to the member still alive, which reads what arrives there."""
    topic, group = f"events-{client}", f"audit-{client}"
    with HarnessClient(broker.bootstrap) as harness:
        harness.create_topic(topic, PARTITIONS)
    stderr = tmp_path / "member.stderr"
    with stderr.open("w") as errors:
        frozen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.kafka_group_clients",
                "member",
                client,
                broker.bootstrap,
                group,
                topic,
                str(SESSION_TIMEOUT_MS),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            preexec_fn=die_with_parent,  # the member loops forever: never outlive pytest
        )
    try:
        while read_assignment(frozen, stderr) != ALL:
            pass
        with GroupConsumer(client, broker.bootstrap, group, topic) as survivor:
            while len(theirs := read_assignment(frozen, stderr)) != 2:
                pass
            wait_until(lambda: survivor.assignment == ALL - theirs, "the group to split")

            frozen.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            wait_until(lambda: survivor.assignment == ALL, "the silent member's eviction")
            assert frozen.poll() is None, "the silent member exited instead of hanging"
            assert leave_requests(broker) == 0
            # Printed on failure only: how long eviction took, against the session timeout.
            took = time.monotonic() - stopped_at

            records = produce_round(broker.bootstrap, topic, "after-eviction")
            consume_all([survivor], records)
            assert seen(survivor.records()) == records, f"evicted after {took:.1f}s"
    finally:
        frozen.kill()  # SIGKILL ends a stopped process too
        frozen.wait()


def lag_rows(broker) -> list[dict[str, object]]:
    """``python -m reference_broker groups --metrics URL --json``, as an operator runs it."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reference_broker",
            "groups",
            "--metrics",
            broker.metrics_url,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    return json.loads(done.stdout)


def test_consumer_lag_view(broker):
    """Lag = log end - committed offset in records, and in bytes from the batch holding the
    committed offset to the end: what a catching-up consumer makes the broker read. Both the
    CLI and the metrics show it live, per group, topic and partition."""
    topic, group = "clicks", "dashboard"
    batches: dict[int, list[bytes]] = {0: [], 1: []}
    with HarnessClient(broker.bootstrap) as harness:
        harness.create_topic(topic, 2)
        for partition, count in ((0, 10), (1, 5)):
            for b in range(count):  # batches of 10 records: offsets 10*b .. 10*b+9
                batch = build_batch([(None, f"{b}-{i}".encode() * 20, []) for i in range(10)])
                harness.produce(topic, partition, batch)
                batches[partition].append(batch)

    with GroupConsumer("confluent", broker.bootstrap, group, topic) as member:
        wait_until(lambda: len(member.records()) == 150, "150 records")
        member.commit({0: 45, 1: 50})  # partition 0 part-way into its fifth batch

        behind = sum(len(b) for b in batches[0][4:])
        expected = [
            {
                "group": group,
                "topic": topic,
                "partition": 0,
                "lag_records": 55,
                "lag_bytes": behind,
            },
            {"group": group, "topic": topic, "partition": 1, "lag_records": 0, "lag_bytes": 0},
        ]
        assert lag_rows(broker) == expected
        for row in expected:
            labels = {"group": group, "topic": topic, "partition": str(row["partition"])}
            records = broker.metric("logbench_consumer_group_lag_records", **labels)
            lag_bytes = broker.metric("logbench_consumer_group_lag_bytes", **labels)
            assert (records, lag_bytes) == (row["lag_records"], row["lag_bytes"])

        member.commit({0: 100})
        assert [(r["lag_records"], r["lag_bytes"]) for r in lag_rows(broker)] == [(0, 0), (0, 0)]

        # Lag grows with the log, without any commit.
        with HarnessClient(broker.bootstrap) as harness:
            extra = build_batch([(None, b"late", [])] * 7)
            harness.produce(topic, 1, extra)
        assert [(r["lag_records"], r["lag_bytes"]) for r in lag_rows(broker)] == [
            (0, 0),
            (7, len(extra)),
        ]

    table = subprocess.run(
        [sys.executable, "-m", "reference_broker", "groups", "--metrics", broker.metrics_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    ).stdout.splitlines()
    assert table[0].split() == ["GROUP", "TOPIC", "PART", "LAG", "RECORDS", "LAG", "BYTES"]
    assert [line.split() for line in table[1:]] == [
        [group, topic, "0", "0", "0"],
        [group, topic, "1", "7", str(len(extra))],
    ]
