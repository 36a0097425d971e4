"""``python -m pytest_logbench kafka fetch``: cache the pinned Apache Kafka's jars (CI runs
it once, so no test waits for a download)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_logbench")
    commands = parser.add_subparsers(dest="command", required=True)
    kafka = commands.add_parser("kafka", help="the Apache Kafka broker of logbench")
    kafka_commands = kafka.add_subparsers(dest="action", required=True)
    kafka_commands.add_parser("fetch", help="fetch the pinned Kafka's jars into the cache")
    kafka_commands.add_parser("home", help="print where the jars are cached")
    args = parser.parse_args(argv)

    from pytest_logbench.kafka import jars

    if args.action == "home":
        print(jars.kafka_home())
        return 0
    try:
        print(jars.fetch())
    except jars.KafkaUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
