"""The broker bounds what one client can make it do: topics created, bytes answered, connections
held, memory buffered; and it keeps its metrics on loopback.

Every test talks to a real broker process over real sockets. Limits are asserted as behaviour
(an error code, a closed socket, a memory bound), never as a duration.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import psutil
import pytest

from pytest_logbench.client import Connection, HarnessClient, KafkaError
from reference_broker.errors import ErrorCode
from reference_broker.protocol import ApiKey, encode_request
from reference_broker.record_codec import build_batch
from reference_broker.records import iter_batches

METADATA_VERSION = 8
FETCH_VERSION = 11


def _raw(broker, host: str | None = None) -> socket.socket:
    return socket.create_connection((host or broker.host, broker.port), timeout=30)


def _closed_by_broker(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _metadata(client: Connection, names: list[str]) -> dict[str, int]:
    body = {"topics": [{"name": n} for n in names], "allow_auto_topic_creation": True}
    topics = client.request(ApiKey.METADATA, METADATA_VERSION, body)["topics"]
    return {t["name"]: t["error_code"] for t in topics}


def test_auto_creation_is_capped_per_request(broker_factory):
    """A Metadata request naming 2,000 new topics froze the broker for 20 s. Now one request
    creates at most --max-created-partitions-per-request partitions; the other topics get the
    retriable LEADER_NOT_AVAILABLE, and the client's retry creates the next share."""
    broker = broker_factory(
        num_partitions=2, extra_args=("--max-created-partitions-per-request", "10")
    )
    names = [f"auto-{i}" for i in range(12)]
    with HarnessClient(broker.bootstrap) as client:
        first = _metadata(client, names)
        assert [first[n] for n in names] == [0] * 5 + [ErrorCode.LEADER_NOT_AVAILABLE] * 7
        second = _metadata(client, names)
        assert [second[n] for n in names] == [0] * 10 + [ErrorCode.LEADER_NOT_AVAILABLE] * 2
        produced = client.produce("auto-11", 1, build_batch([(None, b"v")]))
        assert produced == 0  # produce auto-creates within the same cap
    assert broker.metric("logbench_auto_create_deferred_topics_total") == 7 + 2


def test_create_topics_over_the_per_request_cap_is_a_policy_violation(broker_factory):
    broker = broker_factory(extra_args=("--max-created-partitions-per-request", "100"))
    with HarnessClient(broker.bootstrap) as client:
        with pytest.raises(KafkaError) as failure:
            client.create_topic("wide", 101)
        assert failure.value.code == ErrorCode.POLICY_VIOLATION
        assert "max-created-partitions-per-request" in failure.value.args[0]
        client.create_topic("fits", 100)
        assert client.partitions("fits") == 100
    assert not (broker.log_dir / "wide-0").exists()


def _fetch(client: Connection, partitions: list[tuple[str, int]], max_bytes: int) -> dict:
    topics: dict[str, list[dict]] = {}
    for topic, index in partitions:
        topics.setdefault(topic, []).append(
            {"partition": index, "fetch_offset": 0, "partition_max_bytes": 2**31 - 1}
        )
    body = {
        "replica_id": -1,
        "max_wait_ms": 0,
        "min_bytes": 0,
        "max_bytes": max_bytes,
        "isolation_level": 0,
        "topics": [{"topic": t, "partitions": p} for t, p in topics.items()],
    }
    return client.request(ApiKey.FETCH, FETCH_VERSION, body)


def _records_bytes(response: dict) -> list[int]:
    return [len(p["records"] or b"") for t in response["responses"] for p in t["partitions"]]


def test_a_partition_repeated_in_one_fetch_is_read_once(broker):
    """A 1,647-byte fetch naming one partition many times returned 416 MB: each mention was
    read again. Kafka keys a fetch by partition; so does the broker now."""
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("repeated")
        for _ in range(5):
            client.produce("repeated", 0, build_batch([(None, b"r" * 1000)] * 10))
        once = _records_bytes(_fetch(client, [("repeated", 0)], 2**31 - 1))
        many = _records_bytes(_fetch(client, [("repeated", 0)] * 200, 2**31 - 1))
    assert many == once and once[0] > 50_000


