"""Bounded memory budgets: a memory cgroup that makes a broker's page cache finite.

Why: on a machine with tens of GiB free, every segment a benchmark writes stays cached and a
"lagging consumer" never reads from disk, so the effect Kafka's design is about (catch-up reads
evicting the hot tail) cannot show. Page-cache pages are charged to the memory cgroup of the
process that brought them in; a child cgroup with a limit of, say, 64 MiB therefore caps how much
of the files a broker placed in it can keep cached, while the rest of the machine is untouched.

Where budgets are created: only as children of the cgroup this process is in (from
/proc/self/cgroup), never elsewhere in the hierarchy. cgroup v2 is used when that cgroup has the
memory controller in its ``cgroup.subtree_control``; otherwise the cgroup v1 memory hierarchy.
Note that under v2 a cgroup that holds processes (as ours does) cannot enable controllers for its
children unless it is the root ("no internal processes"), so on pure v2 systems budgets are
usually unavailable and ``cgroup_support()`` says so.

Budgets are named ``<prefix>-<owner pid>-<counter>`` so that ``reap_stale`` can remove the ones a
killed test run left behind.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypedDict

import psutil

__all__ = [
    "BudgetUsage",
    "CgroupUnavailableError",
    "MemoryBudget",
    "cgroup_support",
    "reap_stale",
]

_NAME_PREFIX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_counter = itertools.count()
# An owner pid that started this long after the cgroup was created is a reused pid (psutil's
# start times carry up to a second of error from the boot time's whole seconds).
_CLOCK_SLACK_S = 2.0
# close() retries rmdir while the kernel still counts an exiting or forking process.
_RMDIR_ATTEMPTS = 200
_RMDIR_PAUSE_S = 0.01


class CgroupUnavailableError(RuntimeError):
    """No memory cgroup can be created here; the message names what is missing."""


@dataclass(frozen=True)
class _Placement:
    """Where budgets go: the directory of this process's cgroup in the chosen hierarchy."""

    version: int
    parent: Path

    @property
    def limit_file(self) -> str:
        return "memory.max" if self.version == 2 else "memory.limit_in_bytes"

    @property
    def usage_file(self) -> str:
        return "memory.current" if self.version == 2 else "memory.usage_in_bytes"

    @property
    def cache_key(self) -> str:
        return "file" if self.version == 2 else "cache"


class BudgetUsage(TypedDict):
    """Charge of a budget's cgroup, in bytes; ``page_cache_bytes`` is part of ``usage_bytes``."""

    usage_bytes: int
    page_cache_bytes: int
    limit_bytes: int
    version: int
    path: str


def _unescape(field: str) -> str:
    """Decode mountinfo's octal escapes (space is written as \\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _mounts(fstype: str) -> list[tuple[str, Path, set[str]]]:
    """(root within the hierarchy, mount point, super options) of every mount of ``fstype``."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) >= 5 and tail and tail[0] == fstype:
                options = set(tail[2].split(",")) if len(tail) > 2 else set()
                found.append((_unescape(fields[3]), Path(_unescape(fields[4])), options))
    return found


def _own_cgroups() -> tuple[str | None, str | None]:
    """This process's cgroup paths: (v2 unified path, v1 memory hierarchy path)."""
    unified = memory = None
    with open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy_id, controllers, path = line.rstrip("\n").split(":", 2)
            if hierarchy_id == "0" and not controllers:
                unified = path
            elif "memory" in controllers.split(","):
                memory = path
    return unified, memory


def _directory(mounts: list[tuple[str, Path, set[str]]], cgroup_path: str) -> Path | None:
    """The directory of ``cgroup_path`` under the first mount whose root contains it."""
    for root, mount_point, _ in mounts:
        if root == "/":
            return mount_point / cgroup_path.lstrip("/")
        if cgroup_path == root or cgroup_path.startswith(root + "/"):
            return mount_point / cgroup_path[len(root) :].lstrip("/")
    return None


