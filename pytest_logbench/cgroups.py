"""Child cgroups of this process's own cgroup: finding the hierarchy, creating, removing, reaping.

Why a module of its own: memory budgets (``memory.py``) and disk profiles (``disk.py``) both put a
broker in a child cgroup of one controller, and both must leave nothing behind, even when pytest
is killed. The rules they share live here:

- children are created only under the cgroup this process is in (from /proc/self/cgroup), never
  elsewhere in the hierarchy; cgroup v2 is used when that cgroup has the controller in its
  ``cgroup.subtree_control``, otherwise the controller's cgroup v1 hierarchy;
- children are named ``<prefix>-<owner pid>-<counter>``, so ``reap_stale`` can remove the ones a
  killed run left behind (processes still inside are moved to the parent, never killed).
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
from typing import Self

import psutil

_NAME_PREFIX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_counter = itertools.count()
# An owner pid that started this long after the cgroup was created is a reused pid (psutil's
# start times carry up to a second of error from the boot time's whole seconds).
_CLOCK_SLACK_S = 2.0
# Removal retries rmdir while the kernel still counts an exiting or forking process.
_RMDIR_ATTEMPTS = 200
_RMDIR_PAUSE_S = 0.01


class CgroupUnavailableError(RuntimeError):
    """No cgroup of the wanted controller can be created here; the message names what is
    missing."""


@dataclass(frozen=True)
class Controller:
    """A controller by its names in both hierarchies (``memory``/``memory``, ``blkio``/``io``)."""

    v1: str
    v2: str


@dataclass(frozen=True)
class Placement:
    """Where children go: the directory of this process's cgroup in the chosen hierarchy."""

    version: int
    parent: Path


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


def _own_cgroups(controller: str) -> tuple[str | None, str | None]:
    """This process's cgroup paths: (v2 unified path, path in the v1 hierarchy of
    ``controller``)."""
    unified = v1 = None
    with open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy_id, controllers, path = line.rstrip("\n").split(":", 2)
            if hierarchy_id == "0" and not controllers:
                unified = path
            elif controller in controllers.split(","):
                v1 = path
    return unified, v1


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


def locate(controller: Controller) -> tuple[Placement | None, str]:
    """Pick the hierarchy for children of ``controller``, or explain why there is none.

    Under v2 a cgroup that holds processes (as ours does) cannot enable controllers for its
    children unless it is the root ("no internal processes"), so on pure v2 systems this is
    usually unavailable and the reason says so.
    """
    unified, v1_path = _own_cgroups(controller.v1)
    reasons = []

    v2_dir = _directory(_mounts("cgroup2"), unified) if unified is not None else None
    if v2_dir is None or not v2_dir.is_dir():
        reasons.append("no cgroup v2 hierarchy is mounted for this process")
    else:
        subtree = (v2_dir / "cgroup.subtree_control").read_text().split()
        if controller.v2 in subtree:
            denied = _writable(v2_dir)
            if denied is None:
                return Placement(2, v2_dir), f"cgroup v2 {controller.v2} controller under {v2_dir}"
            reasons.append(denied)
        else:
            reason = (
                f"cgroup v2 at {v2_dir} has no {controller.v2} controller in cgroup.subtree_control"
            )
            if controller.v2 in (v2_dir / "cgroup.controllers").read_text().split():
                reason += (
                    " (it is in cgroup.controllers, but a non-root cgroup that holds processes "
                    "cannot enable it for children)"
                )
            reasons.append(reason)

    v1_mounts = [m for m in _mounts("cgroup") if controller.v1 in m[2]]
    v1_dir = _directory(v1_mounts, v1_path) if v1_path is not None else None
    if v1_dir is None or not v1_dir.is_dir():
        reasons.append(f"no cgroup v1 {controller.v1} hierarchy was found for this process")
    else:
        denied = _writable(v1_dir)
        if denied is None:
            return Placement(1, v1_dir), f"cgroup v1 {controller.v1} controller under {v1_dir}"
        reasons.append(denied)
    return None, " and ".join(reasons)


def require(controller: Controller) -> Placement:
    """The placement for ``controller``; CgroupUnavailableError with the reason if none."""
    placement, reason = locate(controller)
    if placement is None:
        raise CgroupUnavailableError(reason)
    return placement


