"""The reference broker at the wire: bad input, error codes, transmit paths, metrics, shutdown.

Every test talks to a real broker process over 127.0.0.1. Bad input must get a Kafka error code
where the protocol has one, or close only the offending connection, and never corrupt the log.
"""

from __future__ import annotations

import socket
import ssl
import struct
import urllib.request
from pathlib import Path

import crc32c
import pytest

from pytest_logbench.client import Connection, HarnessClient, KafkaError
from reference_broker.errors import ErrorCode
from reference_broker.protocol import ApiKey, decode_response, encode_request
from reference_broker.record_codec import build_batch

RECORDS = [(b"k", b"v" * 100, [])] * 10


def _closed_by_broker(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _still_serves(broker) -> None:
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("alive")
        assert client.produce("alive", 0, build_batch(RECORDS)) >= 0


def _raw(broker) -> socket.socket:
    host, port = broker.bootstrap.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


@pytest.mark.parametrize(
    ("frame", "cause"),
    [
        (struct.pack(">i", 200 * 1024 * 1024), "too_large"),
        (struct.pack(">i", -5), "bad_frame"),
        (
            struct.pack(">i", 14) + struct.pack(">hhih", 0, 8, 1, -1) + b"\xff\x00\x01\x02",
            "malformed",
        ),
        (struct.pack(">i", 10) + struct.pack(">hhih", 999, 0, 7, -1), "unsupported_version"),
        (
            struct.pack(">i", 10) + struct.pack(">hhih", ApiKey.FETCH, 42, 7, -1),
            "unsupported_version",
        ),
    ],
    ids=[
        "over-max-request-bytes",
        "negative-size",
        "garbage-body",
        "unknown-api-key",
        "unknown-fetch-version",
    ],
)
def test_bad_frames_close_only_their_connection(broker, frame, cause):
    bystander = Connection(broker.bootstrap)
    sock = _raw(broker)
    sock.sendall(frame)
    assert _closed_by_broker(sock)
    assert broker.metric("logbench_request_errors_total", cause=cause) == 1
    _still_serves(broker)
    bystander.request(ApiKey.METADATA, 8, {"topics": None})  # an open connection still works
    assert "closing connection" in broker.stderr_tail()


def test_truncated_frame_then_disconnect_is_survived(broker):
    sock = _raw(broker)
    sock.sendall(struct.pack(">i", 1000) + b"\x00" * 10)
    sock.close()
    _still_serves(broker)


def _api_versions(broker, version: int) -> bytes:
    """The response payload to an ApiVersions request of ``version`` (flexible: header v2,
    client id as int16 string, then tagged fields; compact strings in the body)."""
    sock = _raw(broker)
    body = b"\x06logbe" + b"\x021" + b"\x00"
    header = struct.pack(">hhih", ApiKey.API_VERSIONS, version, 77, 4) + b"test" + b"\x00"
    sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
    size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
    return sock.recv(size, socket.MSG_WAITALL)


def test_api_versions_v5_gets_unsupported_version_with_our_ranges(broker):
    payload = _api_versions(broker, 5)
    correlation, error = struct.unpack(">ih", payload[:6])
    assert (correlation, error) == (77, ErrorCode.UNSUPPORTED_VERSION)
    keys = struct.unpack(">i", payload[6:10])[0]
    assert keys >= 10  # the v0 body lists our ranges so the client can retry


@pytest.mark.parametrize("version", [3, 4])
def test_flexible_api_versions_are_answered(broker, version):
    """@platformatic/kafka (and every Kafka 4 client) starts with ApiVersions v3 or v4 and
    gave up on UNSUPPORTED_VERSION. The answer keeps response header v0, as Kafka's does."""
    correlation, body = decode_response(
        ApiKey.API_VERSIONS, version, _api_versions(broker, version)
    )
    assert (correlation, body["error_code"]) == (77, ErrorCode.NONE)
    ranges = {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}
    assert ranges[ApiKey.API_VERSIONS] == (0, 4)
    assert ranges[ApiKey.FETCH] == (0, 16)
    assert ranges[ApiKey.METADATA] == (0, 12)


def test_produce_validation_errors_append_nothing(broker):
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("checked")
        good = build_batch(RECORDS)
        client.produce("checked", 0, good)
        bad_crc = bytearray(good)
        bad_crc[-1] ^= 0xFF
        for payload, code in [
            (bytes(bad_crc), ErrorCode.CORRUPT_MESSAGE),
            (good[:40], ErrorCode.CORRUPT_MESSAGE),
            # one batch per partition and request, as Kafka since produce v3: all or nothing
            (good + good, ErrorCode.INVALID_RECORD),
            (build_batch([(b"k", b"x" * 2_000_000, [])]), ErrorCode.MESSAGE_TOO_LARGE),
        ]:
            with pytest.raises(KafkaError) as failure:
                client.produce("checked", 0, payload)
            assert failure.value.code == code
        assert client.list_offset("checked", 0, -1)[0] == 10
        assert client.produce("checked", 0, good) == 10


def test_topic_names_are_checked_and_cannot_escape_the_log_dir(broker):
    with HarnessClient(broker.bootstrap) as client:
        for name in ["../escape", "a/b", "x" * 250, "", "..", "sp ace"]:
            with pytest.raises(KafkaError) as failure:
                client.produce(name, 0, build_batch(RECORDS))
            assert failure.value.code == ErrorCode.INVALID_TOPIC_EXCEPTION, name
    assert not (broker.log_dir.parent / "escape-0").exists()
    assert sorted(p.name for p in broker.log_dir.parent.iterdir() if p.is_dir()) == ["broker0"]


def test_fetch_out_of_range_and_unknown_partition(broker):
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("ranged")
        client.produce("ranged", 0, build_batch(RECORDS))
        assert client.fetch("ranged", 0, 11).error == ErrorCode.OFFSET_OUT_OF_RANGE
        assert client.fetch("ranged", 0, -1).error == ErrorCode.OFFSET_OUT_OF_RANGE
        empty = client.fetch("ranged", 0, 10)
        assert (empty.error, len(empty.records), empty.high_watermark) == (0, 0, 10)
        assert client.fetch("ranged", 7, 0).error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_acks_zero_failure_closes_the_connection(broker):
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("fire")
        bad = bytearray(build_batch(RECORDS))
        bad[-1] ^= 1
        frame = encode_request(
            ApiKey.PRODUCE,
            8,
            1,
            "t",
            {
                "acks": 0,
                "timeout_ms": 1000,
                "topic_data": [
                    {"name": "fire", "partition_data": [{"index": 0, "records": bytes(bad)}]}
                ],
            },
        )
        client.sock.sendall(frame)
        assert _closed_by_broker(client.sock)
    _still_serves(broker)


def test_invalid_acks(broker):
    with HarnessClient(broker.bootstrap) as client, pytest.raises(KafkaError) as failure:
        client.produce("acks", 0, build_batch(RECORDS), acks=2)
    assert failure.value.code == ErrorCode.INVALID_REQUIRED_ACKS


def _fetch_all(broker, topic: str, *, context: ssl.SSLContext | None = None) -> int:
    with HarnessClient(broker.bootstrap, ssl_context=context) as client:
        client.create_topic(topic)
        for _ in range(20):
            client.produce(topic, 0, build_batch([(None, b"z" * 1000, [])] * 100))
        fetched = client.fetch(topic, 0, 0, max_bytes=1 << 30)
        assert fetched.error == 0
        return len(fetched.records)


@pytest.mark.parametrize("mode", ["zerocopy", "copy", "tls"])
def test_transmit_path_counters(broker_factory, mode):
    """Fetched record bytes leave by exactly one path: sendfile unless --copy or TLS."""
    broker = broker_factory(copy=mode == "copy", tls=mode == "tls")
    context = None
    if mode == "tls":
        context = ssl.create_default_context(cafile=str(broker.ca_path))
    sent = _fetch_all(broker, "paths", context=context)
    assert sent > 2_000_000
    for path in ("zerocopy", "copy", "tls"):
        expected = sent if path == mode else 0
        assert broker.metric("logbench_bytes_sent_total", path=path) == expected, path
    assert broker.metric("logbench_fetch_bytes_total", read="tail") == sent


def test_history_reads_are_told_from_tail_reads(broker_factory):
    broker = broker_factory(tail_window_bytes=150_000)  # between one and two batches
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("lagging")
        batch = build_batch([(None, b"h" * 1000, [])] * 100)  # ~100 KB per batch
        for _ in range(10):
            client.produce("lagging", 0, batch)
        old = client.fetch("lagging", 0, 0, max_bytes=len(batch))  # 9 batches behind the end
        new = client.fetch("lagging", 0, 900, max_bytes=len(batch))
    assert broker.metric("logbench_fetch_bytes_total", read="history") == len(old.records)
    assert broker.metric("logbench_fetch_bytes_total", read="tail") == len(new.records)


def test_metrics_endpoint_documents_every_series(broker):
    _still_serves(broker)
    with urllib.request.urlopen(broker.metrics_url, timeout=10) as response:
        text = response.read().decode()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    assert {
        "logbench_produce_bytes_total",
        "logbench_requests_total",
        "logbench_request_seconds",
        "logbench_log_end_offset",
    } <= names
    for name in names:
        assert f"# HELP {name} \n" not in text, f"{name} has no help text"
    assert 'logbench_log_end_offset{partition="0",topic="alive"} 10' in text


def test_sigterm_writes_clean_shutdown_markers(broker):
    _still_serves(broker)
    assert broker.stop() == 0
    partition_dir: Path = broker.log_dir / "alive-0"
    assert (partition_dir / ".clean_shutdown").exists()
    broker.start()
    assert not (partition_dir / ".clean_shutdown").exists()
    with HarnessClient(broker.bootstrap) as client:
        assert client.list_offset("alive", 0, -1)[0] == 10


def test_admin_create_and_describe_topics_with_a_real_client(broker):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    wanted = NewTopic(
        "configured",
        num_partitions=3,
        replication_factor=1,
        config={"segment.bytes": "1048576", "retention.ms": "60000"},
    )
    admin.create_topics([wanted])["configured"].result(30)
    resource = ConfigResource("topic", "configured")
    configs = admin.describe_configs([resource])[resource].result(30)
    assert configs["segment.bytes"].value == "1048576"
    assert not configs["segment.bytes"].is_default
    assert configs["retention.bytes"].value == "-1" and configs["retention.bytes"].is_default
    failures = {
        "configured": NewTopic("configured", 1, 1),
        "bad-config": NewTopic("bad-config", 1, 1, config={"segment.bytes": "many"}),
        "replicated": NewTopic("replicated", 1, 3),
    }
    codes = {}
    for name, future in admin.create_topics(list(failures.values())).items():
        with pytest.raises(KafkaException) as failure:
            future.result(30)
        codes[name] = failure.value.args[0].code()
    assert codes == {
        "configured": ErrorCode.TOPIC_ALREADY_EXISTS,
        "bad-config": ErrorCode.INVALID_CONFIG,
        "replicated": ErrorCode.INVALID_REPLICATION_FACTOR,
    }
    with HarnessClient(broker.bootstrap) as client:
        assert client.partitions("configured") == 3


def test_long_poll_is_woken_by_an_append(broker):
    """A fetch waiting at the log end returns the records appended while it waited (had it
    not been woken, it would have returned empty after max_wait_ms)."""
    import threading

    with HarnessClient(broker.bootstrap) as waiter, HarnessClient(broker.bootstrap) as writer:
        writer.create_topic("poll")
        appended = threading.Timer(0.3, writer.produce, ("poll", 0, build_batch(RECORDS)))
        appended.start()
        try:
            result = waiter.fetch("poll", 0, 0, max_wait_ms=30_000, min_bytes=1)
        finally:
            appended.join()
        assert result.error == 0 and len(result.records) > 0
        assert result.high_watermark == 10


def test_long_poll_returns_what_it_has_at_max_wait(broker):
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("partial")
        client.produce("partial", 0, build_batch(RECORDS))
        result = client.fetch("partial", 0, 0, max_wait_ms=200, min_bytes=10**9)
        assert result.error == 0 and 0 < len(result.records) < 10**9


def test_clients_cannot_write_internal_topics(broker):
    """One confluent-kafka record produced to __consumer_offsets used to be stored, and the
    next start failed decoding it. Kafka refuses with INVALID_TOPIC_EXCEPTION; so do we, and
    names Kafka reserves are not created either."""
    from confluent_kafka import KafkaError as ClientError
    from confluent_kafka import Producer

    errors = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 20_000})
    producer.produce("__consumer_offsets", b"x", on_delivery=lambda err, _: errors.append(err))
    assert producer.flush(30) == 0
    assert [e.code() for e in errors] == [ClientError.TOPIC_EXCEPTION]
    with HarnessClient(broker.bootstrap) as client:
        assert client.list_offset("__consumer_offsets", 0, -1)[0] == 0
        for name in ["__transaction_state", "__consumer_offsets"]:
            with pytest.raises(KafkaError) as failure:
                client.produce(name, 0, build_batch(RECORDS))
            assert failure.value.code == ErrorCode.INVALID_TOPIC_EXCEPTION
        with pytest.raises(KafkaError) as failure:
            client.create_topic("__share_group_state")
        assert failure.value.code == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert not (broker.log_dir / "__transaction_state-0").exists()
    broker.restart()
    _still_serves(broker)


