"""The group coordinator's state machine, driven request by request with a fake clock.

Every timeout is exercised by advancing the fake clock and calling ``tick()``, the method the
coordinator's run loop calls, so nothing here sleeps; ``settle()`` only yields to the event loop
so that concurrent requests park in the coordinator before the test goes on. Clock steps are
multiples of 1/8 s so that deadlines compare exactly in floating point.
"""

import asyncio

from reference_broker.errors import ErrorCode
from reference_broker.groups import (
    GroupCoordinator,
    GroupMember,
    GroupState,
    JoinGroupResult,
)
from tests.coordinator_harness import (
    GROUP,
    INITIAL_DELAY_MS,
    REBALANCE_MS,
    FakeClock,
    async_test,
    completing_pair,
    join,
    settle,
    stable_pair,
    state,
    sync,
)

# --- joining and syncing ---------------------------------------------------------------------


@async_test
async def test_two_members_join_in_one_rebalance_and_sync_distributes(coordinator):
    first = await join(coordinator, require_known=True, client_id="c1")
    second = await join(coordinator, require_known=True, client_id="c2")
    assert first.error is second.error is ErrorCode.MEMBER_ID_REQUIRED

    leader_join = asyncio.create_task(join(coordinator, first.member_id, client_id="c1"))
    await settle()
    assert not leader_join.done(), "the join must wait for the other pending member"
    follower = await join(coordinator, second.member_id, client_id="c2")
    leader = await leader_join

    assert leader.error is follower.error is ErrorCode.NONE
    assert leader.generation_id == follower.generation_id == 1
    assert leader.leader_id == follower.leader_id == first.member_id
    assert leader.protocol_name == "range"
    assert leader.members == [
        GroupMember(first.member_id, None, b"range-meta"),
        GroupMember(second.member_id, None, b"range-meta"),
    ]
    assert follower.members == []
    assert state(coordinator) is GroupState.COMPLETING_REBALANCE

    follower_sync = asyncio.create_task(sync(coordinator, follower))
    await settle()
    assert not follower_sync.done(), "followers wait for the leader's assignment"
    leader_sync = await sync(coordinator, leader, {first.member_id: b"p0", second.member_id: b"p1"})
    assert (leader_sync.error, leader_sync.assignment) == (ErrorCode.NONE, b"p0")
    assert ((await follower_sync).error, (await follower_sync).assignment) == (
        ErrorCode.NONE,
        b"p1",
    )
    [summary] = coordinator.describe()
    assert (summary.state, summary.generation_id, summary.protocol_name) == (
        GroupState.STABLE,
        1,
        "range",
    )
    assert [(m.member_id, m.client_id, m.assignment) for m in summary.members] == [
        (first.member_id, "c1", b"p0"),
        (second.member_id, "c2", b"p1"),
    ]
    assert first.member_id.startswith("c1-") and second.member_id.startswith("c2-")


@async_test
async def test_member_leaving_makes_the_other_rejoin_and_take_everything(coordinator):
    leader, follower = await stable_pair(coordinator)

    result = coordinator.leave_group(GROUP, [(follower.member_id, None)])
    assert result.error is ErrorCode.NONE
    assert result.members == [(follower.member_id, None, ErrorCode.NONE)]
    assert state(coordinator) is GroupState.PREPARING_REBALANCE
    assert (
        coordinator.heartbeat(GROUP, leader.generation_id, leader.member_id, None)
        is ErrorCode.REBALANCE_IN_PROGRESS
    )

    rejoined = await join(coordinator, leader.member_id)
    assert (rejoined.error, rejoined.generation_id) == (ErrorCode.NONE, 2)
    assert [m.member_id for m in rejoined.members] == [leader.member_id]
    synced = await sync(coordinator, rejoined, {leader.member_id: b"everything"})
    assert synced.assignment == b"everything"
    assert coordinator.heartbeat(GROUP, 2, leader.member_id, None) is ErrorCode.NONE


