"""The three real Kafka clients as consumer-group members, for the tests.

``GroupConsumer``: one subscribed member per instance, polled on a thread of its own (or, run as
``python -m tests.kafka_group_clients member ...``, in a process of its own, so a test can stop
it without it leaving the group).
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, NoReturn

from tests.kafka_clients import (
    TIMEOUT_S,
    Consumed,
    confluent_consumed,
    python_consumed,
)

# --- consumer groups -------------------------------------------------------------------------

SESSION_TIMEOUT_MS = 3_000
"""Short, so an evicted member costs a test seconds. The reference broker accepts it (its
``--group-min-session-timeout-ms`` defaults to 1 s); a Kafka broker would refuse it with
INVALID_SESSION_TIMEOUT unless its ``group.min.session.timeout.ms`` (6 s) were lowered."""
HEARTBEAT_INTERVAL_MS = 300
REBALANCE_TIMEOUT_MS = 15_000
"""How long a rebalance waits for members to rejoin (the clients send max.poll.interval.ms).
Kept well below the 5-minute default so a member that never rejoins fails a test, not CI."""
POLL_S = 0.1


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds.

    Group tests wait on states (an assignment, a record count), never on durations: how long a
    rebalance takes depends on the client's timers and the machine, not on the broker's logic.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


class _ConfluentMember:
    """A subscribed librdkafka consumer (range assignor, manual commits)."""

    def __init__(self, bootstrap: str, group: str, topic: str, timeouts: dict[str, int]) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                "session.timeout.ms": timeouts["session"],
                "heartbeat.interval.ms": timeouts["heartbeat"],
                "max.poll.interval.ms": timeouts["rebalance"],
                "check.crcs": True,
            }
        )
        self.consumer.subscribe([topic])

    def poll(self, timeout: float) -> list[Consumed]:
        out = []
        for m in self.consumer.consume(num_messages=1000, timeout=timeout):
            if m.error():
                raise AssertionError(f"confluent consumer error: {m.error()}")
            out.append(confluent_consumed(m))
        return out

    def assignment(self) -> frozenset[int]:
        return frozenset(tp.partition for tp in self.consumer.assignment())

    def positions(self) -> dict[int, int]:
        found = self.consumer.position(self.consumer.assignment())
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}

    def commit(self, offsets: dict[int, int]) -> None:
        from confluent_kafka import TopicPartition

        self.consumer.commit(
            offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
            asynchronous=False,
        )

    def close(self) -> None:
        self.consumer.close()


def _python_group_config(bootstrap: str, group: str, timeouts: dict[str, int]) -> dict[str, Any]:
    """What the kafka-python and aiokafka members share: manual commits from the earliest
    offset, the test's timeouts, CRCs checked."""
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": timeouts["session"],
        "heartbeat_interval_ms": timeouts["heartbeat"],
        "max_poll_interval_ms": timeouts["rebalance"],
        "check_crcs": True,
    }


