"""Tutorial: sequential, append-only IO — the access pattern storage likes best.

The seed: "Spinning disks and SSDs are both an order of magnitude faster at sequential IO than
random IO. An append-only log is the most disk-friendly access pattern that exists."

Three measurements on this machine's own storage, then the broker against them:

1. Writes: the same bytes appended in 256 KiB writes, or written as 4 KiB blocks at random
   positions of a file of the same size; each run ends with ``fdatasync`` so the disk, not
   just the page cache, is part of the time.
2. Reads from a cold file (evicted from the page cache): one pass in 1 MiB reads, against
   4 KiB reads at random positions.
3. The reference broker's produce path (the harness producer, 256 KiB batches) against the
   sequential-write figure: how close an append-only log gets to the machine's own ceiling.

Rounds alternate between the two patterns so that the machine's drift hits both alike.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pytest_logbench.client import Producer
from pytest_logbench.pagecache import evict, eviction_supported

MIB = 1 << 20
WRITE_BYTES = 128 * MIB  # the same volume as each broker produce round
READ_BYTES = 128 * MIB
RANDOM_READ_BYTES = 16 * MIB
BLOCK = 4096
ROUNDS = 3


def _sequential_write(path: Path) -> float:
    chunk = os.urandom(256 * 1024)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
    try:
        for _ in range(WRITE_BYTES // len(chunk)):
            os.write(fd, chunk)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return WRITE_BYTES


def _random_write(path: Path) -> float:
    block = os.urandom(BLOCK)
    positions = list(range(0, WRITE_BYTES, BLOCK))
    random.Random(1).shuffle(positions)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.ftruncate(fd, WRITE_BYTES)
        for position in positions:
            os.pwrite(fd, block, position)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return WRITE_BYTES


def _sequential_read(path: Path) -> float:
    buffer = bytearray(MIB)
    with path.open("rb", buffering=0) as f:
        while f.readinto(buffer):
            pass
    return READ_BYTES


def _random_read(path: Path) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead: each read is its own IO
        rng = random.Random(2)
        for _ in range(RANDOM_READ_BYTES // BLOCK):
            os.pread(fd, BLOCK, rng.randrange(READ_BYTES // BLOCK) * BLOCK)
    finally:
        os.close(fd)
    return RANDOM_READ_BYTES


def _alternate(
    a: Callable[[], float], b: Callable[[], float], before: Callable[[], object] = lambda: None
) -> tuple[list[float], list[float]]:
    """MB/s of ``a`` and ``b`` over interleaved rounds (``before`` runs untimed each time)."""
    rates: tuple[list[float], list[float]] = ([], [])
    for _ in range(ROUNDS):
        for action, out in ((a, rates[0]), (b, rates[1])):
            before()
            started = time.perf_counter()
            moved = action()
            out.append(moved / (time.perf_counter() - started) / 1e6)
    return rates


def _show(what: str, names: tuple[str, str], rates: tuple[list[float], list[float]]) -> float:
    medians = [statistics.median(r) for r in rates]
    print(
        f"{what}: {names[0]} {medians[0]:,.0f} MB/s (rounds "
        f"{', '.join(f'{r:,.0f}' for r in rates[0])}); {names[1]} {medians[1]:,.0f} MB/s "
        f"(rounds {', '.join(f'{r:,.0f}' for r in rates[1])}): "
        f"{medians[0] / medians[1]:.1f}x"
    )
    return medians[0]


def test_sequential_beats_random(tmp_path, broker_factory):
    supported, reason = eviction_supported(tmp_path)
    print(f"\n--- sequential vs random IO on {tmp_path} ---")
    seq_file, rnd_file = tmp_path / "sequential.bin", tmp_path / "random.bin"
    sequential_mb_s = _show(
        "writes + fdatasync",
        ("sequential appends", "random 4 KiB writes"),
        _alternate(lambda: _sequential_write(seq_file), lambda: _random_write(rnd_file)),
    )

    if supported:
        data = tmp_path / "read.bin"
        with data.open("wb") as f:
            for _ in range(READ_BYTES // MIB):
                f.write(os.urandom(MIB))
        _show(
            "cold reads",
            ("one sequential pass", "random 4 KiB reads"),
            _alternate(
                lambda: _sequential_read(data),
                lambda: _random_read(data),
                before=lambda: evict(data),
            ),
        )
    else:
        print(f"cold reads skipped: {reason}")

    broker = broker_factory()
    producer = Producer(broker.bootstrap)
    try:
        produced = [producer.produce("appends", WRITE_BYTES).mb_per_s for _ in range(ROUNDS)]
    finally:
        producer.close()
    broker_mb_s = statistics.median(produced)
    print(
        f"reference broker produce (validate CRC, assign offsets, append): {broker_mb_s:,.0f}"
        f" MB/s, {broker_mb_s / sequential_mb_s:.0%} of this machine's sequential "
        "write-and-sync figure (the broker does not sync: fsync=never, like Kafka)."
    )
    assert broker.metric("logbench_produce_bytes_total") >= ROUNDS * WRITE_BYTES
