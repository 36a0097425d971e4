"""A disk that fills up or fails: an append is all or nothing, the client gets
KAFKA_STORAGE_ERROR on a connection that stays open, and produces succeed once space returns.

The full disk is real: a 2 MiB tmpfs mounted for the test (root only; skipped otherwise). tmpfs
allocates whole pages, so a batch that fits in the segment's last page is written while the
index entry that follows it, which needs a new page, gets ENOSPC: the very case where memory and
disk used to disagree. A failing fsync cannot be produced without a failing block device, so
that one case is injected at the OS-call boundary (``os.fdatasync``).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_logbench.brokers import BrokerOptions, ReferenceBroker
from pytest_logbench.client import HarnessClient, KafkaError
from pytest_logbench.log_model import fetch_batches
from reference_broker.errors import ErrorCode
from reference_broker.log import CLEAN_SHUTDOWN_MARKER, KafkaStorageError, LogConfig, PartitionLog
from reference_broker.record_codec import build_batch
from reference_broker.records import iter_batches

VALUE = b"v" * 200


def batch(value: bytes = VALUE) -> bytes:
    return build_batch([(b"key", value)], base_timestamp=1_000)


BATCH_SIZE = len(batch())


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk that really fills up."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        pytest.skip(f"a real full disk needs a tmpfs mount, refused here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk is full; deleting it gives the space back."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as file:
        while True:
            try:
                file.write(bytes(4096))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return filler


def stored_offsets(log: PartitionLog) -> list[int]:
    return [h.base_offset for _, h in iter_batches(b"".join(log.read_batches()))]


def test_an_index_write_refused_by_a_full_disk_rolls_the_append_back(tiny_disk: Path) -> None:
    directory = tiny_disk / "topic-0"
    log = PartitionLog(directory, LogConfig(index_interval_bytes=0))
    log.append(batch())  # the segment's first page; no index entry for a segment's first batch
    filler = fill(tiny_disk)
    with pytest.raises(KafkaStorageError) as raised:
        log.append(batch())  # fits in the segment's page; its index entry needs a new page
    assert raised.value.error_code == ErrorCode.KAFKA_STORAGE_ERROR == 56
    assert isinstance(raised.value, OSError)  # the offsets store maps OSError to NOT_COORDINATOR
    segment = log.segments[0]
    assert log.log_end_offset == 1
    assert log.size_bytes == segment.path.stat().st_size == BATCH_SIZE
    assert segment.path.with_suffix(".index").stat().st_size == 0
    assert stored_offsets(log) == [0]
    assert log.storage_errors == 1
    filler.unlink()
    assert log.append(batch()).base_offset == 1
    assert log.append(batch()).base_offset == 2
    for segment in log.segments:
        segment.close()  # a process kill: no clean shutdown
    reopened = PartitionLog(directory, LogConfig(index_interval_bytes=0))
    assert stored_offsets(reopened) == [0, 1, 2]
    assert [reopened.read(o, 1).first_offset for o in range(3)] == [0, 1, 2]
    reopened.close()


def test_a_segment_write_refused_by_a_full_disk_leaves_no_bytes(tiny_disk: Path) -> None:
    log = PartitionLog(tiny_disk / "topic-0", LogConfig())
    log.append(batch())
    filler = fill(tiny_disk)
    with pytest.raises(KafkaStorageError, match="rolled back"):
        log.append(batch(os.urandom(64 * 1024)))  # needs pages the disk no longer has
    assert log.segments[0].path.stat().st_size == log.size_bytes == BATCH_SIZE
    filler.unlink()
    assert log.append(batch()).base_offset == 1
    assert stored_offsets(log) == [0, 1]
    log.close()


def test_a_failed_fsync_rolls_the_append_back(tmp_path: Path, monkeypatch) -> None:
    """Injected: only a failing device makes fdatasync fail for real."""
    log = PartitionLog(tmp_path / "topic-0", LogConfig(fsync="always"))
    log.append(batch())

    def failing_fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(KafkaStorageError, match="Input/output error"):
        log.append(batch())
    monkeypatch.undo()
    assert (log.log_end_offset, log.segments[0].path.stat().st_size) == (1, BATCH_SIZE)
    assert log.append(batch()).base_offset == 1
    log.close()


def test_an_append_that_cannot_be_undone_takes_the_partition_offline(
    tmp_path: Path, monkeypatch
) -> None:
    """Injected like the fsync failure; the cut-back failing too leaves memory and disk apart,
    so appends stop until a restart recovers the log."""
    log = PartitionLog(tmp_path / "topic-0", LogConfig(fsync="always"))
    log.append(batch())

    def failing(*args: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing)
    monkeypatch.setattr(os, "ftruncate", failing)
    with pytest.raises(KafkaStorageError, match="offline"):
        log.append(batch())
    monkeypatch.undo()
    assert log.offline is not None
    with pytest.raises(KafkaStorageError, match="offline"):
        log.append(batch())
    log.close()
    assert not (log.directory / CLEAN_SHUTDOWN_MARKER).exists()  # the next open recovers
    reopened = PartitionLog(tmp_path / "topic-0", LogConfig(fsync="always"))
    assert reopened.append(batch()).base_offset == reopened.log_end_offset - 1
    reopened.close()


def test_a_full_disk_answers_kafka_storage_error_and_recovers(
    tiny_disk: Path, tmp_path: Path
) -> None:
    """A real broker on a full disk: every produce is answered KAFKA_STORAGE_ERROR on the same
    connection, one log line says so, and the produce after space returns succeeds with
    every acknowledged record still there, also after a SIGKILL."""
    reserve = tiny_disk / "reserve"
    reserve.write_bytes(bytes(256 * 1024))
    broker = ReferenceBroker(tiny_disk / "data", BrokerOptions(), work_dir=tmp_path)
    broker.start()
    try:
        acked: list[bytes] = []
        with HarnessClient(broker.bootstrap) as client:
            client.create_topic("full", 1)
            refusals = 0
            while refusals < 5:
                value = os.urandom(32 * 1024)
                try:
                    assert client.produce("full", 0, batch(value)) == len(acked)
                    acked.append(value)
                except KafkaError as exc:
                    assert exc.code == ErrorCode.KAFKA_STORAGE_ERROR
                    refusals += 1
            assert acked, "some produces fit before the disk was full"
            reserve.unlink()
            assert client.produce("full", 0, batch(b"after")) == len(acked)
            acked.append(b"after")
            assert _values(client) == acked
        broker.restart(kill=True)
        with HarnessClient(broker.bootstrap) as client:
            assert _values(client) == acked
    finally:
        broker.stop()
    lines = broker.stderr_path.read_text().splitlines()
    assert len([line for line in lines if "storage errors on this partition" in line]) == 1
    assert not [line for line in lines if "Traceback" in line]


def _values(client: HarnessClient) -> list[bytes]:
    return [
        record.value
        for _, batches in fetch_batches(client, "full", 0, 0)
        for _, records in batches
        for record in records
    ]