def _writable(directory: Path) -> str | None:
    """None if we may create children in ``directory``, else the 'not permitted' reason."""
    if os.access(directory, os.W_OK) and os.access(directory / "cgroup.procs", os.W_OK):
        return None
    return f"not permitted: {directory} is not writable by uid {os.geteuid()}"


def _locate() -> tuple[_Placement | None, str]:
    """Pick the hierarchy for budgets, or explain why there is none."""
    unified, memory = _own_cgroups()
    reasons = []

    v2_mounts = _mounts("cgroup2")
    v2_dir = _directory(v2_mounts, unified) if unified is not None else None
    if v2_dir is None or not v2_dir.is_dir():
        reasons.append("no cgroup v2 hierarchy is mounted for this process")
    else:
        subtree = (v2_dir / "cgroup.subtree_control").read_text().split()
        if "memory" in subtree:
            denied = _writable(v2_dir)
            if denied is None:
                return _Placement(2, v2_dir), f"cgroup v2 memory controller under {v2_dir}"
            reasons.append(denied)
        else:
            reason = f"cgroup v2 at {v2_dir} has no memory controller in cgroup.subtree_control"
            if "memory" in (v2_dir / "cgroup.controllers").read_text().split():
                reason += (
                    " (it is in cgroup.controllers, but a non-root cgroup that holds processes "
                    "cannot enable it for children)"
                )
            reasons.append(reason)

    v1_mounts = [m for m in _mounts("cgroup") if "memory" in m[2]]
    v1_dir = _directory(v1_mounts, memory) if memory is not None else None
    if v1_dir is None or not v1_dir.is_dir():
        reasons.append("no cgroup v1 memory hierarchy was found for this process")
    else:
        denied = _writable(v1_dir)
        if denied is None:
            return _Placement(1, v1_dir), f"cgroup v1 memory controller under {v1_dir}"
        reasons.append(denied)
    return None, " and ".join(reasons)


def _check_prefix(prefix: str) -> None:
    if not _NAME_PREFIX.fullmatch(prefix):
        raise ValueError(
            f"cgroup name prefix {prefix!r} must be letters, digits, '_' or '-' (no '.', which "
            "control files use, and no '/')"
        )


def _make_child(parent: Path, prefix: str) -> Path:
    """mkdir ``<prefix>-<pid>-<counter>`` under ``parent``, skipping names already taken."""
    while True:
        path = parent / f"{prefix}-{os.getpid()}-{next(_counter)}"
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path


