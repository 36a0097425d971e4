"""All topics of a broker: ``<topic>-<partition>`` directories under one log dir, as Kafka lays
them out, plus one small JSON file with each topic's id, partition count and config overrides."""

import json
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from reference_broker.log.config import LogConfig
from reference_broker.log.errors import InvalidPartitions, InvalidTopic, TopicExists, UnknownTopic
from reference_broker.log.files import fsync_directory, replace_file
from reference_broker.log.partition import PartitionLog
from reference_broker.log.producer_ids import PRODUCER_ID_BLOCK_FILE, ProducerIds

TOPICS_FILE = "topics.json"
DELETING_SUFFIX = "-delete"  # a deleted topic's partition directory, until it is removed
MAX_TOPIC_NAME_LENGTH = 249
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")


def validate_topic_name(name: str) -> None:
    """Kafka's rule: 1-249 of [a-zA-Z0-9._-], not "." or "..".

    The same rule keeps every name a single, harmless path component: no topic directory can
    land outside the log dir.
    """
    if not isinstance(name, str) or not name:
        raise InvalidTopic("topic name is empty")
    if name in (".", ".."):
        raise InvalidTopic(f"topic name cannot be {name!r}")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidTopic(
            f"topic name is {len(name)} characters, the maximum is {MAX_TOPIC_NAME_LENGTH}"
        )
    if not _TOPIC_NAME.fullmatch(name):
        raise InvalidTopic(f"topic name {name!r} has characters other than [a-zA-Z0-9._-]")


@dataclass
class _Topic:
    config: LogConfig
    partitions: list[PartitionLog]
    topic_id: uuid.UUID


