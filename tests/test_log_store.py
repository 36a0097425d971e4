"""LogStore (topics on disk) and LogConfig (defaults and Kafka-style topic overrides)."""

import json
from pathlib import Path

import pytest

from reference_broker.errors import ErrorCode
from reference_broker.log import (
    CLEAN_SHUTDOWN_MARKER,
    InvalidConfig,
    InvalidPartitions,
    InvalidTopic,
    LogConfig,
    LogStore,
    TopicExists,
    UnknownTopic,
    validate_topic_name,
)
from reference_broker.record_codec import build_batch


def record_batch(value: bytes = b"v" * 100) -> bytes:
    return build_batch([(b"k", value)], base_timestamp=1_000)


# --- LogConfig --------------------------------------------------------------------------------


def test_defaults_are_kafkas() -> None:
    config = LogConfig()
    assert config.segment_bytes == 1 << 30
    assert config.index_interval_bytes == 4096
    assert (config.retention_bytes, config.retention_ms) == (-1, 7 * 24 * 3600 * 1000)
    assert (config.fsync, config.max_message_bytes) == ("never", 1048588)


@pytest.mark.parametrize(
    "bad",
    [
        {"segment_bytes": 1023},
        {"segment_bytes": 2**31},
        {"segment_ms": 0},
        {"retention_bytes": -2},
        {"retention_ms": -5},
        {"index_interval_bytes": -1},
        {"fsync": "sometimes"},
        {"fsync_interval_ms": -1},
        {"max_message_bytes": True},
        {"file_delete_delay_ms": 1.5},
    ],
)
def test_nonsense_config_is_a_value_error(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))) as info:
        LogConfig(**bad)
    assert isinstance(info.value, InvalidConfig)


def test_topic_overrides_map_to_fields() -> None:
    config = LogConfig().with_overrides(
        {
            "segment.bytes": "4096",
            "segment.ms": "60000",
            "retention.bytes": " 10000 ",
            "retention.ms": "-1",
            "max.message.bytes": "2000",
            "index.interval.bytes": "100",
            "file.delete.delay.ms": "0",
            "cleanup.policy": "delete",
        }
    )
    assert config == LogConfig(
        segment_bytes=4096,
        segment_ms=60000,
        retention_bytes=10000,
        retention_ms=-1,
        max_message_bytes=2000,
        index_interval_bytes=100,
        file_delete_delay_ms=0,
    )
    assert config.topic_configs()["segment.bytes"] == "4096"
    assert config.topic_configs()["cleanup.policy"] == "delete"


def test_flush_overrides_choose_the_fsync_policy() -> None:
    base = LogConfig()
    assert base.with_overrides({"flush.messages": "1"}).fsync == "always"
    interval = base.with_overrides({"flush.ms": "250"})
    assert (interval.fsync, interval.fsync_interval_ms) == ("interval", 250)
    unset = str(2**63 - 1)
    assert base.with_overrides({"flush.ms": unset, "flush.messages": unset}) == base
    assert interval.topic_configs()["flush.ms"] == "250"
    assert interval.topic_configs()["flush.messages"] == unset


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"segment.byte": "1"}, "unknown or unsupported topic config 'segment.byte'"),
        ({"segment.bytes": "lots"}, "segment.bytes must be an integer"),
        ({"segment.bytes": None}, "segment.bytes must be an integer"),
        ({"segment.bytes": "10"}, "segment_bytes must be an integer in"),
        ({"cleanup.policy": "compact"}, "cleanup.policy supports only 'delete'"),
        ({"flush.messages": "100"}, "flush.messages supports 1"),
    ],
)
def test_bad_overrides_raise_invalid_config(overrides: dict, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message) as info:
        LogConfig().with_overrides(overrides)
    assert info.value.error_code is ErrorCode.INVALID_CONFIG


# --- topic names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "orders.v1", "A_b-C.9", "__consumer_offsets", "x" * 249])
def test_valid_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "../x", "a\\b", "x" * 250, "spa ce", "ü", "a\x00b", "/abs"]
)
def test_invalid_topic_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidTopic) as info:
        validate_topic_name(name)
    assert info.value.error_code is ErrorCode.INVALID_TOPIC_EXCEPTION
    store = LogStore(tmp_path / "logs", LogConfig())
    with pytest.raises(InvalidTopic):
        store.validate_topic_name(name)
    with pytest.raises(InvalidTopic):
        store.create_topic(name, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["logs"]  # nothing escaped the log dir
    assert list((tmp_path / "logs").iterdir()) == []


# --- LogStore ---------------------------------------------------------------------------------


def test_create_topic_lays_out_kafka_directories(tmp_path: Path) -> None:
    store = LogStore(tmp_path, LogConfig())
    store.create_topic("orders", 3)
    store.create_topic("__consumer_offsets", 1)
    assert store.topics() == {"orders": 3, "__consumer_offsets": 1}
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "__consumer_offsets-0",
        "orders-0",
        "orders-1",
        "orders-2",
    ]
    partition = store.partition("orders", 2)
    assert partition is not None
    assert (partition.topic, partition.partition) == ("orders", 2)
    assert store.partition("orders", 3) is None
    assert store.partition("orders", -1) is None
    assert store.partition("nope", 0) is None
    store.close()


