"""Disk profiles against the real kernel: real blkio cgroups, real cold reads, a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_logbench.client import Consumer, fill
from pytest_logbench.disk import (
    PROFILES,
    DiskProfile,
    DiskThrottle,
    DiskUnavailableError,
    block_device,
    disk_support,
    profile,
    reap_stale,
)
from pytest_logbench.pagecache import evict, eviction_supported

pytest_plugins = ["pytester"]

MiB = 1 << 20
FILE_SIZE = 16 * MiB
# Slow enough that a throttled read of FILE_SIZE takes ~0.8 s, which no noise on this machine
# makes as slow as an unthrottled one (~0.02 s); fast enough to keep the test short.
SLOW = DiskProfile(read_mb_s=20, read_iops=200, name="slow")
# Distinct from the default prefix so that a concurrent reap_stale() never races us.
TEST_PREFIX = "logbenchdisktest"

# Reads the file named in argv[1] once told to (after it was moved into the throttle); prints
# the seconds the read took.
READER = (
    "import sys, time\n"
    "sys.stdin.readline()\n"
    "buf = bytearray(1 << 20)\n"
    "started = time.perf_counter()\n"
    "with open(sys.argv[1], 'rb', buffering=0) as f:\n"
    "    while f.readinto(buf):\n"
    "        pass\n"
    "print(time.perf_counter() - started)\n"
)


@pytest.fixture(scope="module")
def cold_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("disk")
    ok, reason = disk_support(directory)
    if not ok:
        pytest.skip(reason)
    ok, reason = eviction_supported(directory)
    if not ok:
        pytest.skip(reason)
    path = directory / "00000000000000000000.log"
    with open(path, "wb") as f:
        f.write(os.urandom(FILE_SIZE))
        os.fsync(f.fileno())
    return path


def _cold_read(path: Path, throttle: DiskThrottle | None) -> float:
    """Seconds a fresh process takes to read ``path`` after its pages were evicted."""
    assert evict(path).complete
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    if throttle is not None:
        throttle.add(reader.pid)
    out, _ = reader.communicate(b"go\n", timeout=60)
    assert reader.returncode == 0
    return float(out)


def test_profiles_come_from_published_figures_and_bad_specs_are_refused() -> None:
    hdd, ssd = profile("hdd"), profile("ssd")
    assert hdd is PROFILES["hdd"] and 100 <= hdd.read_mb_s <= 200
    assert 150 <= hdd.read_iops <= 200  # type: ignore[operator]
    assert 450 <= ssd.read_mb_s <= 560
    assert hdd.limits()["rbps"] == 150_000_000
    assert profile(SLOW) is SLOW
    with pytest.raises(ValueError, match="unknown disk profile 'floppy'"):
        profile("floppy")
    with pytest.raises(ValueError, match="read_mb_s must be positive"):
        DiskProfile(read_mb_s=0)
    with pytest.raises(ValueError, match="write_iops must be positive"):
        DiskProfile(read_mb_s=1, write_iops=-5)


def test_a_log_dir_in_ram_has_no_disk_to_throttle() -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.major(shm.stat().st_dev) != 0:
        pytest.skip("no tmpfs at /dev/shm")
    with pytest.raises(DiskUnavailableError, match="tmpfs"):
        block_device(shm)
    ok, reason = disk_support(shm)
    assert not ok and "no block device" in reason


def test_the_device_is_the_disk_holding_the_path(cold_file: Path) -> None:
    device = block_device(cold_file)
    sysfs = Path(f"/sys/dev/block/{device.key}")
    assert sysfs.is_dir() and not (sysfs / "partition").exists(), "throttles need whole disks"
    assert device.name in device.how


def test_a_throttled_cold_read_is_slower_and_removed_at_close(cold_file: Path) -> None:
    with DiskThrottle(SLOW, cold_file.parent, TEST_PREFIX) as throttle:
        assert throttle.limits() == {"rbps": 20_000_000, "riops": 200}
        pairs = []
        for _ in range(2):  # side by side, twice: the same file, cold both times
            pairs.append((_cold_read(cold_file, None), _cold_read(cold_file, throttle)))
        read = throttle.read_bytes()
    print("cold read seconds (unthrottled, throttled):", pairs)
    assert all(throttled > free for free, throttled in pairs), pairs
    # The throttle saw the throttled reads (and only those): twice the file, from the disk.
    assert 2 * FILE_SIZE <= read < 3 * FILE_SIZE
    assert not throttle.path.exists() and throttle.closed
    with pytest.raises(RuntimeError, match="closed"):
        throttle.add(os.getpid())


def test_reap_stale_removes_throttles_of_dead_owners(cold_file: Path) -> None:
    creator = (
        "import sys\n"
        "from pytest_logbench.disk import DiskThrottle\n"
        f"t = DiskThrottle('hdd', sys.argv[1], {TEST_PREFIX!r})\n"
        "print(t.path, flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", creator, str(cold_file.parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    path = Path(child.stdout.readline().strip())
    with DiskThrottle("ssd", cold_file.parent, TEST_PREFIX) as mine:
        assert reap_stale(TEST_PREFIX) == [], "a live owner's throttle must survive"
        child.kill()  # no teardown: the cgroup stays behind
        child.wait()
        assert path.is_dir()
        assert reap_stale(TEST_PREFIX) == [path]
        assert mine.path.is_dir()
    assert not path.exists()


INNER = """
import json, os
from pathlib import Path
from pytest_logbench.client import Consumer, fill
from pytest_logbench.pagecache import evict

