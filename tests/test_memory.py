"""Memory budgets against the real kernel: real cgroups, real child processes, real page cache."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_logbench.memory import MemoryBudget, cgroup_support, reap_stale
from pytest_logbench.pagecache import evict, eviction_supported, residency
from tests.unprivileged import as_nobody

MiB = 1 << 20
BUDGET = 64 * MiB
# A lagging consumer's read: four times the budget.
FILE_SIZE = 256 * MiB
# Pages charged to the budget cannot exceed its limit; the margin only absorbs page rounding.
MARGIN = 4 * MiB
# Distinct from the default prefix so that a concurrent reap_stale("logbench") never races us.
TEST_PREFIX = "logbenchtest"

# Reads the file named in argv[1] once it is told to (after it was moved into the budget).
READER = (
    "import sys\n"
    "sys.stdin.readline()\n"
    "buf = bytearray(1 << 20)\n"
    "with open(sys.argv[1], 'rb', buffering=0) as f:\n"
    "    while f.readinto(buf):\n"
    "        pass\n"
)
# Waits until its stdin is closed.
IDLE = "import sys; sys.stdin.read()"

Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture(scope="module", autouse=True)
def supported() -> None:
    ok, reason = cgroup_support()
    if not ok:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def parent() -> Path:
    """The cgroup this process is in (budgets are created under it)."""
    with MemoryBudget(BUDGET, TEST_PREFIX) as budget:
        return budget.parent


@pytest.fixture(autouse=True)
def no_leftover_cgroups(parent: Path) -> Iterator[None]:
    """Fail a test that leaks a cgroup, after removing it (processes moved out first)."""
    yield
    leaked = sorted(p for p in parent.iterdir() if p.name.startswith(TEST_PREFIX + "-"))
    for path in leaked:
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                (parent / "cgroup.procs").write_text(pid)
            except ProcessLookupError:
                continue
        path.rmdir()
    assert not leaked, f"test left cgroups behind: {leaked}"


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start python children; every one is killed and reaped at teardown."""
    children: list[subprocess.Popen[bytes]] = []

    def start(code: str, *args: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("memory")
    ok, reason = eviction_supported(directory)
    if not ok:
        pytest.skip(reason)
    path = directory / "00000000000000000000.log"
    with open(path, "wb") as f:
        chunk = b"\x4b" * (4 * MiB)
        for _ in range(FILE_SIZE // len(chunk)):
            f.write(chunk)
        os.fsync(f.fileno())
    yield path
    path.unlink()


def _cgroups_of(pid: int | str) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def test_support_reason_names_the_place_and_the_probe_leaves_nothing(parent: Path) -> None:
    before = sorted(parent.iterdir())
    ok, reason = cgroup_support()
    assert ok and str(parent) in reason
    assert sorted(parent.iterdir()) == before


def test_budget_caps_the_page_cache_a_child_can_fill(spawn: Spawn, big_file: Path) -> None:
    assert evict(big_file).complete
    with MemoryBudget(BUDGET, TEST_PREFIX) as budget:
        assert budget.limit_bytes == BUDGET
        reader = spawn(READER, str(big_file))
        budget.add(reader.pid)
        assert budget.pids() == [reader.pid]
        reader.communicate(b"go\n")
        assert reader.returncode == 0
        capped = residency(big_file)
        usage = budget.usage()
    assert 0 < capped.resident_bytes <= BUDGET + MARGIN, capped.report()
    assert 0 < usage["page_cache_bytes"] <= usage["usage_bytes"] <= BUDGET, usage
    # What the budget is for: the most recently read pages (the tail) are the ones kept.
    tail = capped[big_file].page_map[-(BUDGET // 2) // os.sysconf("SC_PAGE_SIZE") :]
    assert tail.count(1) == len(tail), capped.report(64)

    # Control: the same read without a budget caches the whole file.
    assert evict(big_file).complete
    reader = spawn(READER, str(big_file))
    reader.communicate(b"go\n")
    free = residency(big_file)
    assert free.fraction > 0.95, free.report()


def test_close_moves_a_live_process_back_and_removes_the_cgroup(spawn: Spawn) -> None:
    budget = MemoryBudget(BUDGET, TEST_PREFIX)
    child = spawn(IDLE)
    budget.add(child.pid)
    assert _cgroups_of(child.pid) != _cgroups_of("self")
    budget.close()
    assert not budget.path.exists()
    assert child.poll() is None, "close() must not kill the process"
    assert _cgroups_of(child.pid) == _cgroups_of("self")
    budget.close()  # idempotent
    assert budget.closed and budget.pids() == []


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_close_after_the_process_died(spawn: Spawn, reap: bool) -> None:
    with MemoryBudget(BUDGET, TEST_PREFIX) as budget:
        child = spawn(IDLE)
        budget.add(child.pid)
        child.kill()
        if reap:
            child.wait()
    assert not budget.path.exists()


def test_closed_budget_refuses_use_and_dead_pids_are_reported() -> None:
    with MemoryBudget(BUDGET, TEST_PREFIX) as budget:
        dead = subprocess.Popen(["true"])
        dead.wait()
        with pytest.raises(ProcessLookupError):
            budget.add(dead.pid)
    with pytest.raises(RuntimeError, match="closed"):
        budget.add(os.getpid())
    with pytest.raises(RuntimeError, match="closed"):
        budget.usage()


def test_invalid_arguments_create_nothing() -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryBudget(0, TEST_PREFIX)
    for prefix in ("a/b", "memory.x", ""):
        with pytest.raises(ValueError, match="prefix"):
            MemoryBudget(BUDGET, prefix)


def test_reap_stale_removes_only_budgets_of_dead_owners(spawn: Spawn, parent: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = parent / f"{TEST_PREFIX}-{dead.pid}-0"
    stale.mkdir()
    straggler = spawn(IDLE)
    (stale / "cgroup.procs").write_text(str(straggler.pid))
    # A pid reused by a process that started after the cgroup was created is not its owner.
    reused = spawn(IDLE)
    recycled = parent / f"{TEST_PREFIX}-{reused.pid}-0"
    recycled.mkdir()
    an_hour_ago = time.time() - 3600
    os.utime(recycled, (an_hour_ago, an_hour_ago))
    with MemoryBudget(BUDGET, TEST_PREFIX) as mine:
        removed = reap_stale(TEST_PREFIX)
        assert mine.path.is_dir(), "a live owner's budget must survive"
    assert sorted(removed) == sorted([stale, recycled])
    assert not stale.exists() and not recycled.exists()
    assert straggler.poll() is None
    assert _cgroups_of(straggler.pid) == _cgroups_of("self")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
def test_support_explains_a_refusal_to_an_unprivileged_user(parent: Path) -> None:
    def support() -> str:
        ok, reason = cgroup_support()
        return f"{ok} {reason}"

    answer = as_nobody(support)
    assert answer.startswith("False ")
    assert answer.endswith(f"not permitted: {parent} is not writable by uid 65534")