def test_create_topic_errors_create_nothing(tmp_path: Path) -> None:
    store = LogStore(tmp_path, LogConfig())
    store.create_topic("a.b", 1)
    with pytest.raises(TopicExists) as exists:
        store.create_topic("a.b", 2)
    assert exists.value.error_code is ErrorCode.TOPIC_ALREADY_EXISTS
    with pytest.raises(InvalidTopic, match="collides"):
        store.create_topic("a_b", 1)
    for partitions in (0, -1):
        with pytest.raises(InvalidPartitions) as info:
            store.create_topic("c", partitions)
        assert isinstance(info.value, ValueError)
        assert info.value.error_code is ErrorCode.INVALID_PARTITIONS
    with pytest.raises(InvalidConfig):
        store.create_topic("c", 1, {"retention.ms": "soon"})
    assert store.topics() == {"a.b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.b-0", "topics.json"]
    store.close()


def test_topics_overrides_and_data_survive_reopen(tmp_path: Path) -> None:
    config = LogConfig(retention_ms=1000)
    store = LogStore(tmp_path, config)
    store.create_topic("small", 2, {"segment.bytes": "1024", "retention.bytes": "5000"})
    store.create_topic("plain", 1)
    small = store.partition("small", 1)
    assert small is not None
    for _ in range(8):
        small.append(record_batch())
    assert len(small.segments) > 1  # rolled at the topic's 1 KiB, not the broker's 1 GiB
    store.close()
    assert (tmp_path / "small-1" / CLEAN_SHUTDOWN_MARKER).exists()
    assert not list(tmp_path.glob("*.tmp"))
    saved = json.loads((tmp_path / "topics.json").read_text())
    topic_id = store.topic_id("small")
    assert saved["topics"]["small"] == {
        "id": str(topic_id),
        "partitions": 2,
        "config": {"segment.bytes": "1024", "retention.bytes": "5000"},
    }

    reopened = LogStore(tmp_path, config)
    assert reopened.topics() == {"small": 2, "plain": 1}
    assert reopened.topic_id("small") == topic_id != reopened.topic_id("plain")
    assert reopened.topic_name(topic_id) == "small"
    assert reopened.topic_config("small") == LogConfig(
        retention_ms=1000, segment_bytes=1024, retention_bytes=5000
    )
    assert reopened.topic_config("plain") == config
    assert reopened.topic_overrides("small") == {"segment.bytes": "1024", "retention.bytes": "5000"}
    again = reopened.partition("small", 1)
    assert again is not None and again.log_end_offset == 8
    with pytest.raises(UnknownTopic) as info:
        reopened.topic_config("nope")
    assert info.value.error_code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    reopened.close()


def test_directories_without_metadata_are_discovered(tmp_path: Path) -> None:
    store = LogStore(tmp_path, LogConfig())
    store.create_topic("known", 1)
    store.close()
    (tmp_path / "stray-0").mkdir()
    (tmp_path / "stray-2").mkdir()
    (tmp_path / "not a topic-0").mkdir()
    (tmp_path / "known-1").mkdir()
    reopened = LogStore(tmp_path, LogConfig())
    assert reopened.topics() == {"known": 2, "stray": 3}
    assert json.loads((tmp_path / "topics.json").read_text())["topics"]["stray"]["partitions"] == 3
    reopened.close()


def test_topics_written_before_topic_ids_get_one_that_stays(tmp_path: Path) -> None:
    """A log dir from a broker without topic ids: each topic gets an id at the first start,
    saved at once, so Metadata v10+ and Fetch v13+ see the same id after every restart."""
    old = {"version": 1, "topics": {"old": {"partitions": 1, "config": {}}}}
    (tmp_path / "topics.json").write_text(json.dumps(old))
    store = LogStore(tmp_path, LogConfig())
    topic_id = store.topic_id("old")
    store.close()
    assert json.loads((tmp_path / "topics.json").read_text())["topics"]["old"]["id"] == str(
        topic_id
    )
    assert LogStore(tmp_path, LogConfig()).topic_id("old") == topic_id


def test_store_retention_and_flush_cover_every_partition(tmp_path: Path) -> None:
    store = LogStore(tmp_path, LogConfig(segment_bytes=1024, retention_bytes=0))
    store.create_topic("t", 2)
    for index in range(2):
        partition = store.partition("t", index)
        assert partition is not None
        for _ in range(10):
            partition.append(record_batch())
    deleted = store.enforce_retention(now_ms=0)
    assert deleted == 2 * (len(list((tmp_path / "t-0").glob("*.log.deleted"))))
    assert deleted > 0
    store.flush()
    store.close()


def test_deleted_topics_and_added_partitions_survive_reopen(tmp_path: Path) -> None:
    store = LogStore(tmp_path, LogConfig())
    store.create_topic("grown", 1)
    store.add_partitions("grown", 3)
    with pytest.raises(InvalidPartitions, match=r"already has 3 partition\(s\)"):
        store.add_partitions("grown", 3)
    store.create_topic("gone", 2)
    store.delete_topic("gone")
    assert "gone" not in store.topics()
    # A deletion cut short after its renames leaves "-delete" directories: never a topic.
    (tmp_path / "stale-0.0123-delete").mkdir()
    store.close()
    reopened = LogStore(tmp_path, LogConfig())
    assert reopened.topics() == {"grown": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "grown-0",
        "grown-1",
        "grown-2",
        "topics.json",
    ]
    reopened.close()
