"""Burrow, LinkedIn's lag monitor, reads consumer lag from the reference broker the way it
reads it from Kafka: by consuming ``__consumer_offsets`` and decoding Kafka's record layout
(offset commit key version 1, value version 3), then comparing with the partitions' ends.

Burrow 1.2.1 and ZooKeeper (for Burrow's own locking) are Debian's packages; without them the
test skips, naming what is missing. It takes tens of seconds (two programs start, and Burrow
subscribes to the offsets partitions one fetch round at a time), so it is slow.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_logbench.brokers import die_with_parent
from pytest_logbench.client import HarnessClient
from pytest_logbench.kafka.broker import free_ports
from tests.kafka_clients import produce

BURROW = Path("/usr/bin/Burrow")
ZOOKEEPER = Path("/usr/share/zookeeper/bin/zkServer.sh")
DEADLINE_S = 120.0

pytestmark = pytest.mark.slow


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_zookeeper(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until ZooKeeper serves: its port opens before it does, and a client connecting in
    between (Burrow) fails its session and gives up. ``srvr`` names the mode once it serves."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(b"srvr")
                if b"Mode: standalone" in client.recv(4096):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(
        f"ZooKeeper not serving on {port} after {DEADLINE_S:.0f}s: {log.read_text()}"
    )


@pytest.fixture
def zookeeper(tmp_path: Path) -> Iterator[int]:
    if not ZOOKEEPER.exists():
        pytest.skip(f"ZooKeeper is not installed ({ZOOKEEPER}: apt-get install zookeeper)")
    [port] = free_ports(1)
    config = tmp_path / "zoo.cfg"
    config.write_text(
        f"tickTime=2000\ndataDir={tmp_path / 'zk-data'}\nclientPort={port}\n"
        "admin.enableServer=false\n4lw.commands.whitelist=srvr\n"
    )
    log = tmp_path / "zookeeper.log"
    process = spawn([str(ZOOKEEPER), "start-foreground", str(config)], log)
    try:
        wait_for_zookeeper(port, process, log)
        yield port
    finally:
        stop(process)


def burrow_config(bootstrap: str, zookeeper_port: int, http_port: int, directory: Path) -> str:
    return f"""
[general]
pidfile="{directory / "burrow.pid"}"
[logging]
filename="{directory / "burrow.log"}"
level="info"
[zookeeper]
servers=["127.0.0.1:{zookeeper_port}"]
timeout=6
root-path="/burrow"
[client-profile.logbench]
client-id="burrow-logbench"
kafka-version="2.0.0"
[cluster.logbench]
class-name="kafka"
servers=["{bootstrap}"]
client-profile="logbench"
topic-refresh=2
offset-refresh=1
[consumer.logbench]
class-name="kafka"
cluster="logbench"
servers=["{bootstrap}"]
client-profile="logbench"
start-latest=false
[httpserver.default]
address="127.0.0.1:{http_port}"
[storage.default]
class-name="inmemory"
workers=2
intervals=10
expire-group=604800
min-distance=1
"""


def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def total_lag(http_port: int, group: str) -> int | None:
    """Burrow's total lag of ``group``, or None while Burrow does not know the group."""
    url = f"http://127.0.0.1:{http_port}/v3/kafka/logbench/consumer/{group}/lag"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.load(response)
    except OSError:  # not listening yet, or 404 for a group it has not seen
        return None
    return None if answer.get("error") else answer["status"]["totallag"]


def wait_for_lag(
    http_port: int, group: str, lag: int, burrow: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + DEADLINE_S
    seen = None
    while time.monotonic() < deadline and burrow.poll() is None:
        seen = total_lag(http_port, group)
        if seen == lag:
            return
        time.sleep(0.5)
    raise AssertionError(f"Burrow's lag of {group}: {seen}, not {lag}; {log.read_text()[-3000:]}")


def test_burrow_reports_a_groups_lag_from_consumer_offsets(broker, zookeeper, tmp_path):
    if not BURROW.exists():
        pytest.skip(f"Burrow is not installed ({BURROW}: apt-get install burrow)")
    with HarnessClient(broker.bootstrap) as harness:
        harness.create_topic("lagging", 1)
    produce("confluent", broker.bootstrap, "lagging", [(None, b"x", [])] * 10)
    commit(broker.bootstrap, "lagger", "lagging", 4)

    [http_port] = free_ports(1)
    (tmp_path / "burrow.toml").write_text(
        burrow_config(broker.bootstrap, zookeeper, http_port, tmp_path)
    )
    log = tmp_path / "burrow.out"
    burrow = spawn([str(BURROW), "-config-dir", str(tmp_path)], log)
    try:
        wait_for_lag(http_port, "lagger", 6, burrow, tmp_path / "burrow.log")
        commit(broker.bootstrap, "lagger", "lagging", 8)  # Burrow follows the topic's tail
        wait_for_lag(http_port, "lagger", 2, burrow, tmp_path / "burrow.log")
    finally:
        stop(burrow)