@async_test
async def test_last_member_leaving_empties_the_group(coordinator):
    joined = await join(coordinator)
    await sync(coordinator, joined, {joined.member_id: b"x"})
    coordinator.leave_group(GROUP, [(joined.member_id, None)])
    [summary] = coordinator.describe()
    assert (summary.state, summary.generation_id, summary.members) == (GroupState.EMPTY, 2, [])


@async_test
async def test_rejoin_with_same_metadata_while_completing_repeats_the_answer(coordinator):
    leader, follower = await stable_pair(coordinator)
    rejoin = asyncio.create_task(join(coordinator, leader.member_id))  # leader: rebalance
    await settle()
    again = await join(coordinator, follower.member_id)
    leader2 = await rejoin
    assert again.generation_id == leader2.generation_id == 2
    assert state(coordinator) is GroupState.COMPLETING_REBALANCE
    # A member heartbeating between JoinGroup and SyncGroup is fine.
    assert coordinator.heartbeat(GROUP, 2, follower.member_id, None) is ErrorCode.NONE

    repeated = await join(coordinator, leader.member_id)
    assert repeated == leader2, "a lost JoinGroup answer is repeated, leader members included"
    assert state(coordinator) is GroupState.COMPLETING_REBALANCE


@async_test
async def test_follower_rejoining_a_stable_group_unchanged_causes_no_rebalance(coordinator):
    _, follower = await stable_pair(coordinator)
    again = await join(coordinator, follower.member_id)
    assert (again.error, again.generation_id, again.members) == (ErrorCode.NONE, 1, [])
    assert state(coordinator) is GroupState.STABLE
    assert (await sync(coordinator, again)).assignment == b"B"


@async_test
async def test_new_member_during_completing_sends_parked_syncs_back_to_join(coordinator):
    leader, follower = await completing_pair(coordinator)
    parked = asyncio.create_task(sync(coordinator, follower))
    await settle()
    newcomer = asyncio.create_task(join(coordinator, client_id="late"))
    await settle()
    assert (await parked).error is ErrorCode.REBALANCE_IN_PROGRESS
    late_sync = await sync(coordinator, leader, {leader.member_id: b"x"})
    assert late_sync.error is ErrorCode.REBALANCE_IN_PROGRESS
    results = await asyncio.gather(
        join(coordinator, leader.member_id), join(coordinator, follower.member_id), newcomer
    )
    assert {r.generation_id for r in results} == {2}
    assert len(results[0].members) == 3


@async_test
async def test_protocol_is_chosen_by_vote_among_protocols_all_support(coordinator):
    ids = [(await join(coordinator, require_known=True)).member_id for _ in range(3)]
    preferences = [
        [("range", b"r0"), ("roundrobin", b"rr0")],
        [("roundrobin", b"rr1"), ("range", b"r1")],
        [("sticky", b"s2"), ("roundrobin", b"rr2"), ("range", b"r2")],
    ]
    leader, *_ = await asyncio.gather(
        *(join(coordinator, mid, protocols=p) for mid, p in zip(ids, preferences, strict=True))
    )
    assert leader.protocol_name == "roundrobin"
    assert [m.metadata for m in leader.members] == [b"rr0", b"rr1", b"rr2"]


# --- errors ----------------------------------------------------------------------------------


