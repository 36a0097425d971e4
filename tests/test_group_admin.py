"""Group administration (ListGroups, DescribeGroups, DeleteGroups, OffsetDelete): the
coordinator's answers with Kafka's error codes, then each real client that offers the calls.

Which client offers what: confluent-kafka lists, describes and deletes groups (its Python
binding has no call for OffsetDelete); kafka-python and the Java client do all four; kafkajs
lists, describes and deletes groups (OffsetDelete it has not); aiokafka lists and describes.
"""

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_logbench.client import HarnessClient
from reference_broker.errors import ErrorCode
from reference_broker.groups import GroupCoordinator, GroupState, OffsetStore
from reference_broker.log.config import LogConfig
from reference_broker.log.partition import PartitionLog
from tests.coordinator_harness import FakeClock, async_test, join, settle, sync
from tests.external_clients import JavaClient, Kafkajs, ready
from tests.kafka_group_clients import GroupConsumer, wait_until


def subscription(*topics: str) -> bytes:
    """A ConsumerProtocolSubscription v0 naming ``topics``, with null user data."""
    out = struct.pack(">hi", 0, len(topics))
    for topic in topics:
        out += struct.pack(">h", len(topic)) + topic.encode()
    return out + struct.pack(">i", -1)


@pytest.fixture
def offsets_log(tmp_path: Path) -> Iterator[PartitionLog]:
    log = PartitionLog(tmp_path / "__consumer_offsets-0", LogConfig())
    yield log
    log.close()


@pytest.fixture
def coordinator(offsets_log: PartitionLog) -> GroupCoordinator:
    return GroupCoordinator(OffsetStore([offsets_log]), clock=FakeClock())


async def stable_member(coordinator: GroupCoordinator, group: str, metadata: bytes) -> str:
    """The one member of a new Stable group (generation 1), subscribed as ``metadata`` says."""
    joined = await join(coordinator, group=group, protocols=[("range", metadata)])
    assert (
        await sync(coordinator, joined, {joined.member_id: b"assigned"}, group=group)
    ).error == 0
    return joined.member_id


@async_test
async def test_groups_are_listed_and_described_as_kafka_shows_them(coordinator):
    member = await stable_member(coordinator, "live", subscription("orders"))
    coordinator.commit_offsets("standalone", -1, "", None, [("orders", 0, 3, None)])

    error, listed = coordinator.list_groups()
    assert error is ErrorCode.NONE
    assert sorted((g.group_id, g.protocol_type) for g in listed) == [
        ("live", "consumer"),
        ("standalone", ""),
    ]
    error, live = coordinator.describe_group("live")
    assert (error, live.state, live.protocol_name) == (ErrorCode.NONE, GroupState.STABLE, "range")
    [described] = live.members
    assert (described.member_id, described.assignment) == (member, b"assigned")
    assert described.metadata == subscription("orders")
    assert coordinator.describe_group("standalone")[1].state is GroupState.EMPTY
    # Kafka answers an unknown group (DescribeGroups before v6) as Dead, with no error.
    assert coordinator.describe_group("nobody")[1].state is GroupState.DEAD
    assert coordinator.describe_group("nobody")[0] is ErrorCode.NONE


@async_test
async def test_a_rebalancing_group_shows_no_protocol_or_assignment(coordinator):
    joining = asyncio.create_task(join(coordinator, group="g"))
    await settle()
    joined = await joining
    _, summary = coordinator.describe_group("g")
    assert summary.state is GroupState.COMPLETING_REBALANCE
    assert (summary.protocol_name, summary.members[0].metadata) == ("", b"")
    assert joined.error is ErrorCode.NONE


@async_test
async def test_deleting_groups(coordinator, offsets_log):
    await stable_member(coordinator, "live", subscription("orders"))
    coordinator.commit_offsets(
        "idle", -1, "", None, [("orders", 0, 3, None), ("orders", 1, 4, None)]
    )

    assert coordinator.delete_group("live") is ErrorCode.NON_EMPTY_GROUP
    assert coordinator.delete_group("nobody") is ErrorCode.GROUP_ID_NOT_FOUND
    assert coordinator.delete_group("idle") is ErrorCode.NONE
    assert coordinator.delete_group("idle") is ErrorCode.GROUP_ID_NOT_FOUND
    assert coordinator.describe_group("idle")[1].state is GroupState.DEAD
    assert OffsetStore([offsets_log]).groups() == [], "the deletion is in the log (tombstones)"
    coordinator.close()
    assert coordinator.delete_group("live") is ErrorCode.COORDINATOR_NOT_AVAILABLE


