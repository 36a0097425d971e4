"""Benchmarks: the reference broker against the machine's ceiling (issue 17's five targets).

Each test prints one target's figure and its ratio, measured side by side in one run:

- warm-tail fetch: the broker's GB/s and CPU per GB over a bare ``os.sendfile`` loop's, every
  round beside its own control, both read by the harness consumer (splice to /dev/null);
- produce, 256 KiB batches: the broker's MB/s and CPU per GB over a bare socket-to-file loop's
  (``recv_into`` + ``write``), and a bare ``splice`` socket -> file loop beside it;
- start-up: process start to the READY line, median, beside ``python -c pass``;
- memory: the broker's RSS while 10 consumers fetch (10 GB in all);
- 100-byte records from confluent-kafka: records/s beside the harness producer's.

``LOGBENCH_SMOKE=1`` makes every one small (CI); the figures then mean nothing.
``LOGBENCH_WRITE_TABLE=1 pytest benchmarks/test_broker_ceiling.py -s`` also rewrites the table
in docs/performance.md (between its ``broker-ceiling`` markers) with this run's figures.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bare_splice_append import SpliceAppendWorkload
from sizes import SMOKE, scaled

from pytest_logbench.client import Producer
from pytest_logbench.results import Result, paired_ratios
from pytest_logbench.workloads import FetchWorkload, ProduceWorkload
from reference_broker.config import READY_PREFIX

MIB = 1 << 20
FETCH_SIZE = scaled(512 * MIB, 32 * MIB)
PRODUCE_SIZE = scaled(128 * MIB, 16 * MIB)
ROUNDS = scaled(7, 2)
STARTS = scaled(15, 3)
FLEET_CONSUMERS = 10
FLEET_TOTAL = scaled(10 << 30, 160 * MIB)
SMALL_RECORDS = scaled(1_000_000, 50_000)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
BEGIN, END = "<!-- broker-ceiling:begin -->", "<!-- broker-ceiling:end -->"

_rows: list[tuple[str, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def _table() -> Iterator[None]:
    """Collect each target's row; write them into docs/performance.md when asked to."""
    yield
    if os.environ.get("LOGBENCH_WRITE_TABLE", "") in ("", "0") or SMOKE or not _rows:
        return
    lines = [
        BEGIN,
        f"Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}: "
        f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}. "
        "Command: `LOGBENCH_WRITE_TABLE=1 pytest benchmarks/test_broker_ceiling.py -s`.",
        "",
        "| target | measured (median, min-max) | ratio (goal) |",
        "| --- | --- | --- |",
        *(f"| {target} | {measured} | {ratio} |" for target, measured, ratio in _rows),
        END,
    ]
    text = DOCS.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOCS.write_text(head + "\n".join(lines) + tail)


def _spread(values: list[float], unit: str, scale: float = 1.0) -> str:
    return (
        f"{statistics.median(values) * scale:,.0f} {unit} "
        f"({min(values) * scale:,.0f}-{max(values) * scale:,.0f})"
    )


def _relative(result: Result, what: str) -> tuple[str, str]:
    """Per-round (broker / control) ratios of GB/s and of CPU per GB: 'median (min-max)'."""
    texts = []
    for metric in ("relative", "relative_cpu"):
        values = result.values(metric) or [float("nan")]
        texts.append(f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})")
    print(f"{what}: {texts[0]} the bare loop's rate at {texts[1]} its CPU per GB")
    return texts[0], texts[1]


def test_warm_tail_fetch(broker, measure):
    """Target: >= 0.95x a bare sendfile loop's GB/s, <= 1.15x its CPU per GB."""
    fetch = measure(
        FetchWorkload(broker, FETCH_SIZE), rounds=ROUNDS, control=True, name="broker fetch"
    )
    print(f"\n--- warm-tail fetch, {FETCH_SIZE // MIB} MiB per round, splice receiver ---")
    print(fetch.describe(), fetch.describe("cpu"), sep="\n")
    rate, cpu = _relative(fetch, "zero-copy fetch vs bare sendfile")
    _rows.append(
        (
            "warm-tail fetch (zero-copy) vs a bare sendfile loop",
            _spread(fetch.values("throughput"), "MB/s"),
            f"{rate} GB/s (>= 0.95), {cpu} CPU/GB (<= 1.15)",
        )
    )


def test_produce_large_batches(broker, measure):
    """Target: >= 0.6x a bare socket-to-file loop (the faster of recv_into + write and
    splice), CPU per GB reported. 1 KiB records in 256 KiB requests, 5 in flight."""
    produce, spliced = measure.compare(
        ProduceWorkload(broker, PRODUCE_SIZE),
        SpliceAppendWorkload(None, PRODUCE_SIZE, near=broker.log_dir.parent),
        rounds=ROUNDS,
        names=("broker produce", "bare splice append"),
        syscalls=False,
        control=True,
    )
    print(f"\n--- produce, {PRODUCE_SIZE // MIB} MiB per round, 256 KiB requests ---")
    print(produce.describe(), produce.describe("cpu"), spliced.describe(), sep="\n")
    rate, cpu = _relative(produce, "produce vs bare recv_into + write")
    per_round = paired_ratios(produce, spliced)
    vs_splice = f"{statistics.median(per_round):.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"
    print(f"produce vs bare splice socket -> file: {vs_splice} its rate")
    _rows.append(
        (
            "produce, 256 KiB batches of 1 KiB records, vs bare socket-to-file loops",
            _spread(produce.values("throughput"), "MB/s")
            + f"; broker {statistics.median(produce.values('cpu')):.2f} CPU-s/GB",
            f"{rate} recv_into + write, {vs_splice} splice (>= 0.6 of the faster); "
            f"{cpu} CPU/GB of recv_into + write",
        )
    )


