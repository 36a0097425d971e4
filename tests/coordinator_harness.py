"""Fixtures and helpers that drive the group coordinator request by request with a fake clock
(registered for the whole suite in conftest.py; used by test_groups.py and test_group_timers.py).
"""

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from reference_broker.groups import (
    GroupCoordinator,
    GroupState,
    JoinGroupResult,
    OffsetStore,
    SyncGroupResult,
)
from reference_broker.log.config import LogConfig
from reference_broker.log.partition import PartitionLog

GROUP = "g"
SESSION_MS = 10_000
REBALANCE_MS = 5_000
PROTOCOLS = [("range", b"range-meta"), ("roundrobin", b"rr-meta")]
STEP_MS = 125
INITIAL_DELAY_MS = 3_000


def async_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run a coroutine test on a fresh event loop (the project has no pytest-asyncio)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1000


@pytest.fixture
def offsets(tmp_path: Path) -> Iterator[OffsetStore]:
    log = PartitionLog(tmp_path / "__consumer_offsets-0", LogConfig())
    yield OffsetStore([log])
    log.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def coordinator(offsets: OffsetStore, clock: FakeClock) -> GroupCoordinator:
    return GroupCoordinator(offsets, clock=clock)


@pytest.fixture
def delayed(offsets: OffsetStore, clock: FakeClock) -> GroupCoordinator:
    """A coordinator whose first rebalance waits, so members of any kind land in it together."""
    return GroupCoordinator(offsets, initial_rebalance_delay_ms=INITIAL_DELAY_MS, clock=clock)


async def settle() -> None:
    """Let every runnable task reach its next await (a parked join or sync)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def join(
    coordinator: GroupCoordinator,
    member_id: str = "",
    *,
    group: str = GROUP,
    instance: str | None = None,
    protocol_type: str = "consumer",
    protocols: list[tuple[str, bytes]] = PROTOCOLS,
    session_ms: int = SESSION_MS,
    rebalance_ms: int = REBALANCE_MS,
    client_id: str = "client",
    require_known: bool = False,
) -> JoinGroupResult:
    return await coordinator.join_group(
        group,
        member_id,
        instance,
        protocol_type,
        protocols,
        session_ms,
        rebalance_ms,
        client_id,
        "/127.0.0.1",
        require_known,
    )


async def sync(
    coordinator: GroupCoordinator,
    joined: JoinGroupResult,
    assignments: dict[str, bytes] | None = None,
    *,
    group: str = GROUP,
    instance: str | None = None,
) -> SyncGroupResult:
    return await coordinator.sync_group(
        group, joined.generation_id, joined.member_id, instance, None, None, assignments or {}
    )


async def completing_pair(
    coordinator: GroupCoordinator, group: str = GROUP
) -> list[JoinGroupResult]:
    """Two dynamic members (leader first) joined in one rebalance: CompletingRebalance.

    Both take a member id first (MEMBER_ID_REQUIRED), so the first join waits for the second.
    """
    ids = [(await join(coordinator, group=group, require_known=True)).member_id for _ in "ab"]
    return await asyncio.gather(*(join(coordinator, mid, group=group) for mid in ids))


async def stable_pair(coordinator: GroupCoordinator) -> tuple[JoinGroupResult, JoinGroupResult]:
    """Two members (leader first) through one rebalance and SyncGroup: a Stable group."""
    leader, follower = await completing_pair(coordinator)
    follower_sync = asyncio.create_task(sync(coordinator, follower))
    await settle()
    await sync(coordinator, leader, {leader.member_id: b"A", follower.member_id: b"B"})
    assert (await follower_sync).assignment == b"B"
    return leader, follower


def expires_exactly_after(
    coordinator: GroupCoordinator, clock: FakeClock, ms: int, waiting: asyncio.Future[Any]
) -> None:
    """``waiting`` is still pending one step before ``ms`` have passed, and done at ``ms``."""
    clock.advance(ms - STEP_MS)
    coordinator.tick()
    assert not waiting.done()
    clock.advance(STEP_MS)
    coordinator.tick()


def state(coordinator: GroupCoordinator, group: str = GROUP) -> GroupState:
    return next(s.state for s in coordinator.describe() if s.group_id == group)