def test_fetch_responses_are_capped_at_fetch_max_bytes_with_whole_first_batch(broker_factory):
    """The broker-side fetch.max.bytes caps a response whatever the request asks (there was
    no cap, and past 2 GiB a struct.error escaped). KIP-74: the first batch comes whole even
    when it alone is larger, so a consumer always makes progress."""
    broker = broker_factory(extra_args=("--fetch-max-bytes", "30000"))
    small = build_batch([(None, b"s" * 1000)] * 10)  # about 10 KB
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("capped", 2)
        client.create_topic("big")
        for _ in range(10):
            client.produce("capped", 0, small)
            client.produce("capped", 1, small)
        client.produce("big", 0, build_batch([(None, b"b" * 50_000)]))
        capped = _records_bytes(_fetch(client, [("capped", 0), ("capped", 1)], 2**31 - 1))
        assert capped == [30_000, 0]  # cut inside the third batch, as Kafka cuts
        big = _records_bytes(_fetch(client, [("big", 0), ("capped", 0)], 2**31 - 1))
        assert big[0] > 50_000 and big[1] == 0
        request_cap = _fetch(client, [("capped", 0)], len(small) + 10)
        [(_, records)] = [
            (p, p["records"]) for t in request_cap["responses"] for p in t["partitions"]
        ]
        assert len(list(iter_batches(records))) == 1


def test_idle_connections_are_closed(broker_factory):
    """Idle connections lived forever; ~1,000 of them locked everyone out. Kafka closes them
    after connections.max.idle.ms."""
    broker = broker_factory(extra_args=("--connections-max-idle-ms", "300"))
    idle = _raw(broker)
    assert _closed_by_broker(idle)
    assert broker.metric("logbench_idle_connections_closed_total") == 1
    with HarnessClient(broker.bootstrap) as client:  # busy connections are served as ever
        client.create_topic("busy")


def test_idle_time_starts_again_with_every_byte(broker_factory):
    """A frame that takes longer than connections.max.idle.ms to arrive, but never pauses that
    long, is served: idle means no bytes, not a slow request (the frame is received straight
    into its buffer, so the wait for it is one wait)."""
    broker = broker_factory(extra_args=("--connections-max-idle-ms", "1000"))
    with Connection(broker.bootstrap) as client:
        frame = encode_request(ApiKey.METADATA, METADATA_VERSION, 1, "trickle", {"topics": []})
        for start in range(0, len(frame), 4):
            client.sock.sendall(frame[start : start + 4])
            time.sleep(0.2)
        assert client.read_response(ApiKey.METADATA, METADATA_VERSION, 1)["brokers"]
    assert broker.metric("logbench_idle_connections_closed_total") == 0


@pytest.mark.parametrize("flag", ["--max-connections", "--max-connections-per-ip"])
def test_connections_over_the_limit_are_closed_at_once(broker_factory, flag):
    broker = broker_factory(extra_args=(flag, "3"))
    held = [Connection(broker.bootstrap) for _ in range(3)]
    for connection in held:
        connection.request(ApiKey.METADATA, METADATA_VERSION, {"topics": []})
    extra = _raw(broker)
    assert _closed_by_broker(extra)
    limit = flag.removeprefix("--").replace("-", ".")
    assert broker.metric("logbench_connections_refused_total", limit=limit) == 1
    held.pop().close()
    deadline = time.monotonic() + 30
    while broker.metric("logbench_connections") > 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    with Connection(broker.bootstrap) as again:
        again.request(ApiKey.METADATA, METADATA_VERSION, {"topics": []})
    for connection in held:
        connection.close()


FRAME = 40 << 20
STALLED = 8


