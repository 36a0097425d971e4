"""The group coordinator's timers, driven by a fake clock: session expiry, rebalance timeouts,
the initial rebalance delay, and what each does to a group's members."""

import asyncio

from reference_broker.errors import ErrorCode
from reference_broker.groups import (
    GroupState,
)
from tests.coordinator_harness import (
    GROUP,
    INITIAL_DELAY_MS,
    REBALANCE_MS,
    SESSION_MS,
    STEP_MS,
    async_test,
    completing_pair,
    expires_exactly_after,
    join,
    settle,
    stable_pair,
    state,
    sync,
)

# --- timers ----------------------------------------------------------------------------------


@async_test
async def test_session_expiry_removes_a_silent_member(coordinator, clock):
    leader, follower = await stable_pair(coordinator)
    assert coordinator.tick() == clock.now + SESSION_MS / 1000

    clock.advance(SESSION_MS - STEP_MS)
    assert coordinator.heartbeat(GROUP, 1, leader.member_id, None) is ErrorCode.NONE
    assert coordinator.tick() == clock.now + STEP_MS / 1000, "next due: the follower's session"
    assert state(coordinator) is GroupState.STABLE

    clock.advance(STEP_MS)
    coordinator.tick()
    assert [m.member_id for s in coordinator.describe() for m in s.members] == [leader.member_id]
    assert state(coordinator) is GroupState.PREPARING_REBALANCE
    assert coordinator.heartbeat(GROUP, 1, follower.member_id, None) is ErrorCode.UNKNOWN_MEMBER_ID
    assert (
        coordinator.heartbeat(GROUP, 1, leader.member_id, None) is ErrorCode.REBALANCE_IN_PROGRESS
    )
    assert (await join(coordinator, leader.member_id)).generation_id == 2


@async_test
async def test_members_that_do_not_rejoin_in_time_are_removed(coordinator, clock):
    leader, follower = await stable_pair(coordinator)
    rejoin = asyncio.create_task(join(coordinator, leader.member_id))
    await settle()
    expires_exactly_after(coordinator, clock, REBALANCE_MS, rejoin)
    result = await rejoin
    assert (result.generation_id, [m.member_id for m in result.members]) == (2, [leader.member_id])
    assert coordinator.heartbeat(GROUP, 1, follower.member_id, None) is (
        ErrorCode.UNKNOWN_MEMBER_ID
    )


@async_test
async def test_members_parked_in_join_do_not_expire(coordinator, clock):
    leader, follower = await stable_pair(coordinator)
    rejoin = asyncio.create_task(join(coordinator, leader.member_id, rebalance_ms=60_000))
    await settle()
    clock.advance(SESSION_MS - STEP_MS)
    assert coordinator.heartbeat(GROUP, 1, follower.member_id, None) is (
        ErrorCode.REBALANCE_IN_PROGRESS
    )
    clock.advance(2 * STEP_MS)
    coordinator.tick()
    assert not rejoin.done()
    assert len(coordinator.describe()[0].members) == 2, "the leader's session is not running"
    await join(coordinator, follower.member_id)
    assert len((await rejoin).members) == 2


@async_test
async def test_a_leader_that_never_syncs_expires_and_parked_followers_rejoin(coordinator, clock):
    _, follower = await completing_pair(coordinator)
    parked = asyncio.create_task(sync(coordinator, follower))
    await settle()
    clock.advance(SESSION_MS)
    coordinator.tick()
    assert (await parked).error is ErrorCode.REBALANCE_IN_PROGRESS
    assert [m.member_id for m in coordinator.describe()[0].members] == [follower.member_id]
    alone = await join(coordinator, follower.member_id)
    assert (alone.generation_id, alone.leader_id) == (2, follower.member_id)


@async_test
async def test_pending_member_blocks_the_rebalance_until_it_expires(coordinator, clock):
    pending = await join(coordinator, require_known=True)
    joining = asyncio.create_task(join(coordinator, rebalance_ms=60_000))
    await settle()
    expires_exactly_after(coordinator, clock, SESSION_MS, joining)
    result = await joining
    assert (result.error, result.generation_id, len(result.members)) == (ErrorCode.NONE, 1, 1)
    assert (await join(coordinator, pending.member_id)).error is ErrorCode.UNKNOWN_MEMBER_ID


@async_test
async def test_initial_rebalance_delay_gathers_members_into_one_generation(delayed, clock):
    first = asyncio.create_task(join(delayed, rebalance_ms=60_000))
    await settle()
    clock.advance(2_000)
    delayed.tick()
    second = asyncio.create_task(join(delayed, rebalance_ms=60_000))
    await settle()
    clock.advance(INITIAL_DELAY_MS - STEP_MS)  # the newcomer extended the delay to 2 s + 3 s
    assert delayed.tick() == clock.now + STEP_MS / 1000
    assert not first.done()
    clock.advance(STEP_MS)
    delayed.tick()
    results = await asyncio.gather(first, second)
    assert [r.generation_id for r in results] == [1, 1]
    assert len(results[0].members) == 2


@async_test
async def test_run_loop_expires_sessions_and_ends_on_close(coordinator, clock):
    await stable_pair(coordinator)
    clock.advance(SESSION_MS)
    runner = asyncio.create_task(coordinator.run())
    await settle()
    assert state(coordinator) is GroupState.EMPTY, "both sessions expired"
    coordinator.close()
    await asyncio.wait_for(runner, timeout=1)
    assert state(coordinator) is GroupState.DEAD


@async_test
async def test_close_releases_parked_requests(coordinator):
    await join(coordinator, require_known=True)  # keeps the next join waiting
    parked_join = asyncio.create_task(join(coordinator))
    _, follower = await completing_pair(coordinator, group="other")
    parked_sync = asyncio.create_task(sync(coordinator, follower, group="other"))
    await settle()
    assert not parked_join.done() and not parked_sync.done()

    coordinator.close()
    assert (await parked_join).error is ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert (await parked_sync).error is ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert (await join(coordinator)).error is ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert coordinator.heartbeat(GROUP, 1, "m", None) is ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert coordinator.fetch_offsets(GROUP, None) == (ErrorCode.COORDINATOR_NOT_AVAILABLE, {})
    assert coordinator.commit_offsets(GROUP, -1, "", None, [("t", 0, 1, None)]) == {
        ("t", 0): ErrorCode.COORDINATOR_NOT_AVAILABLE
    }
