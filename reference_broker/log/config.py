"""Log settings: broker-wide defaults plus Kafka-style per-topic overrides."""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from reference_broker.log.errors import InvalidConfig
from reference_broker.settings import setting

FsyncPolicy = Literal["never", "interval", "always"]

DAY_MS = 24 * 60 * 60 * 1000
INT32_MAX = 2**31 - 1
LONG_MAX = 2**63 - 1
"""Kafka's "unset" for flush.messages and flush.ms."""
MIN_SEGMENT_BYTES = 1024

# Kafka topic config name -> LogConfig field, for the keys that map one to one.
_TOPIC_KEYS = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "retention.bytes": "retention_bytes",
    "retention.ms": "retention_ms",
    "max.message.bytes": "max_message_bytes",
    "index.interval.bytes": "index_interval_bytes",
    "file.delete.delay.ms": "file_delete_delay_ms",
}
# Accepted so that clients sending the defaults explicitly are not refused.
_FIXED_KEYS = {"cleanup.policy": "delete", "message.timestamp.type": "CreateTime"}


@dataclass(frozen=True)
class LogConfig:
    """How a partition's log rolls, indexes, syncs and expires its segments.

    ``segment_bytes`` goes down to 1 KiB so tests can roll often (Kafka's floor is 14 bytes,
    its practical minimum far larger) and up to 2 GiB - 1, since offset index positions are
    int32. ``fsync``: "never" leaves durability to the page cache (Kafka's default), "interval"
    syncs on an append when the last sync is older than ``fsync_interval_ms``, "always" syncs
    before an append returns.
    """

    segment_bytes: int = setting(
        1 << 30, "roll to a new segment at this size", kafka="log.segment.bytes"
    )
    index_interval_bytes: int = setting(
        4096, "bytes between offset index entries", kafka="log.index.interval.bytes"
    )
    retention_bytes: int = setting(
        -1, "per partition; -1 keeps everything", kafka="log.retention.bytes"
    )
    retention_ms: int = setting(7 * DAY_MS, "-1 keeps forever", kafka="log.retention.ms")
    segment_ms: int = setting(7 * DAY_MS, "roll a segment older than this", kafka="log.roll.ms")
    fsync: FsyncPolicy = setting(
        "never",
        "never (Kafka's default: the page cache holds it), interval, or always "
        "(before the produce is acknowledged)",
        choices=("never", "interval", "always"),
    )
    fsync_interval_ms: int = setting(
        1000,
        "with --fsync interval: sync when the last sync is older than this",
        kafka="log.flush.interval.ms",
    )
    max_message_bytes: int = setting(
        1048588, "largest record batch accepted", kafka="message.max.bytes"
    )
    file_delete_delay_ms: int = setting(
        60000, "close deleted segments after this delay", kafka="log.segment.delete.delay.ms"
    )

    def __post_init__(self) -> None:
        for name, low, high in (
            ("segment_bytes", MIN_SEGMENT_BYTES, INT32_MAX),
            ("index_interval_bytes", 0, INT32_MAX),
            ("retention_bytes", -1, LONG_MAX),
            ("retention_ms", -1, LONG_MAX),
            ("segment_ms", 1, LONG_MAX),
            ("fsync_interval_ms", 0, LONG_MAX),
            ("max_message_bytes", 0, INT32_MAX),
            ("file_delete_delay_ms", 0, LONG_MAX),
        ):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise InvalidConfig(f"{name} must be an integer in [{low}, {high}], not {value!r}")
        if self.fsync not in ("never", "interval", "always"):
            raise InvalidConfig(f"fsync must be never, interval or always, not {self.fsync!r}")

    def with_overrides(self, overrides: Mapping[str, str | None]) -> "LogConfig":
        """This config with Kafka topic configs applied (as CreateTopics carries them).

        Besides the one-to-one keys, ``flush.messages`` = 1 means fsync "always" and
        ``flush.ms`` = N means fsync "interval" every N ms (Kafka's Long.MAX_VALUE default of
        either leaves the policy alone); other flush.messages values have no equivalent here.
        """
        changes: dict[str, object] = {}
        for key, text in overrides.items():
            if key in _FIXED_KEYS:
                if text != _FIXED_KEYS[key]:
                    raise InvalidConfig(f"{key} supports only {_FIXED_KEYS[key]!r}, not {text!r}")
            elif key in _TOPIC_KEYS:
                changes[_TOPIC_KEYS[key]] = _parse_int(key, text)
            elif key == "flush.messages":
                count = _parse_int(key, text)
                if count == 1:
                    changes["fsync"] = "always"
                elif count != LONG_MAX:
                    raise InvalidConfig(f"flush.messages supports 1 or {LONG_MAX}, not {count}")
            elif key == "flush.ms":
                interval = _parse_int(key, text)
                if interval != LONG_MAX:
                    changes["fsync_interval_ms"] = interval
                    if changes.get("fsync", self.fsync) != "always":
                        changes["fsync"] = "interval"
            else:
                raise InvalidConfig(f"unknown or unsupported topic config {key!r}")
        try:
            return replace(self, **changes)
        except InvalidConfig as exc:
            raise InvalidConfig(f"topic configs {dict(overrides)}: {exc}") from None

    def topic_configs(self) -> dict[str, str]:
        """The Kafka topic config names and values in force (for DescribeConfigs)."""
        configs = {key: str(getattr(self, name)) for key, name in _TOPIC_KEYS.items()}
        configs |= _FIXED_KEYS
        configs["flush.messages"] = str(1 if self.fsync == "always" else LONG_MAX)
        configs["flush.ms"] = str(self.fsync_interval_ms if self.fsync == "interval" else LONG_MAX)
        return configs


def _parse_int(key: str, text: str | None) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise InvalidConfig(f"{key} must be an integer, not {text!r}") from None