@async_test
async def test_deleting_offsets(coordinator, offsets_log):
    member = await stable_member(coordinator, "live", subscription("orders"))
    both = [("orders", 0, 3, None), ("other", 0, 5, None)]
    assert set(coordinator.commit_offsets("live", 1, member, None, both).values()) == {0}
    assert set(coordinator.commit_offsets("idle", -1, "", None, both).values()) == {0}

    error, errors = coordinator.delete_offsets("live", [("orders", 0), ("other", 0)])
    assert error is ErrorCode.NONE
    assert errors == {
        ("orders", 0): ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC,
        ("other", 0): ErrorCode.NONE,
    }
    assert list(coordinator.fetch_offsets("live", None)[1]) == [("orders", 0)]
    assert coordinator.delete_offsets("idle", [("orders", 0)]) == (
        ErrorCode.NONE,
        {("orders", 0): ErrorCode.NONE},
    )
    assert list(OffsetStore([offsets_log]).group_offsets("idle")) == [("other", 0)]
    assert list(OffsetStore([offsets_log]).group_offsets("live")) == [("orders", 0)]
    assert coordinator.delete_offsets("nobody", [("orders", 0)])[0] is ErrorCode.GROUP_ID_NOT_FOUND
    left = await join(coordinator, group="left")
    await sync(coordinator, left, group="left")
    coordinator.commit_offsets("left", left.generation_id, left.member_id, None, [("o", 0, 1, "")])
    coordinator.leave_group("left", [(left.member_id, None)])
    assert coordinator.describe_group("left")[1].state is GroupState.EMPTY
    assert coordinator.delete_offsets("left", [("o", 0)]) == (ErrorCode.NONE, {("o", 0): 0})
    assert coordinator.describe_group("left")[1].state is GroupState.DEAD, "as Kafka: no offsets"
    assert coordinator.delete_offsets("", [("orders", 0)])[0] is ErrorCode.INVALID_GROUP_ID


@async_test
async def test_offsets_of_live_groups_whose_subscriptions_are_unreadable_stay(coordinator):
    await stable_member(coordinator, "garbled", b"\x00\x00\xff")
    _, errors = coordinator.delete_offsets("garbled", [("orders", 0)])
    assert errors == {("orders", 0): ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC}
    joined = await join(coordinator, group="connect", protocol_type="connect")
    await sync(coordinator, joined, group="connect")
    assert coordinator.delete_offsets("connect", [("orders", 0)])[0] is ErrorCode.NON_EMPTY_GROUP


# --- real clients ------------------------------------------------------------------------------

TOPICS = ("orders", "other")


def live_and_idle_groups(broker, client: str) -> GroupConsumer:
    """Group "live" with one member of ``client`` subscribed to "orders" (and a commit for
    "other"), group "idle" with committed offsets only; the member is returned, running."""
    from confluent_kafka import Consumer, TopicPartition

    with HarnessClient(broker.bootstrap) as harness:
        for topic in TOPICS:
            harness.create_topic(topic, 1)
    standalone = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "idle"})
    try:
        standalone.commit(offsets=[TopicPartition("orders", 0, 1)], asynchronous=False)
    finally:
        standalone.close()
    member = GroupConsumer(client, broker.bootstrap, "live", "orders")
    wait_until(lambda: member.assignment == {0}, "the live group's assignment")
    return member


def test_confluent_kafka_lists_describes_and_deletes_groups(broker):
    from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with live_and_idle_groups(broker, "confluent"):
        listed = admin.list_consumer_groups().result(30)
        assert listed.errors == []
        assert {g.group_id for g in listed.valid} == {"live", "idle"}
        described = {
            group_id: future.result(30)
            for group_id, future in admin.describe_consumer_groups(["live", "idle", "x"]).items()
        }
        assert described["live"].state is ConsumerGroupState.STABLE
        [member] = described["live"].members
        assert [tp.topic for tp in member.assignment.topic_partitions] == ["orders"]
        assert described["idle"].state is ConsumerGroupState.EMPTY
        assert described["x"].state is ConsumerGroupState.DEAD

        deleted = admin.delete_consumer_groups(["live", "idle", "x"])
        assert deleted["idle"].result(30) is None
        for group_id, code in (
            ("live", KafkaError.NON_EMPTY_GROUP),
            ("x", KafkaError.GROUP_ID_NOT_FOUND),
        ):
            with pytest.raises(KafkaException) as refused:
                deleted[group_id].result(30)
            assert refused.value.args[0].code() == code
    assert {g.group_id for g in admin.list_consumer_groups().result(30).valid} == {"live"}


