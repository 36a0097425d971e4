"""Disk profiles: give a broker the disk of a chosen kind with a block-IO-throttled cgroup.

Why: the seed's "cold cellar" is a commodity disk, 10-100x slower than RAM. Test machines are
often virtual, with disks backed by the host's cache that read 0.5-2 GB/s cold, where a cold read
hardly differs from a warm one and the effects of lagging consumers (evicted tails, stalled
network threads: KAFKA-7504) cannot show. The kernel's block-IO throttle (cgroup v1
``blkio.throttle.*_device``, v2 ``io.max``) caps the bytes and requests per second that the
processes of a cgroup get from one block device: a broker placed in such a cgroup reads what the
page cache does not hold at the pace of the profile, while page-cache hits stay at RAM speed.

What it throttles, honestly:

- reads that miss the page cache (and direct IO) of the processes in the cgroup, on the block
  device holding the log dir; page-cache hits are never throttled, which is the point;
- writes the broker issues itself (its fsync, direct IO). Under cgroup v1 the kernel's
  background writeback is not charged to the cgroup, so buffered appends that nobody fsyncs are
  not slowed: ``write_mb_s`` matters for ``fsync="always"`` brokers;
- requests, not seeks: the throttle counts IO requests whatever their size and position. With
  large readahead (8 MiB here) a sequential read issues few requests and is bound by
  ``read_mb_s``; ``read_iops`` binds small scattered reads, as a disk's seeks do.

The device is found from the log dir's filesystem: a partition is throttled on its whole disk
(the kernel refuses partitions), device-mapper and loop devices on themselves (their requests
pass through the throttle before reaching the disks beneath). Filesystems with no block device
of their own (tmpfs, overlay, btrfs subvolumes, network filesystems) cannot be throttled, and
``disk_support`` says so: such a log dir has no disk to be slow.

Throttles are children of this process's own blkio (v1) or io (v2) cgroup, named
``logbenchdisk-<owner pid>-<n>``, removed at close, and reaped at the next start when a killed
run left them behind (``cgroups.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pytest_logbench import cgroups
from pytest_logbench.cgroups import CgroupUnavailableError

__all__ = [
    "PROFILES",
    "BlockDevice",
    "CgroupUnavailableError",
    "DiskProfile",
    "DiskThrottle",
    "DiskUnavailableError",
    "block_device",
    "disk_support",
    "profile",
    "reap_stale",
]

BLKIO = cgroups.Controller(v1="blkio", v2="io")
PREFIX = "logbenchdisk"
_MB = 1_000_000  # disks are specified in decimal megabytes
# cgroup v1's file for each of io.max's limits.
_V1_FILES = {
    "rbps": "blkio.throttle.read_bps_device",
    "riops": "blkio.throttle.read_iops_device",
    "wbps": "blkio.throttle.write_bps_device",
    "wiops": "blkio.throttle.write_iops_device",
}


class DiskUnavailableError(RuntimeError):
    """The path's filesystem has no block device that can be throttled; the message says why."""


@dataclass(frozen=True)
class DiskProfile:
    """A disk by its sequential rates (MB/s, decimal) and request rates (IOPS); None = not
    limited."""

    read_mb_s: float
    read_iops: int | None = None
    write_mb_s: float | None = None
    write_iops: int | None = None
    name: str = "custom"

    def __post_init__(self) -> None:
        for field_name in ("read_mb_s", "read_iops", "write_mb_s", "write_iops"):
            value = getattr(self, field_name)
            if value is not None and not value > 0:
                raise ValueError(f"DiskProfile.{field_name} must be positive, got {value!r}")

    def limits(self) -> dict[str, int]:
        """The limits as whole numbers per second, keyed by io.max's names (rbps, riops, ...)."""
        found = {
            "rbps": self.read_mb_s * _MB,
            "riops": self.read_iops,
            "wbps": None if self.write_mb_s is None else self.write_mb_s * _MB,
            "wiops": self.write_iops,
        }
        return {key: max(1, int(value)) for key, value in found.items() if value is not None}

    def __str__(self) -> str:
        parts = [f"read {self.read_mb_s:g} MB/s"]
        if self.read_iops is not None:
            parts.append(f"{self.read_iops} read IOPS")
        if self.write_mb_s is not None:
            parts.append(f"write {self.write_mb_s:g} MB/s")
        return f"{self.name} ({', '.join(parts)})"


# Published figures. A 7,200 rpm SATA disk: ~150 MB/s sequential (outer tracks ~200, inner ~100)
# and ~150-200 random IOPS (4.2 ms rotational latency + ~8 ms seek). A SATA SSD: the SATA III
# link caps it near 550 MB/s (vendors quote 500-560 read, 500-530 write) and ~90k 4 KiB read
# IOPS at queue depth 32.
PROFILES: dict[str, DiskProfile] = {
    "hdd": DiskProfile(read_mb_s=150, read_iops=180, write_mb_s=150, write_iops=180, name="hdd"),
    "ssd": DiskProfile(
        read_mb_s=500, read_iops=90_000, write_mb_s=500, write_iops=80_000, name="ssd"
    ),
}