class LogStore:
    """The topics of one broker, discovered (and recovered) at start-up."""

    validate_topic_name = staticmethod(validate_topic_name)

    def __init__(self, log_dir: Path | str, config: LogConfig) -> None:
        """Open every topic found in ``topics.json`` or as a ``<topic>-<n>`` directory.

        Directories without a ``topics.json`` entry (e.g. a crash between writing the file and
        creating them, or copied in by hand) become topics with default config.
        """
        self.log_dir = Path(log_dir)
        self.config = config
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for path in self.log_dir.glob(f"*{DELETING_SUFFIX}"):
            shutil.rmtree(path)  # a topic deletion interrupted after its renames
        # name -> {"id": uuid, "partitions": n, "config": {...}}: the contents of topics.json
        self._metadata = self._read_metadata()
        changed = False  # a new, empty log dir gets its file with its first topic
        for name, count in self._discover().items():
            entry = self._metadata.setdefault(name, {"partitions": 0, "config": {}})
            if count > entry["partitions"]:
                entry["partitions"] = count
                changed = True
        for entry in self._metadata.values():
            if "id" not in entry:  # written before topics had ids
                entry["id"] = str(uuid.uuid4())
                changed = True
        self._ids = {uuid.UUID(entry["id"]): name for name, entry in self._metadata.items()}
        if changed:
            self._write_metadata()
        self._topics: dict[str, _Topic] = {}
        for name in self._metadata:
            self._open_topic(name)
        seen = max((log.producer_states.max_producer_id for log in self._logs()), default=-1)
        self.producer_ids = ProducerIds(self.log_dir / PRODUCER_ID_BLOCK_FILE, seen + 1)

    def _read_metadata(self) -> dict[str, dict]:
        try:
            text = (self.log_dir / TOPICS_FILE).read_text()
        except FileNotFoundError:
            return {}
        topics = json.loads(text)["topics"]
        for name in topics:
            validate_topic_name(name)  # a hand-edited name must not escape the log dir either
        return topics

    def _discover(self) -> dict[str, int]:
        """Partition counts implied by the ``<topic>-<partition>`` directories."""
        counts: dict[str, int] = {}
        for path in self.log_dir.iterdir():
            name, _, number = path.name.rpartition("-")
            if not (path.is_dir() and number.isdigit()):
                continue
            try:
                validate_topic_name(name)
            except InvalidTopic:
                continue
            counts[name] = max(counts.get(name, 0), int(number) + 1)
        return counts

    def _open_topic(self, name: str) -> None:
        entry = self._metadata[name]
        config = self.config.with_overrides(entry["config"])
        logs = [
            PartitionLog(self.log_dir / f"{name}-{i}", config, topic=name, partition=i)
            for i in range(entry["partitions"])
        ]
        self._topics[name] = _Topic(config, logs, uuid.UUID(entry["id"]))

    def _write_metadata(self) -> None:
        """Replace ``topics.json`` atomically: temp file, fsync, rename, fsync the directory."""
        text = json.dumps({"version": 1, "topics": self._metadata}, indent=1, sort_keys=True)
        replace_file(self.log_dir / TOPICS_FILE, text, fsync=True)
        fsync_directory(self.log_dir)

    def create_topic(
        self, name: str, partitions: int, overrides: dict[str, str] | None = None
    ) -> None:
        """Create a topic's partition logs; its overrides apply on top of the broker config.

        Raises InvalidTopic (also for a name that differs from an existing one only in '.'
        versus '_', which Kafka refuses since metric names would collide), InvalidPartitions,
        TopicExists or InvalidConfig; nothing is created then.
        """
        validate_topic_name(name)
        if type(partitions) is not int or partitions < 1:
            raise InvalidPartitions(f"a topic needs at least 1 partition, not {partitions!r}")
        if name in self._topics:
            raise TopicExists(f"topic {name!r} already exists")
        collides = [t for t in self._topics if t.replace(".", "_") == name.replace(".", "_")]
        if collides:
            raise InvalidTopic(f"topic {name!r} collides with existing topic {collides[0]!r}")
        self.config.with_overrides(overrides or {})  # raises InvalidConfig before any change
        # topics.json first: after a crash before the directories exist, the next start
        # creates them with the right config (directories alone would get the defaults).
        topic_id = uuid.uuid4()
        self._metadata[name] = {
            "id": str(topic_id),
            "partitions": partitions,
            "config": dict(overrides or {}),
        }
        try:
            self._write_metadata()
        except OSError:
            del self._metadata[name]
            raise
        self._ids[topic_id] = name
        self._open_topic(name)

    def add_partitions(self, name: str, count: int, *, validate_only: bool = False) -> None:
        """Grow a topic to ``count`` partitions (CreatePartitions); existing ones are untouched.

        Raises UnknownTopic, or InvalidPartitions unless ``count`` is above the current count
        (Kafka's messages). ``topics.json`` is written first, as in create_topic.
        """
        topic = self._topic(name)
        current = len(topic.partitions)
        if type(count) is not int or count < current:
            raise InvalidPartitions(
                f"Topic currently has {current} partition(s), more than the {count} requested"
            )
        if count == current:
            raise InvalidPartitions(f"Topic already has {current} partition(s).")
        if validate_only:
            return
        entry = self._metadata[name]
        entry["partitions"] = count
        try:
            self._write_metadata()
        except OSError:
            entry["partitions"] = current
            raise
        topic.partitions += [
            PartitionLog(self.log_dir / f"{name}-{i}", topic.config, topic=name, partition=i)
            for i in range(current, count)
        ]

    def alter_topic_config(
        self, name: str, overrides: dict[str, str], *, validate_only: bool = False
    ) -> None:
        """Replace the topic's config overrides (all of them: what is not named takes the
        broker's value again). Applies at once to every partition: the next append, roll and
        retention pass use it. Raises UnknownTopic or InvalidConfig before any change."""
        topic = self._topic(name)
        config = self.config.with_overrides(overrides)
        if validate_only:
            return
        entry = self._metadata[name]
        previous, entry["config"] = entry["config"], dict(overrides)
        try:
            self._write_metadata()
        except OSError:
            entry["config"] = previous
            raise
        topic.config = config
        for log in topic.partitions:
            log.config = config

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data (DeleteTopics).

        Each partition is closed and its directory renamed to ``...-delete`` before
        ``topics.json`` forgets the topic, then removed: a crash in between leaves either the
        topic, empty, or nothing, never a topic brought back from its directories with default
        configs. A fetch still sending from the topic's files fails on its connection.
        """
        topic = self._topic(name)
        entry = self._metadata[name]
        for log in topic.partitions:
            log.close()
        doomed = []
        for log in topic.partitions:
            target = log.directory.with_name(f"{log.directory.name}.{entry['id']}{DELETING_SUFFIX}")
            log.directory.rename(target)
            doomed.append(target)
        fsync_directory(self.log_dir)
        del self._metadata[name], self._topics[name], self._ids[topic.topic_id]
        self._write_metadata()
        for path in doomed:
            shutil.rmtree(path)

    def topics(self) -> dict[str, int]:
        """Topic name -> partition count."""
        return {name: len(topic.partitions) for name, topic in self._topics.items()}

    def topic_id(self, name: str) -> uuid.UUID:
        """The topic's id (Kafka's topic UUID): random (a v4 UUID is never the zero UUID that
        means "no id" on the wire), made at creation and kept in ``topics.json``, so it stays
        the same across restarts and a re-created topic of the same name differs."""
        return self._topic(name).topic_id

    def topic_name(self, topic_id: uuid.UUID) -> str | None:
        """The name of the topic with this id, or None (Kafka's UNKNOWN_TOPIC_ID)."""
        return self._ids.get(topic_id)

    def partition(self, topic: str, index: int) -> PartitionLog | None:
        found = self._topics.get(topic)
        if found is None or not 0 <= index < len(found.partitions):
            return None
        return found.partitions[index]

    def _topic(self, name: str) -> _Topic:
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopic(f"unknown topic {name!r}") from None

    def topic_config(self, name: str) -> LogConfig:
        return self._topic(name).config

    def topic_overrides(self, name: str) -> dict[str, str]:
        """The topic configs set at creation (for DescribeConfigs' "is default" flags)."""
        self._topic(name)
        return dict(self._metadata[name]["config"])

    def _logs(self) -> list[PartitionLog]:
        return [log for topic in self._topics.values() for log in topic.partitions]

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Apply retention to every partition; return the number of segments deleted."""
        return sum(log.enforce_retention(now_ms) for log in self._logs())

    def flush(self) -> None:
        for log in self._logs():
            log.flush()

    def close(self) -> None:
        """Close every partition cleanly (each leaves its clean-shutdown marker)."""
        for log in self._logs():
            log.close()