@pytest.mark.parametrize("api", ["metadata", "produce", "create_topics"])
def test_a_topic_colliding_in_metric_names_gets_invalid_topic(broker, api):
    """'a.b' and 'a_b' collide in Kafka's metric names, so Kafka refuses the second. Auto-
    creating it used to raise inside the handler, which closed the connection unanswered."""
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("a_b")
        if api == "metadata":
            [topic] = client.request(
                ApiKey.METADATA, 8, {"topics": [{"name": "a.b"}], "allow_auto_topic_creation": True}
            )["topics"]
            code = topic["error_code"]
        else:
            with pytest.raises(KafkaError) as failure:
                if api == "produce":
                    client.produce("a.b", 0, build_batch(RECORDS))
                else:
                    client.create_topic("a.b")
            code = failure.value.code
        assert code == ErrorCode.INVALID_TOPIC_EXCEPTION
        assert client.produce("a_b", 0, build_batch(RECORDS)) == 0  # the same connection
    assert broker.metric("logbench_request_errors_total", cause="handler_error") == 0


def test_a_batch_with_a_valid_crc_but_garbage_records_is_refused(broker):
    """Such a poison batch used to be stored: confluent-kafka consumers then stalled at its
    offset and never saw the good record after it. Kafka parses every record of a produced
    batch and answers INVALID_RECORD; nothing is appended."""
    from confluent_kafka import Consumer

    good = build_batch([(b"k", b"good", [])])
    poison = bytearray(build_batch([(b"k", b"v" * 50, [])] * 3))
    poison[61:] = bytes(len(poison) - 61)  # records zeroed, then the CRC made right again
    struct.pack_into(">I", poison, 17, crc32c.crc32c(bytes(poison[21:])))
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("poisoned")
        with pytest.raises(KafkaError) as failure:
            client.produce("poisoned", 0, bytes(poison))
        assert failure.value.code == ErrorCode.INVALID_RECORD
        assert client.list_offset("poisoned", 0, -1)[0] == 0
        client.produce("poisoned", 0, good)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "poison",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe(["poisoned"])
        message = None
        for _ in range(60):
            message = consumer.poll(1)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.value() == b"good"
    finally:
        consumer.close()
    assert broker.metric("logbench_produce_rejected_batches_total", error="INVALID_RECORD") == 1