def profile(spec: str | DiskProfile) -> DiskProfile:
    """A profile by name (``"hdd"``, ``"ssd"``) or as given; a clear error for an unknown name."""
    if isinstance(spec, DiskProfile):
        return spec
    if isinstance(spec, str) and spec in PROFILES:
        return PROFILES[spec]
    raise ValueError(
        f"unknown disk profile {spec!r}: use one of {sorted(PROFILES)} or a DiskProfile"
    )


@dataclass(frozen=True)
class BlockDevice:
    """The device a throttle applies to, and how it was found from the path."""

    major: int
    minor: int
    name: str
    how: str  # e.g. "ext4 on vda", "ext4 on partition vda1 of disk vda"

    @property
    def key(self) -> str:
        return f"{self.major}:{self.minor}"


def _filesystem_of(st_dev: int) -> str:
    """The filesystem type of the mount whose device is ``st_dev`` (from mountinfo)."""
    wanted = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) > 2 and fields[2] == wanted and right:
                return right.split()[0]
    return "unknown"


def block_device(path: str | os.PathLike[str]) -> BlockDevice:
    """The block device to throttle for files under ``path``; DiskUnavailableError if none."""
    st_dev = os.stat(path).st_dev
    fstype = _filesystem_of(st_dev)
    major, minor = os.major(st_dev), os.minor(st_dev)
    sysfs = Path(f"/sys/dev/block/{major}:{minor}")
    if major == 0 or not sysfs.exists():
        raise DiskUnavailableError(
            f"{path} is on {fstype} (device {major}:{minor}), which has no block device of its "
            "own to throttle (tmpfs lives in RAM; overlay, btrfs and network filesystems sit "
            "on other devices): put the log dir on a disk-backed filesystem"
        )
    sysfs = sysfs.resolve()
    if (sysfs / "partition").exists():
        disk = sysfs.parent  # the kernel throttles whole disks, not partitions
        disk_major, disk_minor = (int(x) for x in (disk / "dev").read_text().split(":"))
        return BlockDevice(
            disk_major,
            disk_minor,
            disk.name,
            f"{fstype} on partition {sysfs.name} of disk {disk.name}",
        )
    kind = ""
    if (sysfs / "dm" / "name").exists():
        kind = f" (device-mapper {(sysfs / 'dm' / 'name').read_text().strip()})"
    elif sysfs.name.startswith("loop"):
        kind = " (a loop device: its backing file's disk is not throttled)"
    return BlockDevice(major, minor, sysfs.name, f"{fstype} on {sysfs.name}{kind}")


def disk_support(path: str | os.PathLike[str]) -> tuple[bool, str]:
    """Whether a DiskThrottle can be made for files under ``path``, with the reason."""
    try:
        device = block_device(path)
    except DiskUnavailableError as exc:
        return False, str(exc)
    ok, reason = cgroups.support(BLKIO)
    if not ok:
        return False, f"block-IO throttling unavailable: {reason}"
    return True, f"{reason}, throttling {device.how}"


class DiskThrottle(cgroups.ChildCgroup):
    """A child blkio/io cgroup that gives its processes ``profile``'s disk for ``path``'s device.

    Use as a context manager (or call ``close()``): closing moves processes still inside back to
    the parent cgroup (they run unthrottled again) and removes the cgroup.
    """

    kind = "disk throttle"

    def __init__(
        self,
        spec: str | DiskProfile,
        path: str | os.PathLike[str],
        name_prefix: str = PREFIX,
    ) -> None:
        self.profile = profile(spec)
        self.device = block_device(path)
        super().__init__(BLKIO, name_prefix)

    def _configure(self) -> None:
        limits = self.profile.limits()
        key = self.device.key
        if self.version == 2:
            settings = " ".join(f"{name}={value}" for name, value in limits.items())
            cgroups.write(self.path / "io.max", f"{key} {settings}")
            return
        for name, value in limits.items():
            cgroups.write(self.path / _V1_FILES[name], f"{key} {value}")

    def limits(self) -> dict[str, int]:
        """The limits the kernel holds for the device now (read back, not what was asked)."""
        self._check_open()
        found: dict[str, int] = {}
        if self.version == 2:
            for line in (self.path / "io.max").read_text().splitlines():
                key, *settings = line.split()
                if key == self.device.key:
                    for item in settings:
                        name, _, value = item.partition("=")
                        if value != "max":
                            found[name] = int(value)
            return found
        for name, file in _V1_FILES.items():
            for line in (self.path / file).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == self.device.key:
                    found[name] = int(value)
        return found

    def read_bytes(self) -> int:
        """Bytes the processes of this cgroup have read from the device (the throttle's count)."""
        self._check_open()
        if self.version == 2:
            for line in (self.path / "io.stat").read_text().splitlines():
                key, *items = line.split()
                if key == self.device.key:
                    stats = dict(item.split("=") for item in items)
                    return int(stats.get("rbytes", 0))
            return 0
        for line in (self.path / "blkio.throttle.io_service_bytes").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == self.device.key and parts[1] == "Read":
                return int(parts[2])
        return 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else str(self.profile)
        return f"DiskThrottle({str(self.path)!r}, {self.device.how}, {state})"


def reap_stale(prefix: str = PREFIX) -> list[Path]:
    """Remove throttles whose owner process is gone (a run killed before its teardown)."""
    return cgroups.reap_stale(BLKIO, prefix)