def support(controller: Controller) -> tuple[bool, str]:
    """Whether a child of ``controller`` can be created here, with the reason (for pytest.skip).

    Beyond finding a writable hierarchy it creates and removes a probe cgroup, because only the
    kernel knows whether mkdir is allowed (read-only mounts, container policies, delegation).
    """
    placement, reason = locate(controller)
    if placement is None:
        return False, reason
    try:
        probe = make_child(placement.parent, "logbench")
        os.rmdir(probe)
    except OSError as exc:
        return False, (
            f"not permitted: creating a cgroup in {placement.parent} failed as uid "
            f"{os.geteuid()}: {exc.strerror}"
        )
    return True, reason


def check_prefix(prefix: str) -> None:
    if not _NAME_PREFIX.fullmatch(prefix):
        raise ValueError(
            f"cgroup name prefix {prefix!r} must be letters, digits, '_' or '-' (no '.', which "
            "control files use, and no '/')"
        )


def make_child(parent: Path, prefix: str) -> Path:
    """mkdir ``<prefix>-<pid>-<counter>`` under ``parent``, skipping names already taken."""
    while True:
        path = parent / f"{prefix}-{os.getpid()}-{next(_counter)}"
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path


def write(path: Path, text: str) -> None:
    """One write(2) per value: cgroup control files take exactly one value per write."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def read_pids(cgroup: Path) -> list[int]:
    return [int(line) for line in (cgroup / "cgroup.procs").read_text().split()]


def empty_and_remove(cgroup: Path, parent: Path) -> None:
    """Move every process of ``cgroup`` to ``parent``, then rmdir it; fine if already gone.

    Retries while rmdir says EBUSY: a process may fork between listing and moving, and the kernel
    may count an exiting task for a moment.
    """
    for _ in range(_RMDIR_ATTEMPTS):
        try:
            pids = read_pids(cgroup)
        except FileNotFoundError:
            return
        for pid in pids:
            try:
                write(parent / "cgroup.procs", str(pid))
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


class ChildCgroup:
    """A child cgroup of one controller, to put processes in: the life cycle that memory budgets
    and disk throttles share. Subclasses write their limits in ``_configure`` (if it fails, the
    cgroup is removed again) and name themselves in ``kind`` (for errors).

    Use as a context manager (or call ``close()``): closing moves any processes still inside back
    to the parent cgroup, so they keep running unconstrained, and removes the cgroup.
    """

    kind = "cgroup"

    def __init__(self, controller: Controller, name_prefix: str) -> None:
        check_prefix(name_prefix)
        self._placement = require(controller)
        self.path: Path = make_child(self._placement.parent, name_prefix)
        self._closed = False
        try:
            self._configure()
        except BaseException:
            os.rmdir(self.path)
            raise

    def _configure(self) -> None:
        """Write the cgroup's limits (nothing by default)."""

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

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.kind} {self.path} is closed")

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the cgroup; ProcessLookupError if gone."""
        self._check_open()
        write(self.path / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        """Processes currently in the cgroup."""
        return [] if self._closed else read_pids(self.path)

    def close(self) -> None:
        """Move remaining processes to the parent and remove the cgroup. Idempotent."""
        if not self._closed:
            empty_and_remove(self.path, self.parent)
            self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _owner_alive(pid: int, created: float) -> bool:
    """True if ``pid`` runs and is not a reused pid (started after the cgroup was created)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= (
            created + _CLOCK_SLACK_S
        )
    except psutil.NoSuchProcess:
        return False


def reap_stale(controller: Controller, prefix: str) -> list[Path]:
    """Remove children ``<prefix>-<pid>-<n>`` of ``controller`` whose owner process is gone.

    Why: a test run killed with SIGKILL never reaches its teardown, and leftover cgroups pile up
    under the shared parent. Only this process's own cgroup is searched. Returns the removed
    paths; a cgroup that cannot be removed is reported with a RuntimeWarning and left alone.
    """
    check_prefix(prefix)
    placement, _ = locate(controller)
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
            empty_and_remove(entry, placement.parent)
        except OSError as exc:
            warnings.warn(f"could not reap stale cgroup {entry}: {exc}", RuntimeWarning, 3)
            continue
        removed.append(entry)
    return removed
