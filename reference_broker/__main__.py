"""Command line: ``python -m reference_broker --log-dir D --port 0`` (or ``reference-broker``).

Once the broker accepts connections it prints one line to stdout that launchers parse:

    READY {"bootstrap": "127.0.0.1:40123", "metrics": "http://127.0.0.1:40124/metrics", ...}

``python -m reference_broker groups --metrics URL`` prints the consumer-lag view of a running
broker (committed offset, log end offset, lag in records and bytes per group and partition).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from reference_broker.log import LogConfig
from reference_broker.server import Broker, BrokerConfig

READY_PREFIX = "READY "


def _broker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reference-broker",
        description="A Kafka-compatible broker that serves fetches with sendfile from the page "
        "cache. Subcommand: 'groups --metrics URL' prints consumer lag.",
    )
    add = parser.add_argument
    add("--log-dir", type=Path, required=True, help="directory holding topics and segments")
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, default=9092, help="Kafka port; 0 picks a free one (default 9092)")
    add("--metrics-port", type=int, default=0,
        help="Prometheus/JSON metrics port; 0 picks a free one, -1 disables (default 0)")
    add("--metrics-host", default="127.0.0.1",
        help="address of the metrics endpoint (default 127.0.0.1, whatever --host is: the "
        "broker has no authentication, so exposing it is a separate decision)")
    add("--copy", action="store_true",
        help="ship fetched records by pread+send instead of sendfile (to measure zero-copy)")
    add("--tls-cert", type=Path, help="PEM certificate: serve TLS (which always copies)")
    add("--tls-key", type=Path, help="PEM private key for --tls-cert")
    defaults = LogConfig()
    add("--segment-bytes", type=int, default=defaults.segment_bytes)
    add("--index-interval-bytes", type=int, default=defaults.index_interval_bytes)
    add("--retention-bytes", type=int, default=defaults.retention_bytes,
        help="per partition; -1 keeps everything")
    add("--retention-ms", type=int, default=defaults.retention_ms, help="-1 keeps forever")
    add("--segment-ms", type=int, default=defaults.segment_ms)
    add("--max-message-bytes", type=int, default=defaults.max_message_bytes)
    add("--fsync", choices=["never", "interval", "always"], default=defaults.fsync,
        help="never (Kafka's default: the page cache holds it), interval, or always (before "
        "the produce is acknowledged)")
    add("--fsync-interval-ms", type=int, default=defaults.fsync_interval_ms)
    add("--no-auto-create-topics", action="store_true")
    add("--num-partitions", type=int, default=1, help="partitions of auto-created topics")
    defaults_broker = BrokerConfig(log_dir=Path())
    add("--max-request-bytes", type=int, default=defaults_broker.max_request_bytes,
        help="largest request frame accepted (Kafka: socket.request.max.bytes)")
    add("--queued-max-request-bytes", type=int,
        default=defaults_broker.queued_max_request_bytes,
        help="memory all connections' request buffers may hold together; a connection whose "
        "next frame does not fit is not read until memory frees up (Kafka: "
        "queued.max.request.bytes, unbounded by default there; here at least "
        "--max-request-bytes, default %(default)s)")
    add("--connections-max-idle-ms", type=int, default=defaults_broker.connections_max_idle_ms,
        help="close connections that send nothing for this long (Kafka: "
        "connections.max.idle.ms, default %(default)s)")
    add("--max-connections", type=int, default=None,
        help="open client connections at most; new ones over it are closed at once (Kafka: "
        "max.connections; default: half the open-file limit, keeping the rest for segments)")
    add("--max-connections-per-ip", type=int, default=None,
        help="open connections per client address at most (Kafka: max.connections.per.ip; "
        "default: only --max-connections applies)")
    add("--fetch-max-bytes", type=int, default=defaults_broker.fetch_max_bytes,
        help="record bytes per fetch response at most, whatever the request asks; the first "
        "batch is whole even if larger (KIP-74) (Kafka: fetch.max.bytes, default %(default)s)")
    add("--max-created-partitions-per-request", type=int,
        default=defaults_broker.max_created_partitions_per_request,
        help="partitions one CreateTopics request may create (more: POLICY_VIOLATION), and "
        "auto-creation may create per Metadata or Produce request (the topics beyond get the "
        "retriable LEADER_NOT_AVAILABLE); creation runs on the event loop (default %(default)s)")
    add("--tail-window-bytes", type=int, default=64 * 1024 * 1024,
        help="fetches starting within this many bytes of the log end count as tail reads")
    add("--retention-check-interval-ms", type=int, default=5_000)
    add("--group-min-session-timeout-ms", type=int, default=1_000)
    add("--group-initial-rebalance-delay-ms", type=int, default=0)
    add("--fetch-slowdown", type=float, default=1.0,
        help="stretch every fetch's send time by this factor: a deliberate regression for "
        "testing that performance comparisons catch one (default 1: off)")
    add("--log-level", default="WARNING", help="Python logging level for stderr")
    return parser


def config_from_args(args: argparse.Namespace) -> BrokerConfig:
    """Map parsed arguments onto a ``BrokerConfig``, rejecting incoherent combinations."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("error: --tls-cert and --tls-key go together")
    if args.copy and args.tls_cert:
        raise SystemExit("error: --copy is implied by TLS; give one or the other")
    try:
        log_config = LogConfig(
            segment_bytes=args.segment_bytes, index_interval_bytes=args.index_interval_bytes,
            retention_bytes=args.retention_bytes, retention_ms=args.retention_ms,
            segment_ms=args.segment_ms, max_message_bytes=args.max_message_bytes,
            fsync=args.fsync, fsync_interval_ms=args.fsync_interval_ms,
        )
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    try:
        return BrokerConfig(
            log_dir=args.log_dir, host=args.host, port=args.port,
            metrics_port=None if args.metrics_port < 0 else args.metrics_port,
            metrics_host=args.metrics_host,
            queued_max_request_bytes=args.queued_max_request_bytes,
            connections_max_idle_ms=args.connections_max_idle_ms,
            max_connections=args.max_connections,
            max_connections_per_ip=args.max_connections_per_ip,
            fetch_max_bytes=args.fetch_max_bytes,
            max_created_partitions_per_request=args.max_created_partitions_per_request,
            copy=args.copy, tls_cert=args.tls_cert, tls_key=args.tls_key, log=log_config,
            auto_create_topics=not args.no_auto_create_topics, num_partitions=args.num_partitions,
            max_request_bytes=args.max_request_bytes, tail_window_bytes=args.tail_window_bytes,
            retention_check_interval_ms=args.retention_check_interval_ms,
            group_min_session_timeout_ms=args.group_min_session_timeout_ms,
            group_initial_rebalance_delay_ms=args.group_initial_rebalance_delay_ms,
            fetch_slowdown=args.fetch_slowdown,
        )
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc


