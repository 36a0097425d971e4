"""The clients outside Python against the reference broker: kcat, kafkajs and the Java client
each produce records and read them back byte for byte, read from a middle offset, consume in
a group with commits, and resume from the commit after a broker restart.

Records mix binary keys and values, null keys and null values, UTF-8 and a newline; none holds
kcat's separators (``tests/external_clients.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_logbench.client import HarnessClient
from tests.external_clients import ExternalClient, JavaClient, Kafkajs, Kcat, ready
from tests.kafka_group_clients import committed_offsets

RECORDS = [
    (b"\x00\xff\x01", b"\x80binary\x00value"),
    (None, "é 😀 utf-8".encode()),
    (b"no value", None),
    (b"k3", b"line one\nline two"),
    (b"k4", bytes(range(32, 256))),
    (None, b"last"),
]


@pytest.fixture(scope="module")
def java_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("java-probe")


@pytest.fixture(
    params=[
        "kcat",
        "kafkajs",
        pytest.param("java", marks=pytest.mark.slow),  # a JVM start per operation: ~4 s each
    ]
)
def client(request: pytest.FixtureRequest, java_build: Path) -> ExternalClient:
    made = {"kcat": Kcat, "kafkajs": Kafkajs}.get(request.param)
    return ready(made() if made else JavaClient(java_build))


def expected(first: int, last: int) -> list[tuple[int, bytes | None, bytes | None]]:
    return [(offset, *RECORDS[offset]) for offset in range(first, last)]


def test_produce_read_back_seek_and_resume_a_group_after_a_restart(broker, client):
    topic, group = f"matrix-{client.name}", f"matrix-group-{client.name}"
    with HarnessClient(broker.bootstrap) as harness:
        harness.create_topic(topic, 1)
    client.produce(broker.bootstrap, topic, RECORDS)

    assert client.consume(broker.bootstrap, topic, 0, len(RECORDS)) == expected(0, 6)
    assert client.consume(broker.bootstrap, topic, 3, 3) == expected(3, 6)

    assert client.group_consume(broker.bootstrap, group, topic, 4) == expected(0, 4)
    assert committed_offsets(broker.bootstrap, group, topic, 1) == {0: 4}
    broker.restart()
    assert client.group_consume(broker.bootstrap, group, topic, 2) == expected(4, 6)
    assert committed_offsets(broker.bootstrap, group, topic, 1) == {0: 6}


def test_kafkajs_resets_a_groups_offsets(broker):
    """kafkajs' admin.resetOffsets describes the group first (it must be Empty)."""
    client = ready(Kafkajs())
    topic, group = "reset-me", "resetting"
    with HarnessClient(broker.bootstrap) as harness:
        harness.create_topic(topic, 1)
    client.produce(broker.bootstrap, topic, RECORDS)
    assert client.group_consume(broker.bootstrap, group, topic, 6) == expected(0, 6)
    client.reset_offsets(broker.bootstrap, group, topic)
    assert client.group_consume(broker.bootstrap, group, topic, 2) == expected(0, 2)
