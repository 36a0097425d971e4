"""What a broker is started with: ``BrokerConfig``, and the table of every broker setting.

Each setting is declared once, as a field of ``BrokerConfig`` or ``LogConfig`` made with
``setting(...)`` (``reference_broker.settings``). ``SETTINGS`` lists them all; the command line
(``__main__``), the plugin's ``BrokerOptions`` and the Kafka launcher's properties derive from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reference_broker.log import LogConfig
from reference_broker.settings import Setting, setting, settings_of

READY_PREFIX = "READY "
"""The start of the one line a broker prints once it serves: launchers wait for it."""
RESPONSE_LIMIT = 1 << 30
"""Fetch and request limits stay at or below 1 GiB, so every response fits its int32 size."""


@dataclass(frozen=True)
class BrokerConfig:
    """Everything a broker is started with (the command line maps onto this one to one)."""

    log_dir: Path
    host: str = setting("127.0.0.1", "address to bind")
    port: int = setting(0, "Kafka port; 0 picks a free one")
    metrics_port: int | None = setting(
        0, "Prometheus/JSON metrics port; 0 picks a free one, -1 disables", local_only=True
    )
    metrics_host: str = setting(
        "127.0.0.1",
        "address of the metrics endpoint, whatever --host is: the broker has no "
        "authentication, so exposing it is a separate decision",
        local_only=True,
    )
    copy: bool = setting(
        False,
        "ship fetched records by pread+send instead of sendfile (to measure zero-copy)",
        local_only=True,
    )
    tls_cert: Path | None = None  # PEM certificate: serve TLS (which always copies)
    tls_key: Path | None = None
    log: LogConfig = field(default_factory=LogConfig)
    auto_create_topics: bool = setting(
        True, "create unknown topics on Metadata and Produce", kafka="auto.create.topics.enable"
    )
    num_partitions: int = setting(1, "partitions of auto-created topics", kafka="num.partitions")
    max_request_bytes: int = setting(
        100 * 1024 * 1024, "largest request frame accepted", kafka="socket.request.max.bytes"
    )
    queued_max_request_bytes: int = setting(
        256 * 1024 * 1024,
        "memory all connections' request buffers may hold together; a "
        "connection whose next frame does not fit is not read until memory frees up (Kafka: "
        "unbounded by default; here at least --max-request-bytes)",
        kafka="queued.max.request.bytes",
    )
    connections_max_idle_ms: int = setting(
        600_000,
        "close connections that send nothing for this long",
        kafka="connections.max.idle.ms",
    )
    max_connections: int | None = setting(
        None,
        "open client connections at most; new ones over it are closed at once (default: "
        "half the open-file limit, keeping the rest for segments)",
        kafka="max.connections",
    )
    max_connections_per_ip: int | None = setting(
        None,
        "open connections per client address at most (default: only --max-connections applies)",
        kafka="max.connections.per.ip",
    )
    fetch_max_bytes: int = setting(
        57_671_680,
        "record bytes per fetch response at most, whatever the request asks; the "
        "first batch is whole even if larger (KIP-74)",
        kafka="fetch.max.bytes",
    )
    max_created_partitions_per_request: int = setting(
        1_000,
        "partitions one CreateTopics request may create (more: POLICY_VIOLATION), and "
        "auto-creation may create per Metadata or Produce request (the topics beyond get the "
        "retriable LEADER_NOT_AVAILABLE); creation runs on the event loop",
        local_only=True,
    )
    tail_window_bytes: int = setting(
        64 * 1024 * 1024,
        "fetches starting within this many bytes of the log end count as tail reads (metrics)",
        local_only=True,
    )
    node_id: int = 0
    retention_check_interval_ms: int = setting(
        5_000, "how often retention runs", kafka="log.retention.check.interval.ms"
    )
    group_min_session_timeout_ms: int = setting(
        1_000,
        "smallest session timeout a group member may ask for",
        kafka="group.min.session.timeout.ms",
    )
    group_max_session_timeout_ms: int = setting(
        1_800_000,
        "largest session timeout a group member may ask for",
        kafka="group.max.session.timeout.ms",
    )
    group_initial_rebalance_delay_ms: int = setting(
        0,
        "how long a new group waits for more members before its first rebalance",
        kafka="group.initial.rebalance.delay.ms",
    )
    warm_history_fetches: bool = setting(
        False,
        "read a history fetch's range into the page cache on a worker thread before the event "
        "loop sends it, so a cold read delays that fetch only, not every connection "
        "(KAFKA-7504's proposed mitigation; reference_broker/warm.py)",
        local_only=True,
    )
    offsets_topic_num_partitions: int = setting(
        50,
        "partitions of __consumer_offsets when it is created (an existing one keeps its count)",
        kafka="offsets.topic.num.partitions",
    )
    fetch_slowdown: float = setting(
        1.0,
        "make every fetch response with records take factor times as long, by waiting "
        "(factor - 1) times as long as the last response took to send: a deliberate "
        "regression, for testing that comparisons catch one (1: off)",
        local_only=True,
    )

    def __post_init__(self) -> None:
        """Refuse incoherent limits (ValueError naming the flag) rather than misbehave later."""
        at_least_one = {
            "--max-request-bytes": self.max_request_bytes,
            "--connections-max-idle-ms": self.connections_max_idle_ms,
            "--max-connections": self.max_connections,
            "--max-connections-per-ip": self.max_connections_per_ip,
            "--max-created-partitions-per-request": self.max_created_partitions_per_request,
            "--offsets-topic-num-partitions": self.offsets_topic_num_partitions,
        }
        for flag, value in at_least_one.items():
            if value is not None and value < 1:
                raise ValueError(f"{flag} must be at least 1, not {value}")
        # A response holds at most fetch.max.bytes plus one batch (itself within one request),
        # so keeping both at or below 1 GiB keeps every response within its int32 size field.
        if not 1024 <= self.fetch_max_bytes <= RESPONSE_LIMIT:
            raise ValueError(f"--fetch-max-bytes must be in [1024, {RESPONSE_LIMIT}]")
        if self.max_request_bytes > RESPONSE_LIMIT:
            raise ValueError(f"--max-request-bytes must be at most {RESPONSE_LIMIT}")
        if self.queued_max_request_bytes < self.max_request_bytes:
            raise ValueError(
                "--queued-max-request-bytes must be at least --max-request-bytes, "
                "or the largest frame could never be read"
            )
        if self.num_partitions > self.max_created_partitions_per_request:
            raise ValueError(
                "--num-partitions must be at most "
                "--max-created-partitions-per-request, or no topic is auto-created"
            )
        if self.fetch_slowdown < 1:
            raise ValueError(f"--fetch-slowdown must be >= 1, not {self.fetch_slowdown}")

    @property
    def transmit_mode(self) -> str:
        """``tls`` when TLS is on (it always copies), else ``copy`` or ``zerocopy``."""
        if self.tls_cert is not None:
            return "tls"
        return "copy" if self.copy else "zerocopy"


SETTINGS: dict[str, Setting] = {
    s.name: s for s in settings_of(LogConfig, "log") + settings_of(BrokerConfig, "broker")
}
"""Every broker setting by name: the one table the command line and the plugin derive from."""