def _stall(sock: socket.socket, sent: list[int]) -> None:
    """Send the size of a 40 MiB frame and 90% of its body, then nothing more."""
    body = memoryview(bytes(FRAME * 9 // 10))
    try:
        sock.sendall(struct.pack(">i", FRAME))
        while body:
            count = sock.send(body[: 1 << 20])
            sent.append(count)
            body = body[count:]
    except OSError:
        pass  # the test closed the socket while the broker was not reading it


@pytest.mark.slow
def test_stalled_large_frames_do_not_grow_memory_beyond_the_cap(broker_factory):
    """Each stalled large frame pinned ~90 MB (8 of them: RSS 30 -> 743 MB). A frame now
    reserves its size from queued.max.request.bytes before its body is read; frames that do
    not fit wait with their sockets unread."""
    cap = 48 << 20
    broker = broker_factory(
        extra_args=("--max-request-bytes", str(FRAME), "--queued-max-request-bytes", str(cap))
    )
    process = psutil.Process(broker.pid)
    before = process.memory_info().rss
    margin = 24 << 20  # interpreter, asyncio buffers of the 7 waiting sockets, allocator slack
    sockets = [_raw(broker) for _ in range(STALLED)]
    sent: list[list[int]] = [[] for _ in sockets]
    senders = [
        threading.Thread(target=_stall, args=(s, n), daemon=True)
        for s, n in zip(sockets, sent, strict=True)
    ]
    for sender in senders:
        sender.start()
    try:
        # Wait for a state, not a duration: the other frames queue for memory (new broker),
        # or memory passes the bound (a broker that buffers every frame whole).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            grown = process.memory_info().rss - before
            if grown > cap + margin or (
                broker.metric("logbench_request_memory_waiting") == STALLED - 1
                and broker.metric("logbench_request_memory_bytes") == FRAME
            ):
                break
            time.sleep(0.1)
        grown = process.memory_info().rss - before
        assert grown <= cap + margin, f"RSS grew by {grown >> 20} MiB, cap {cap >> 20} MiB"
        assert broker.metric("logbench_request_memory_waiting") == STALLED - 1
    finally:
        for sock in sockets:
            sock.close()
        for sender in senders:
            sender.join(30)
    with HarnessClient(broker.bootstrap) as client:  # memory is released with the sockets
        client.create_topic("after")
        assert client.produce("after", 0, build_batch([(None, b"v")])) == 0


def test_metrics_stay_on_loopback_when_the_broker_listens_elsewhere(broker_factory):
    """--host used to move the metrics endpoint too. The broker has no authentication; its
    metrics stay on 127.0.0.1 unless --metrics-host asks for another address."""
    broker = broker_factory(extra_args=("--host", "127.0.0.2"))
    assert broker.host == "127.0.0.2"
    metrics = urlsplit(broker.metrics_url)
    assert metrics.hostname == "127.0.0.1"
    process = psutil.Process(broker.pid)
    connections = getattr(process, "net_connections", process.connections)()  # psutil < 6
    listening = {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.2", broker.port), ("127.0.0.1", metrics.port)}
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.2:{metrics.port}/metrics", timeout=10)
    assert broker.metric("logbench_connections") == 0  # served from 127.0.0.1


def test_metrics_host_moves_only_the_metrics_endpoint(broker_factory):
    broker = broker_factory(extra_args=("--metrics-host", "127.0.0.3"))
    assert broker.host == "127.0.0.1"
    assert urlsplit(broker.metrics_url).hostname == "127.0.0.3"
    assert broker.metric("logbench_connections") == 0


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (
            ["--queued-max-request-bytes", "1000", "--max-request-bytes", "2000"],
            "could never be read",
        ),
        (["--fetch-max-bytes", str(2**31 - 1)], "--fetch-max-bytes must be in"),
        (["--max-connections", "0"], "--max-connections must be at least 1"),
        (
            ["--num-partitions", "11", "--max-created-partitions-per-request", "10"],
            "no topic is auto-created",
        ),
    ],
)
def test_incoherent_limits_are_refused_at_start(tmp_path, flags, problem):
    from reference_broker.__main__ import _broker_parser, config_from_args

    args = _broker_parser().parse_args(["--log-dir", str(tmp_path), *flags])
    with pytest.raises(SystemExit, match=problem):
        config_from_args(args)
