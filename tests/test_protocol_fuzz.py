"""Protocol fuzzing: hypothesis-generated frames against a running reference broker.

Valid frames of every API key and version, the same with mutated bodies, lying size prefixes,
unknown keys and versions, huge array counts and string lengths, and record batches broken in
every way produce validation checks (bad CRCs above all). After every example the broker must
still run, must have logged no error (an unhandled exception is a bug even when the broker
survives it), must not have appended a batch that fails Kafka's checks, must go on serving a
well-behaved client on its own connection, and its RSS must stay within a fixed margin of
what it was before the fuzzing.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import strategies as st

from pytest_logbench.brokers import ExternalBroker
from pytest_logbench.client import CREATE_TOPICS_VERSION, HarnessClient
from pytest_logbench.fuzz import request_frames
from pytest_logbench.log_model import fetch_batches
from pytest_logbench.strategies import BatchSpec, examples, shrink_timeout
from reference_broker.errors import ErrorCode
from reference_broker.protocol import ApiKey
from reference_broker.records import InvalidBatch, Record, validate_batches

pytestmark = [
    pytest.mark.slow,
    pytest.mark.logbench_local,
    pytest.mark.conformance,
    shrink_timeout(),
]

MEMORY_MARGIN = 64 << 20
"""How much the broker's RSS may grow over the whole fuzzing run. The frames claim gigabytes
(size prefixes up to 2 GiB, array counts up to 2**31): honouring a single claim would blow it,
while what legitimately accumulates (topics and groups the fuzzer creates) stays far below."""

DRAIN_TIMEOUT_S = 5.0
"""How long to wait for the broker to answer and close a fuzzed connection. Not a performance
bound: a fuzzed Fetch or JoinGroup may legitimately wait, and then the connection is dropped."""

CONTROL = BatchSpec((Record(0, 1_000, b"control", b"still served", [("h", b"v")]),))


@dataclass
class Watch:
    """The fuzzed broker and what every example checks it against."""

    broker: Any
    control: HarnessClient
    control_topic: str
    baseline_rss: int
    stderr_seen: int
    scanned: dict[Path, int] = field(default_factory=dict)  # segment -> size checked


@pytest.fixture
def watch(broker_factory: Any) -> Any:
    """One broker for every example of the run, with a well-behaved client connected to it
    for the whole run: the fuzzer must never disturb another connection."""
    broker = broker_factory(segment_bytes=64 << 10)
    if isinstance(broker, ExternalBroker):
        pytest.skip(
            "the fuzzer watches the broker's process, log and segment files: it needs "
            "a reference broker started by logbench, not --logbench-bootstrap"
        )
    control = HarnessClient(broker.bootstrap)
    topic = f"logbench-control-{uuid.uuid4().hex[:12]}"
    control.create_topic(topic, configs={"retention.ms": "-1"})  # CONTROL is from 1970
    watch = Watch(broker, control, topic, 0, broker.stderr_path.stat().st_size)
    _check_control(watch)  # warm the code paths before the baseline
    watch.baseline_rss = psutil.Process(broker.pid).memory_info().rss
    yield watch
    control.close()


@examples(1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(request_frames(), min_size=2, max_size=3))
def test_broker_survives_fuzzed_frames(watch: Watch, frames: list[bytes]) -> None:
    """At least 2 frames per example, 1000 examples under the ci profile: 2000+ frames."""
    _send(watch.broker.bootstrap, frames)
    broker = watch.broker
    assert broker.running, f"the broker died; stderr tail:\n{broker.stderr_tail()}"
    _check_stderr(watch)
    _check_segments(watch)
    _check_control(watch)
    rss = psutil.Process(broker.pid).memory_info().rss
    assert rss - watch.baseline_rss <= MEMORY_MARGIN, (
        f"RSS grew from {watch.baseline_rss >> 20} MiB to {rss >> 20} MiB"
    )


def _send(bootstrap: str, frames: list[bytes]) -> None:
    """Send ``frames`` on a fresh connection, close our side, read until the broker closes."""
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=DRAIN_TIMEOUT_S) as sock:
        try:
            for frame in frames:
                sock.sendall(frame)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(1 << 16):
                pass
            event("the broker closed the connection")
        except TimeoutError:
            event("the broker was still waiting: connection dropped")
        except OSError:
            event("the broker closed the connection while we were sending")


def _check_stderr(watch: Watch) -> None:
    """No ERROR line since the last example: refusing bad input is a WARNING, an exception
    escaping a handler is logged as an ERROR with its traceback."""
    with watch.broker.stderr_path.open("rb") as file:
        file.seek(watch.stderr_seen)
        text = file.read().decode(errors="replace")
        watch.stderr_seen = file.tell()
    errors = [
        line
        for line in text.splitlines()  # "<date> <time> <LEVEL> <logger>: ..."
        if line.split(" ", 3)[2:3] in (["ERROR"], ["CRITICAL"]) or "Traceback" in line
    ]
    assert not errors, "the broker logged errors:\n" + text[-4000:]


def _check_segments(watch: Watch) -> None:
    """Every batch on disk passes Kafka's produce-time checks and offsets follow each other."""
    for path in watch.broker.segment_files():
        try:  # retention deletes the fuzzed topics' segments: their timestamps are old
            data = memoryview(path.read_bytes())
        except FileNotFoundError:
            continue
        size = len(data)
        if size == 0 or watch.scanned.get(path) == size:
            continue
        try:
            headers = validate_batches(data, 2**31 - 1)
        except InvalidBatch as exc:
            pytest.fail(f"{path}: a batch the broker must have refused was appended: {exc}")
        expected = int(path.stem)
        for header in headers:
            assert header.base_offset == expected, f"{path}: offset gap before {expected}"
            expected = header.next_offset
        watch.scanned[path] = size


def _check_control(watch: Watch) -> None:
    """The well-behaved client's produce lands at the log end and reads back intact."""
    client, topic = watch.control, watch.control_topic
    end, _ = client.list_offset(topic, 0, -1)
    assert client.produce(topic, 0, CONTROL.encode()) == end
    fetched = [
        records for _, batches in fetch_batches(client, topic, 0, end) for _, records in batches
    ]
    assert fetched == [CONTROL.at(end)]


def test_create_topics_refuses_more_partitions_than_kafka_allows(watch: Watch) -> None:
    """The fuzzer's find: CreateTopics with num_partitions 2**31 - 1 made the broker create
    partitions for hours. Kafka refuses more than 10,000 partitions per request; so does the
    reference broker now, at once and without creating anything."""
    client = watch.control
    body = {
        "topics": [
            {
                "name": "huge",
                "num_partitions": 2**31 - 1,
                "replication_factor": 1,
                "assignments": [],
                "configs": [],
            }
        ],
        "timeout_ms": 1000,
    }
    [result] = client.request(ApiKey.CREATE_TOPICS, CREATE_TOPICS_VERSION, body)["topics"]
    assert result["error_code"] == ErrorCode.INVALID_PARTITIONS
    assert "Excessively large number of partitions" in result["error_message"]
    assert not (watch.broker.log_dir / "huge-0").exists()
    _check_control(watch)