def test_throttled(broker_factory):
    broker = broker_factory(disk={disk!r}, segment_bytes=4 << 20)
    throttle = broker.disk_throttle
    assert throttle.pids() == [broker.pid]
    fill(broker.bootstrap, "t", 8 << 20)
    files = broker.segment_files("t")
    os.sync()
    evict(files)
    before = throttle.read_bytes()
    consumer = Consumer(broker.bootstrap)
    consumer.consume("t")
    consumer.close()
    Path(os.environ["RECORD"]).write_text(json.dumps({{
        "path": str(throttle.path), "limits": throttle.limits(),
        "read": throttle.read_bytes() - before, "size": sum(f.stat().st_size for f in files),
    }}))
"""


@pytest.mark.parametrize("disk", ["hdd", "ssd"])
def test_broker_factory_puts_the_broker_on_the_profile_and_removes_it(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disk: str
) -> None:
    record = tmp_path / "record.json"
    monkeypatch.setenv("RECORD", str(record))
    pytester.makepyfile(INNER.format(disk=disk))
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    seen = json.loads(record.read_text())
    assert seen["limits"] == PROFILES[disk].limits()
    # The cold fetch was served from the disk through the broker's throttle.
    assert seen["read"] >= seen["size"] * 0.9, seen
    assert not Path(seen["path"]).exists(), "teardown must remove the throttle"


def test_broker_factory_refuses_an_unknown_profile(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_bad(broker_factory):\n    broker_factory(disk='floppy')\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*unknown disk profile 'floppy'*"])


@pytest.mark.slow
def test_the_kafka_launcher_gets_the_profile_too(broker_factory, page_cache):
    from pytest_logbench import kafka

    if (reason := kafka.unavailable_reason()) is not None:
        pytest.skip(reason)
    broker = broker_factory(kind="kafka", disk=SLOW)
    throttle = broker.disk_throttle
    assert throttle.pids() == [broker.pid]
    fill(broker.bootstrap, "cold", 8 * MiB)
    files = broker.segment_files("cold")
    os.sync()
    assert page_cache.evict(files).complete
    before = throttle.read_bytes()
    consumer = Consumer(broker.bootstrap)
    try:
        assert consumer.consume("cold").bytes >= 8 * MiB
    finally:
        consumer.close()
    # Kafka's reads of the evicted segment went through the throttle.
    assert throttle.read_bytes() - before >= 7 * MiB