async def run(config: BrokerConfig) -> None:
    """Start the broker, print the READY line, and serve until SIGTERM or SIGINT."""
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ready = {
        "bootstrap": f"{broker.host}:{broker.port}",
        "metrics": f"http://{config.metrics_host}:{broker.metrics_port}/metrics"
        if broker.metrics_port else None,
        "pid": os.getpid(),
        "log_dir": str(config.log_dir),
        "transmit": config.transmit_mode,
    }
    print(READY_PREFIX + json.dumps(ready), flush=True)
    await stop.wait()
    await broker.stop()


def groups_main(argv: Sequence[str]) -> int:
    """Print the consumer-lag view read from a running broker's metrics endpoint."""
    parser = argparse.ArgumentParser(prog="reference-broker groups")
    parser.add_argument("--metrics", required=True,
                        help="the broker's metrics URL, as printed in its READY line")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    url = args.metrics.removesuffix("/metrics").removesuffix(".json") + "/metrics.json"
    with urllib.request.urlopen(url, timeout=10) as response:
        snapshot = json.load(response)
    rows: dict[tuple[str, str, int], dict[str, float]] = {}
    for metric, column in (("logbench_consumer_group_lag_records", "lag_records"),
                           ("logbench_consumer_group_lag_bytes", "lag_bytes")):
        for sample in snapshot.get(metric, []):
            labels = sample["labels"]
            key = (labels["group"], labels["topic"], int(labels["partition"]))
            rows.setdefault(key, {})[column] = sample["value"]
    table = [{"group": g, "topic": t, "partition": p, **values}
             for (g, t, p), values in sorted(rows.items())]
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'GROUP':<24} {'TOPIC':<24} {'PART':>4} {'LAG RECORDS':>12} {'LAG BYTES':>14}")
    for row in table:
        print(f"{row['group']:<24} {row['topic']:<24} {row['partition']:>4} "
              f"{int(row.get('lag_records', 0)):>12} {int(row.get('lag_bytes', 0)):>14}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["groups"]:
        return groups_main(argv[1:])
    args = _broker_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