def _seconds_to_ready(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds from spawning ``command`` to its first stdout line (the READY line)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        seconds = time.perf_counter() - started
        assert line.startswith(READY_PREFIX.encode()), f"{command[:4]} printed {line!r}"
        return seconds
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_start_up_to_ready(tmp_path):
    """Target: <= 100 ms median from process start to the READY line (a new log dir each
    time, so the offsets topic is created too), beside the bare interpreter's start.

    Both run with a bytecode cache, as an installed broker does: an environment with
    PYTHONDONTWRITEBYTECODE=1 (this project's machines) would otherwise compile every module
    at every start. The cache goes to a temporary PYTHONPYCACHEPREFIX, warmed by one untimed
    start."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    command = [sys.executable, "-m", "reference_broker", "--port", "0", "--log-dir"]
    bare_command = [sys.executable, "-c", f"print({READY_PREFIX!r})"]
    _seconds_to_ready([*command, str(tmp_path / "warm-up")], env)
    broker, bare = [], []
    for attempt in range(STARTS):
        broker.append(_seconds_to_ready([*command, str(tmp_path / str(attempt))], env))
        bare.append(_seconds_to_ready(bare_command, env))
    median = statistics.median(broker)
    print(
        f"\n--- start-up: broker {_spread(broker, 'ms', 1e3)}, "
        f"python -c print {_spread(bare, 'ms', 1e3)} ({STARTS} each, alternating) ---"
    )
    _rows.append(
        (
            "start-up to READY (new log dir, bytecode cached)",
            _spread(broker, "ms", 1e3) + f"; bare interpreter {_spread(bare, 'ms', 1e3)}",
            f"{median * 1e3:.0f} ms median (<= 100 ms)",
        )
    )


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@pytest.mark.slow
def test_memory_while_serving_a_fleet(broker):
    """Target: RSS flat and <= 64 MB while 10 consumers (one process each) fetch 10 GB."""
    per_round = FETCH_SIZE * FLEET_CONSUMERS
    fleet = FetchWorkload(broker, FETCH_SIZE, consumers=FLEET_CONSUMERS)
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            samples.append(_rss_bytes(broker.pid))

    fleet.setup()
    try:
        fleet.prepare()
        before = _rss_bytes(broker.pid)
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            served = 0
            while served < FLEET_TOTAL:
                served += fleet.run().bytes
        finally:
            done.set()
            sampler.join()
    finally:
        fleet.close()
    after = _rss_bytes(broker.pid)
    peak = max(samples, default=after)
    print(
        f"\n--- memory: {served / 1e9:.1f} GB to {FLEET_CONSUMERS} consumers "
        f"({per_round // MIB} MiB a round): RSS before {before / 1e6:.1f} MB, "
        f"peak {peak / 1e6:.1f} MB, after {after / 1e6:.1f} MB ---"
    )
    _rows.append(
        (
            f"RSS while serving {served / 2**30:.0f} GiB to {FLEET_CONSUMERS} consumers",
            f"{before / 1e6:.1f} MB before, {peak / 1e6:.1f} MB peak, {after / 1e6:.1f} MB after",
            f"peak {peak / 1e6:.0f} MB, growth {(after - before) / 1e6:+.1f} MB (<= 64 MB, flat)",
        )
    )


def _confluent_records_per_s(bootstrap: str, topic: str, count: int) -> float:
    """Records/s of librdkafka producing ``count`` 100-byte records (acks=1, no compression,
    its default batching up to 1 MB)."""
    from confluent_kafka import Producer as KafkaProducer

    producer = KafkaProducer(
        {
            "bootstrap.servers": bootstrap,
            "acks": 1,
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    value = bytes(range(100))
    started = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, value, partition=0)
                break
            except BufferError:
                producer.poll(0.01)
    assert producer.flush(60) == 0, "confluent-kafka did not deliver every record"
    return count / (time.perf_counter() - started)


def test_small_records_from_confluent_kafka(broker):
    """100-byte records: confluent-kafka's records/s beside the harness producer's, rounds
    alternating on the same broker."""
    pytest.importorskip("confluent_kafka")
    harness, librdkafka = [], []
    producer = Producer(broker.bootstrap)
    try:
        for _ in range(scaled(3, 1)):
            sent = producer.produce("small-harness", SMALL_RECORDS * 108, record_bytes=100)
            harness.append(sent.records / sent.seconds)
            librdkafka.append(_confluent_records_per_s(broker.bootstrap, "small-ck", SMALL_RECORDS))
    finally:
        producer.close()
    ratio = statistics.median(c / h for c, h in zip(librdkafka, harness, strict=True))
    print(
        f"\n--- 100-byte records: confluent-kafka {_spread(librdkafka, 'records/s')}, "
        f"harness producer {_spread(harness, 'records/s')}: {ratio:.2f}x ---"
    )
    _rows.append(
        (
            "100-byte records: confluent-kafka vs the harness producer",
            f"confluent-kafka {_spread(librdkafka, 'rec/s')}; harness {_spread(harness, 'rec/s')}",
            f"{ratio:.2f}x (reported)",
        )
    )