def test_kafka_python_lists_describes_and_deletes_groups_and_offsets(broker):
    from kafka import KafkaAdminClient
    from kafka.structs import TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        with live_and_idle_groups(broker, "kafka-python") as member:
            member.commit({0: 1})
            assert {g["group_id"] for g in admin.list_groups()} == {"live", "idle"}
            described = admin.describe_groups(["live", "idle"])
            assert described["live"]["group_state"] == "Stable"
            assert described["idle"]["group_state"] == "Empty"
            deleted = admin.delete_group_offsets("live", [TopicPartition("orders", 0)])
            assert deleted[TopicPartition("orders", 0)].__name__ == "GroupSubscribedToTopicError"
            assert admin.delete_groups(["live", "nobody"]) == {
                "live": "NonEmptyGroupError",
                "nobody": "GroupIdNotFoundError",
            }
        deleted = admin.delete_group_offsets("idle", [TopicPartition("orders", 0)])
        assert deleted[TopicPartition("orders", 0)].__name__ == "NoError"
        assert admin.delete_groups(["live"]) == {"live": "OK"}
        assert [g["group_id"] for g in admin.list_groups()] == []
    finally:
        admin.close()


def test_aiokafka_lists_and_describes_groups(broker):
    """aiokafka 0.14 decodes DescribeGroups v3 responses with the v2 layout (its
    DescribeGroupsRequest_v3.RESPONSE_TYPE), so the authorized_operations after each group are
    read as the next group's start: asked for one group at a time, it works (a bug of theirs,
    which real Kafka meets too)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def list_and_describe() -> tuple[list, list]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            listed = await admin.list_consumer_groups()
            described = []
            for group_id in ("live", "idle"):
                [response] = await admin.describe_consumer_groups([group_id])
                described += response.groups
            return listed, described
        finally:
            await admin.close()

    with live_and_idle_groups(broker, "aiokafka"):
        listed, described = asyncio.run(list_and_describe())
    assert sorted(listed) == [("idle", ""), ("live", "consumer")]
    assert [(g[1], g[2]) for g in described] == [("live", "Stable"), ("idle", "Empty")]


def test_kafkajs_lists_describes_and_deletes_groups(broker):
    client = ready(Kafkajs())
    with live_and_idle_groups(broker, "confluent"):
        assert client.list_groups(broker.bootstrap) == {"live", "idle"}
        assert client.describe_group(broker.bootstrap, "live") == ("Stable", 1)
        assert client.describe_group(broker.bootstrap, "idle") == ("Empty", 0)
        assert client.delete_group(broker.bootstrap, "live") == "NON_EMPTY_GROUP"
    assert client.delete_group(broker.bootstrap, "idle") == "OK"
    assert client.delete_group(broker.bootstrap, "idle") == "GROUP_ID_NOT_FOUND"


@pytest.mark.slow  # a JVM start per call
def test_the_java_admin_lists_describes_and_deletes_groups_and_offsets(broker, tmp_path):
    client = ready(JavaClient(tmp_path))
    with live_and_idle_groups(broker, "confluent"):
        assert client.list_groups(broker.bootstrap) == {"live", "idle"}
        assert client.describe_group(broker.bootstrap, "live") == ("Stable", 1)
        assert client.delete_group(broker.bootstrap, "live") == "GroupNotEmptyException"
        subscribed = client.delete_offsets(broker.bootstrap, "live", "orders")
        assert subscribed == "GroupSubscribedToTopicException"
    assert client.delete_offsets(broker.bootstrap, "idle", "orders") == "OK"
    assert client.delete_group(broker.bootstrap, "idle") == "GroupIdNotFoundException"
    assert client.describe_group(broker.bootstrap, "idle") == ("Dead", 0)
