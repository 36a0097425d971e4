"""Bounded memory budgets: a memory cgroup that makes a broker's page cache finite.

Why: on a machine with tens of GiB free, every segment a benchmark writes stays cached and a
"lagging consumer" never reads from disk, so the effect Kafka's design is about (catch-up reads
evicting the hot tail) cannot show. Page-cache pages are charged to the memory cgroup of the
process that brought them in; a child cgroup with a limit of, say, 64 MiB therefore caps how much
of the files a broker placed in it can keep cached, while the rest of the machine is untouched.

Where budgets are created, how they are named and reaped: the rules of ``cgroups.py`` (children
of this process's own cgroup only; v2 where the memory controller is delegated, else v1).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from pytest_logbench import cgroups
from pytest_logbench.cgroups import CgroupUnavailableError

__all__ = [
    "BudgetUsage",
    "CgroupUnavailableError",
    "MemoryBudget",
    "cgroup_support",
    "reap_stale",
]

MEMORY = cgroups.Controller(v1="memory", v2="memory")
# Per hierarchy version: the limit, the usage, and memory.stat's page-cache key.
_LIMIT_FILE = {1: "memory.limit_in_bytes", 2: "memory.max"}
_USAGE_FILE = {1: "memory.usage_in_bytes", 2: "memory.current"}
_CACHE_KEY = {1: "cache", 2: "file"}


class BudgetUsage(TypedDict):
    """Charge of a budget's cgroup, in bytes; ``page_cache_bytes`` is part of ``usage_bytes``."""

    usage_bytes: int
    page_cache_bytes: int
    limit_bytes: int
    version: int
    path: str


def cgroup_support() -> tuple[bool, str]:
    """Whether a MemoryBudget can be created here, with the reason (for pytest.skip)."""
    return cgroups.support(MEMORY)


class MemoryBudget(cgroups.ChildCgroup):
    """A child memory cgroup with a limit; put processes in it with ``add(pid)``.

    Use as a context manager (or call ``close()``): closing moves any processes still inside back
    to the parent cgroup, so they keep running unconstrained, and removes the cgroup. Pages
    already charged stay cached (the kernel re-parents the charge); they are not evicted.
    Only pages a process brings into the cache *after* ``add`` are charged to the budget: evict
    the files first if they were already cached.
    """

    kind = "memory budget"

    def __init__(self, limit_bytes: int, name_prefix: str = "logbench") -> None:
        if limit_bytes <= 0:
            raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
        self._asked = limit_bytes
        super().__init__(MEMORY, name_prefix)
        # Read back: the kernel rounds the limit to whole pages.
        self.limit_bytes: int = self._read_int(_LIMIT_FILE[self.version])

    def _configure(self) -> None:
        cgroups.write(self.path / _LIMIT_FILE[self.version], str(self._asked))

    def _read_int(self, name: str) -> int:
        text = (self.path / name).read_text().strip()
        return 2**63 - 1 if text == "max" else int(text)

    def usage(self) -> BudgetUsage:
        """Current charge and how much of it is page cache (memory.stat ``cache`` / ``file``)."""
        self._check_open()
        stat = {}
        for line in (self.path / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            stat[key] = value
        return BudgetUsage(
            usage_bytes=self._read_int(_USAGE_FILE[self.version]),
            page_cache_bytes=int(stat[_CACHE_KEY[self.version]]),
            limit_bytes=self.limit_bytes,
            version=self.version,
            path=str(self.path),
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"limit={self.limit_bytes}"
        return f"MemoryBudget({str(self.path)!r}, v{self.version}, {state})"


def reap_stale(prefix: str = "logbench") -> list[Path]:
    """Remove budgets named ``<prefix>-<pid>-<n>`` whose owner process is gone (a test run
    killed before its teardown); see ``cgroups.reap_stale``."""
    return cgroups.reap_stale(MEMORY, prefix)