def _write(path: Path, text: str) -> None:
    """One write(2) per value: cgroup control files take exactly one value per write."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read_pids(cgroup: Path) -> list[int]:
    return [int(line) for line in (cgroup / "cgroup.procs").read_text().split()]


def _empty_and_remove(cgroup: Path, parent: Path) -> None:
    """Move every process of ``cgroup`` to ``parent``, then rmdir it; fine if already gone.

    Retries while rmdir says EBUSY: a process may fork between listing and moving, and the kernel
    may count an exiting task for a moment.
    """
    for _ in range(_RMDIR_ATTEMPTS):
        try:
            pids = _read_pids(cgroup)
        except FileNotFoundError:
            return
        for pid in pids:
            try:
                _write(parent / "cgroup.procs", str(pid))
            except ProcessLookupError:  # died since we listed it
                continue
        try:
            os.rmdir(cgroup)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(_RMDIR_PAUSE_S)
        else:
            return
    raise OSError(errno.EBUSY, "cgroup still busy after moving its processes out", str(cgroup))


def cgroup_support() -> tuple[bool, str]:
    """Whether a MemoryBudget can be created here, with the reason (for pytest.skip).

    Beyond finding a writable hierarchy it creates and removes a probe cgroup, because only the
    kernel knows whether mkdir is allowed (read-only mounts, container policies, delegation).
    """
    placement, reason = _locate()
    if placement is None:
        return False, reason
    try:
        probe = _make_child(placement.parent, "logbench")
        os.rmdir(probe)
    except OSError as exc:
        return False, (
            f"not permitted: creating a cgroup in {placement.parent} failed as uid "
            f"{os.geteuid()}: {exc.strerror}"
        )
    return True, reason


class MemoryBudget:
    """A child memory cgroup with a limit; put processes in it with ``add(pid)``.

    Use as a context manager (or call ``close()``): closing moves any processes still inside back
    to the parent cgroup, so they keep running unconstrained, and removes the cgroup. Pages
    already charged stay cached (the kernel re-parents the charge); they are not evicted.
    Only pages a process brings into the cache *after* ``add`` are charged to the budget: evict
    the files first if they were already cached.
    """

    def __init__(self, limit_bytes: int, name_prefix: str = "logbench") -> None:
        if limit_bytes <= 0:
            raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
        _check_prefix(name_prefix)
        placement, reason = _locate()
        if placement is None:
            raise CgroupUnavailableError(reason)
        self._placement = placement
        self.path: Path = _make_child(placement.parent, name_prefix)
        self._closed = False
        try:
            _write(self.path / placement.limit_file, str(limit_bytes))
        except BaseException:
            os.rmdir(self.path)
            raise
        # Read back: the kernel rounds the limit to whole pages.
        self.limit_bytes: int = self._read_int(placement.limit_file)

    @property
    def version(self) -> int:
        """1 or 2: the cgroup hierarchy in use."""
        return self._placement.version

    @property
    def parent(self) -> Path:
        """The cgroup this process is in; processes are moved back here on close."""
        return self._placement.parent

    @property
    def closed(self) -> bool:
        return self._closed

    def _read_int(self, name: str) -> int:
        text = (self.path / name).read_text().strip()
        return 2**63 - 1 if text == "max" else int(text)

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the budget; ProcessLookupError if gone."""
        if self._closed:
            raise RuntimeError(f"memory budget {self.path} is closed")
        _write(self.path / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        """Processes currently in the budget."""
        return [] if self._closed else _read_pids(self.path)

    def usage(self) -> BudgetUsage:
        """Current charge and how much of it is page cache (memory.stat ``cache`` / ``file``)."""
        if self._closed:
            raise RuntimeError(f"memory budget {self.path} is closed")
        stat = {}
        for line in (self.path / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            stat[key] = value
        return BudgetUsage(
            usage_bytes=self._read_int(self._placement.usage_file),
            page_cache_bytes=int(stat[self._placement.cache_key]),
            limit_bytes=self.limit_bytes,
            version=self.version,
            path=str(self.path),
        )

    def close(self) -> None:
        """Move remaining processes to the parent and remove the cgroup. Idempotent."""
        if not self._closed:
            _empty_and_remove(self.path, self.parent)
            self._closed = True

    def __enter__(self) -> MemoryBudget:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"limit={self.limit_bytes}"
        return f"MemoryBudget({str(self.path)!r}, v{self.version}, {state})"


def _owner_alive(pid: int, created: float) -> bool:
    """True if ``pid`` runs and is not a reused pid (started after the cgroup was created)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= (
            created + _CLOCK_SLACK_S
        )
    except psutil.NoSuchProcess:
        return False


def reap_stale(prefix: str = "logbench") -> list[Path]:
    """Remove budgets named ``<prefix>-<pid>-<n>`` whose owner process is gone.

    Why: a test run killed with SIGKILL never reaches ``close()``, and leftover cgroups pile up
    under the shared parent. Processes still inside a stale budget are moved to the parent first
    (never killed). Only this process's own cgroup is searched. Returns the removed paths; a
    cgroup that cannot be removed is reported with a RuntimeWarning and left alone.
    """
    _check_prefix(prefix)
    placement, _ = _locate()
    if placement is None:
        return []
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)-\d+")
    removed = []
    for entry in sorted(placement.parent.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir():
            continue
        try:
            created = entry.stat().st_mtime
        except FileNotFoundError:
            continue
        if _owner_alive(int(match[1]), created):
            continue
        try:
            _empty_and_remove(entry, placement.parent)
        except OSError as exc:
            warnings.warn(f"could not reap stale cgroup {entry}: {exc}", RuntimeWarning, 2)
            continue
        removed.append(entry)
    return removed