@async_test
async def test_request_errors(coordinator):
    assert (await join(coordinator, group="")).error is ErrorCode.INVALID_GROUP_ID
    assert (await join(coordinator, session_ms=999)).error is ErrorCode.INVALID_SESSION_TIMEOUT
    assert (
        await join(coordinator, session_ms=1_800_001)
    ).error is ErrorCode.INVALID_SESSION_TIMEOUT
    assert (await join(coordinator, "nobody")).error is ErrorCode.UNKNOWN_MEMBER_ID
    assert (await join(coordinator, protocols=[])).error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL

    leader, _ = await stable_pair(coordinator)
    other_type = await join(coordinator, protocol_type="connect")
    no_common = await join(coordinator, protocols=[("sticky", b"")])
    assert other_type.error is no_common.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert (await join(coordinator, "nobody")).error is ErrorCode.UNKNOWN_MEMBER_ID

    mid = leader.member_id
    assert coordinator.heartbeat("", 1, mid, None) is ErrorCode.INVALID_GROUP_ID
    assert coordinator.heartbeat("other", 1, mid, None) is ErrorCode.UNKNOWN_MEMBER_ID
    assert coordinator.heartbeat(GROUP, 1, "nobody", None) is ErrorCode.UNKNOWN_MEMBER_ID
    assert coordinator.heartbeat(GROUP, 7, mid, None) is ErrorCode.ILLEGAL_GENERATION
    for group_id, generation, member, error in [
        ("", 1, mid, ErrorCode.INVALID_GROUP_ID),
        (GROUP, 1, "nobody", ErrorCode.UNKNOWN_MEMBER_ID),
        (GROUP, 0, mid, ErrorCode.ILLEGAL_GENERATION),
    ]:
        synced = await coordinator.sync_group(group_id, generation, member, None, None, None, {})
        assert synced.error is error
    mismatch = await coordinator.sync_group(GROUP, 1, mid, None, "consumer", "sticky", {})
    assert mismatch.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert coordinator.leave_group("", [(mid, None)]).error is ErrorCode.INVALID_GROUP_ID
    assert coordinator.leave_group(GROUP, [("nobody", None)]).members == [
        ("nobody", None, ErrorCode.UNKNOWN_MEMBER_ID)
    ]
    assert state(coordinator) is GroupState.STABLE, "no error may disturb the group"


@async_test
async def test_sync_while_preparing_a_rebalance_is_refused(coordinator):
    leader, follower = await stable_pair(coordinator)
    rejoin = asyncio.create_task(join(coordinator, leader.member_id))
    await settle()
    assert (await sync(coordinator, follower)).error is ErrorCode.REBALANCE_IN_PROGRESS
    coordinator.close()
    assert (await rejoin).error is ErrorCode.COORDINATOR_NOT_AVAILABLE


# --- static membership -----------------------------------------------------------------------


async def leader_and_static_worker(
    delayed: GroupCoordinator, clock: FakeClock
) -> tuple[JoinGroupResult, JoinGroupResult]:
    """A Stable group of a dynamic leader and the static member "worker-1" (assigned b"W")."""
    leader_join = asyncio.create_task(join(delayed))
    static_join = asyncio.create_task(join(delayed, instance="worker-1", require_known=True))
    await settle()
    clock.advance(INITIAL_DELAY_MS)
    delayed.tick()
    leader, static = await leader_join, await static_join
    parked = asyncio.create_task(sync(delayed, static, instance="worker-1"))
    await settle()
    await sync(delayed, leader, {leader.member_id: b"L", static.member_id: b"W"})
    assert (await parked).assignment == b"W"
    return leader, static


@async_test
async def test_restarted_static_member_keeps_its_slot_without_rebalance(delayed, clock):
    leader, static = await leader_and_static_worker(delayed, clock)
    assert static.error is ErrorCode.NONE, "static members skip MEMBER_ID_REQUIRED (KIP-345)"
    assert [m.group_instance_id for m in leader.members] == [None, "worker-1"]

    restarted = await join(delayed, instance="worker-1", require_known=True)
    assert restarted.error is ErrorCode.NONE
    assert restarted.member_id != static.member_id
    assert (restarted.generation_id, restarted.leader_id) == (1, leader.member_id)
    assert state(delayed) is GroupState.STABLE
    assert (await sync(delayed, restarted, instance="worker-1")).assignment == b"W"
    zombie = delayed.heartbeat(GROUP, 1, static.member_id, "worker-1")
    assert zombie is ErrorCode.FENCED_INSTANCE_ID
    assert delayed.heartbeat(GROUP, 1, restarted.member_id, "worker-1") is ErrorCode.NONE

    left = delayed.leave_group(GROUP, [("", "worker-1")])
    assert left.members == [("", "worker-1", ErrorCode.NONE)]
    assert state(delayed) is GroupState.PREPARING_REBALANCE