class _KafkaPythonMember:
    """A subscribed kafka-python consumer (its default range assignor, manual commits)."""

    def __init__(self, bootstrap: str, group: str, topic: str, timeouts: dict[str, int]) -> None:
        from kafka import KafkaConsumer

        self.topic = topic
        self.consumer = KafkaConsumer(
            **_python_group_config(bootstrap, group, timeouts),
        )
        # Learn the topic's partitions before joining. Otherwise a leader may assign before its
        # first metadata answer (the reference broker, with no initial rebalance delay, answers
        # JoinGroup at once), assigns nothing, and rejoins when the metadata arrives; and
        # kafka-python 3.0.12 loses that rejoin's result when a poll times out during it (its
        # need_rejoin() turns False mid-join): the member stays with no partitions and no
        # heartbeats. Kafka's 3 s group.initial.rebalance.delay.ms hides this for new groups.
        if not self.consumer.partitions_for_topic(topic):
            raise AssertionError(f"kafka-python sees no partitions of {topic!r}")
        self.consumer.subscribe([topic])

    def poll(self, timeout: float) -> list[Consumed]:
        batches = self.consumer.poll(timeout_ms=int(timeout * 1000))
        return [python_consumed(m) for batch in batches.values() for m in batch]

    def assignment(self) -> frozenset[int]:
        return frozenset(tp.partition for tp in self.consumer.assignment())

    def positions(self) -> dict[int, int]:
        return {tp.partition: self.consumer.position(tp) for tp in self.consumer.assignment()}

    def commit(self, offsets: dict[int, int]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        self.consumer.commit(
            {
                TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                for p, o in offsets.items()
            }
        )

    def close(self) -> None:
        self.consumer.close()


class _AiokafkaMember:
    """A subscribed aiokafka consumer (its default round-robin assignor, manual commits).

    aiokafka heartbeats and rebalances in tasks of its event loop, so this member owns a loop
    and runs it during every call; the caller polls all the time, so the loop rarely idles.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, timeouts: dict[str, int]) -> None:
        self.topic = topic
        self.loop = asyncio.new_event_loop()
        self.consumer = self.loop.run_until_complete(self._start(bootstrap, group, topic, timeouts))

    @staticmethod
    async def _start(bootstrap: str, group: str, topic: str, timeouts: dict[str, int]) -> Any:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(  # needs a running loop to be constructed
            topic,
            rebalance_timeout_ms=timeouts["rebalance"],
            **_python_group_config(bootstrap, group, timeouts),
        )
        await consumer.start()
        return consumer

    def poll(self, timeout: float) -> list[Consumed]:
        batches = self.loop.run_until_complete(
            self.consumer.getmany(timeout_ms=int(timeout * 1000), max_records=1000)
        )
        return [python_consumed(m) for batch in batches.values() for m in batch]

    def assignment(self) -> frozenset[int]:
        return frozenset(tp.partition for tp in self.consumer.assignment())

    def positions(self) -> dict[int, int]:
        async def positions() -> dict[int, int]:
            return {
                tp.partition: await self.consumer.position(tp) for tp in self.consumer.assignment()
            }

        return self.loop.run_until_complete(positions())

    def commit(self, offsets: dict[int, int]) -> None:
        from aiokafka import TopicPartition

        self.loop.run_until_complete(
            self.consumer.commit({TopicPartition(self.topic, p): o for p, o in offsets.items()})
        )

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.consumer.stop())
        finally:
            self.loop.close()


_MEMBERS = {
    "confluent": _ConfluentMember,
    "kafka-python": _KafkaPythonMember,
    "aiokafka": _AiokafkaMember,
}


class GroupConsumer:
    """One member of consumer group ``group``, subscribed to ``topic``, with ``client``.

    The member polls on a thread of its own from construction to ``close()``, as an application
    does: clients take part in rebalances (and some heartbeat) only while polled, so two members
    driven in turn by one test thread would stall each other's rebalances. Everything the test
    asks (commit, positions) runs on that thread, because none of the clients is thread-safe.
    Each member commits explicitly; auto-commit is off so that tests decide what is committed.
    """

    def __init__(
        self,
        client: str,
        bootstrap: str,
        group: str,
        topic: str,
        *,
        session_timeout_ms: int = SESSION_TIMEOUT_MS,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
        rebalance_timeout_ms: int = REBALANCE_TIMEOUT_MS,
    ) -> None:
        self.client, self.group, self.topic = client, group, topic
        self._timeouts = {
            "session": session_timeout_ms,
            "heartbeat": heartbeat_interval_ms,
            "rebalance": rebalance_timeout_ms,
        }
        self._bootstrap = bootstrap
        self._calls: queue.SimpleQueue[tuple[Callable[[Any], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._records: list[Consumed] = []
        self._assignment: frozenset[int] = frozenset()
        self._failure: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, name=f"{client}-member-of-{group}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"<GroupConsumer {self.client} group={self.group} assignment={set(self.assignment)}>"

    def __enter__(self) -> GroupConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            member = _MEMBERS[self.client](self._bootstrap, self.group, self.topic, self._timeouts)
        except BaseException as exc:
            self._failure = exc
            return
        try:
            while not self._closing:
                while not self._calls.empty():
                    call, done = self._calls.get()
                    try:
                        done.set_result(call(member))
                    except BaseException as exc:
                        done.set_exception(exc)
                records = member.poll(POLL_S)
                with self._lock:
                    self._records += records
                    self._assignment = member.assignment()
        except BaseException as exc:
            self._failure = exc
        finally:
            while not self._calls.empty():
                self._calls.get()[1].set_exception(RuntimeError(f"{self!r} stopped polling"))
            try:
                member.close()
            except BaseException as exc:
                self._failure = self._failure or exc

    def _check(self) -> None:
        if self._failure is not None:
            raise AssertionError(f"{self.client} group member failed: {self._failure!r}") from (
                self._failure
            )

    def _call(self, call: Callable[[Any], Any]) -> Any:
        """Run ``call(member)`` on the polling thread and return its result."""
        self._check()
        done: Future[Any] = Future()
        self._calls.put((call, done))
        return done.result(TIMEOUT_S)

    @property
    def assignment(self) -> frozenset[int]:
        """The partitions of ``topic`` assigned to this member after its latest poll."""
        self._check()
        with self._lock:
            return self._assignment

    def records(self) -> list[Consumed]:
        """Every record consumed so far, in the order the client returned them."""
        self._check()
        with self._lock:
            return list(self._records)

    def commit(self, offsets: dict[int, int] | None = None) -> dict[int, int]:
        """Commit synchronously ``{partition: next offset}``, by default the positions of every
        assigned partition (the offset after the last record consumed); returns what was
        committed."""

        def commit(member: Any) -> dict[int, int]:
            wanted = member.positions() if offsets is None else offsets
            if wanted:
                member.commit(wanted)
            return wanted

        # A commit that meets a rebalance is refused (REBALANCE_IN_PROGRESS, or the client's own
        # check); applications poll and retry, and the polling thread does the polling here.
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                return self._call(commit)
            except Exception as exc:
                rebalancing = "RebalanceInProgress" in type(
                    exc
                ).__name__ or "REBALANCE_IN_PROGRESS" in str(exc)
                if not rebalancing or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        """Close the client, which leaves the group (LeaveGroup) rather than letting the
        session expire."""
        self._closing = True
        self._thread.join(TIMEOUT_S)
        if self._thread.is_alive():
            raise AssertionError(f"{self!r} did not close within {TIMEOUT_S:.0f}s")
        self._check()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """``{partition: committed offset}`` of ``group`` (-1: never committed), read with a raw
    OffsetFetch so that no client's own bookkeeping stands between the test and the broker."""
    from pytest_logbench.client import Connection
    from reference_broker.protocol import ApiKey

    body = {
        "group_id": group,
        "topics": [{"name": topic, "partition_indexes": list(range(partitions))}],
    }
    with Connection(bootstrap) as connection:
        response = connection.request(ApiKey.OFFSET_FETCH, 5, body)
    assert response["error_code"] == 0, response
    [found] = response["topics"]
    assert all(p["error_code"] == 0 for p in found["partitions"]), found
    return {p["partition_index"]: p["committed_offset"] for p in found["partitions"]}


def _member_main(argv: Sequence[str]) -> NoReturn:
    """``python -m tests.kafka_group_clients member CLIENT BOOTSTRAP GROUP TOPIC SESSION_MS``: a
    group member in a process of its own, printing ``{"assignment": [...]}`` whenever its
    assignment changes, until killed. A test can SIGSTOP it: its connections stay open but it
    stops heartbeating, so only the session timeout can remove it from the group."""
    client, bootstrap, group, topic, session_ms = argv
    member = GroupConsumer(client, bootstrap, group, topic, session_timeout_ms=int(session_ms))
    shown = None
    while True:
        if member.assignment != shown:
            shown = member.assignment
            print(json.dumps({"assignment": sorted(shown)}), flush=True)
        time.sleep(0.05)


if __name__ == "__main__":
    if sys.argv[1:2] != ["member"]:
        raise SystemExit(_member_main.__doc__)
    _member_main(sys.argv[2:])
