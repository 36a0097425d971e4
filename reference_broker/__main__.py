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
from collections.abc import Sequence
from pathlib import Path

from reference_broker.config import READY_PREFIX, SETTINGS, BrokerConfig
from reference_broker.log import LogConfig
from reference_broker.server import Broker
from reference_broker.settings import Setting


def _broker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reference-broker",
        description="A Kafka-compatible broker that serves fetches with sendfile from the page "
        "cache. Subcommand: 'groups --metrics URL' prints consumer lag.",
    )
    add = parser.add_argument
    add("--log-dir", type=Path, required=True, help="directory holding topics and segments")
    add("--tls-cert", type=Path, help="PEM certificate: serve TLS (which always copies)")
    add("--tls-key", type=Path, help="PEM private key for --tls-cert")
    add("--log-level", default="WARNING", help="Python logging level for stderr")
    for item in SETTINGS.values():
        _add_setting(parser, item)
    parser.set_defaults(port=9092)  # a broker started by hand listens where Kafka would
    return parser


def _add_setting(parser: argparse.ArgumentParser, item: Setting) -> None:
    """One setting's flag: booleans switch their default off or on, the rest take a value."""
    kafka = f" (Kafka: {item.kafka})" if item.kafka else ""
    if isinstance(item.default, bool):
        flag = item.flag if not item.default else "--no-" + item.flag.removeprefix("--")
        parser.add_argument(
            flag,
            dest=item.name,
            action="store_const",
            const=not item.default,
            default=item.default,
            help=item.help + kafka,
        )
        return
    convert = type(item.default) if item.default is not None else int
    parser.add_argument(
        item.flag,
        dest=item.name,
        type=convert,
        default=item.default,
        choices=item.choices,
        help=f"{item.help}{kafka} (default {item.default})",
    )


def config_from_args(args: argparse.Namespace) -> BrokerConfig:
    """Map parsed arguments onto a ``BrokerConfig``, rejecting incoherent combinations."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("error: --tls-cert and --tls-key go together")
    if args.copy and args.tls_cert:
        raise SystemExit("error: --copy is implied by TLS; give one or the other")
    values = {name: getattr(args, name) for name in SETTINGS}
    if values["metrics_port"] is not None and values["metrics_port"] < 0:
        values["metrics_port"] = None
    try:
        log_config = LogConfig(**{n: v for n, v in values.items() if SETTINGS[n].scope == "log"})
        return BrokerConfig(
            log_dir=args.log_dir,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            log=log_config,
            **{n: v for n, v in values.items() if SETTINGS[n].scope == "broker"},
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
        if broker.metrics_port
        else None,
        "pid": os.getpid(),
        "log_dir": str(config.log_dir),
        "transmit": config.transmit_mode,
    }
    print(READY_PREFIX + json.dumps(ready), flush=True)
    await stop.wait()
    await broker.stop()


def groups_main(argv: Sequence[str]) -> int:
    """Print the consumer-lag view read from a running broker's metrics endpoint."""
    import urllib.request  # here, not at the top: it would add ~15 ms to every broker start

    parser = argparse.ArgumentParser(prog="reference-broker groups")
    parser.add_argument(
        "--metrics", required=True, help="the broker's metrics URL, as printed in its READY line"
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    url = args.metrics.removesuffix("/metrics").removesuffix(".json") + "/metrics.json"
    with urllib.request.urlopen(url, timeout=10) as response:
        snapshot = json.load(response)
    rows: dict[tuple[str, str, int], dict[str, float]] = {}
    for metric, column in (
        ("logbench_consumer_group_lag_records", "lag_records"),
        ("logbench_consumer_group_lag_bytes", "lag_bytes"),
    ):
        for sample in snapshot.get(metric, []):
            labels = sample["labels"]
            key = (labels["group"], labels["topic"], int(labels["partition"]))
            rows.setdefault(key, {})[column] = sample["value"]
    table = [
        {"group": g, "topic": t, "partition": p, **values}
        for (g, t, p), values in sorted(rows.items())
    ]
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'GROUP':<24} {'TOPIC':<24} {'PART':>4} {'LAG RECORDS':>12} {'LAG BYTES':>14}")
    for row in table:
        print(
            f"{row['group']:<24} {row['topic']:<24} {row['partition']:>4} "
            f"{int(row.get('lag_records', 0)):>12} {int(row.get('lag_bytes', 0)):>14}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["groups"]:
        return groups_main(argv[1:])
    args = _broker_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = config_from_args(args)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