@async_test
async def test_absent_static_member_keeps_its_slot_through_a_rebalance(delayed, clock):
    leader, static = await leader_and_static_worker(delayed, clock)
    newcomer = asyncio.create_task(join(delayed, client_id="third"))
    await settle()
    rejoin = asyncio.create_task(join(delayed, leader.member_id))
    await settle()
    clock.advance(REBALANCE_MS)
    delayed.tick()
    leader2 = await rejoin
    assert (await newcomer).generation_id == leader2.generation_id == 2
    assert static.member_id in [m.member_id for m in leader2.members]

    back = await join(delayed, static.member_id, instance="worker-1")
    assert (back.error, back.generation_id) == (ErrorCode.NONE, 2), "no further rebalance"


# --- offsets ---------------------------------------------------------------------------------


@async_test
async def test_commit_and_fetch(coordinator):
    standalone = coordinator.commit_offsets(
        "solo", -1, "", None, [("t", 0, 42, "meta"), ("t", 1, 7, None)]
    )
    assert standalone == {("t", 0): ErrorCode.NONE, ("t", 1): ErrorCode.NONE}
    assert coordinator.fetch_offsets("solo", [("t", 0), ("t", 1), ("t", 2)]) == (
        ErrorCode.NONE,
        {("t", 0): (42, "meta"), ("t", 1): (7, ""), ("t", 2): (-1, "")},
    )
    assert coordinator.fetch_offsets("solo", None) == (
        ErrorCode.NONE,
        {("t", 0): (42, "meta"), ("t", 1): (7, "")},
    )
    assert coordinator.fetch_offsets("unknown", None) == (ErrorCode.NONE, {})
    assert [(s.group_id, s.state) for s in coordinator.describe()] == [("solo", GroupState.EMPTY)]

    leader, follower = await stable_pair(coordinator)
    ok = coordinator.commit_offsets(GROUP, 1, leader.member_id, None, [("t", 0, 5, "")])
    assert ok == {("t", 0): ErrorCode.NONE}
    assert coordinator.fetch_offsets(GROUP, [("t", 0)])[1] == {("t", 0): (5, "")}
    huge = coordinator.commit_offsets(GROUP, 1, leader.member_id, None, [("t", 1, 9, "x" * 4097)])
    assert huge == {("t", 1): ErrorCode.OFFSET_METADATA_TOO_LARGE}

    for generation, member, error in [
        (-1, "", ErrorCode.UNKNOWN_MEMBER_ID),  # standalone commit into a live group
        (0, leader.member_id, ErrorCode.ILLEGAL_GENERATION),
        (1, "nobody", ErrorCode.UNKNOWN_MEMBER_ID),
    ]:
        refused = coordinator.commit_offsets(GROUP, generation, member, None, [("t", 0, 99, "")])
        assert refused == {("t", 0): error}
    unknown_group = coordinator.commit_offsets("new", 3, "m", None, [("t", 0, 1, "")])
    assert unknown_group == {("t", 0): ErrorCode.ILLEGAL_GENERATION}
    assert coordinator.fetch_offsets(GROUP, [("t", 0)])[1] == {("t", 0): (5, "")}

    rejoin = asyncio.create_task(join(coordinator, leader.member_id))
    await settle()
    during_prepare = coordinator.commit_offsets(
        GROUP, 1, follower.member_id, None, [("t", 0, 6, "")]
    )
    assert during_prepare == {("t", 0): ErrorCode.NONE}, "members commit before they rejoin"
    await join(coordinator, follower.member_id)
    await rejoin
    during_completing = coordinator.commit_offsets(
        GROUP, 2, follower.member_id, None, [("t", 0, 7, "")]
    )
    assert during_completing == {("t", 0): ErrorCode.REBALANCE_IN_PROGRESS}
    assert coordinator.fetch_offsets(GROUP, None)[1] == {("t", 0): (6, "")}
