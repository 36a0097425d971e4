"""The classic consumer group protocol as a protocol-free asyncio state machine.

A group moves through Kafka's states (``GroupState``)::

    Empty --join--> PreparingRebalance --all joined / rebalance timeout--> CompletingRebalance
    CompletingRebalance --leader's SyncGroup--> Stable
    Stable / CompletingRebalance --join with new metadata, leave, session expiry--> Preparing...
    PreparingRebalance --nobody left--> Empty            (any state --close()--> Dead)

Kafka answers JoinGroup and SyncGroup late (it parks the callbacks in a purgatory); here the
request's coroutine awaits a future that the rebalance resolves, so the handler can simply
``await`` the call. Everything runs on one event loop, so no locks are needed: every state change
happens between two awaits.

Timers (session expiry, rebalance timeout, initial rebalance delay) are deadlines on the injected
clock, acted on by ``tick()``, which ``run()`` calls whenever the earliest deadline is due; tests
drive ``tick()`` with a fake clock instead of sleeping.

Group membership lives in memory only: unlike Kafka, the broker does not persist group metadata.
After a restart, members get UNKNOWN_MEMBER_ID and simply rejoin. Committed offsets and group
administration are the coordinator's (``coordinator.GroupCoordinator``, built on this class).
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator

from reference_broker.errors import ErrorCode
from reference_broker.groups.group import (
    Group,
    GroupState,
    JoinGroupResult,
    JoinParams,
    LeaveGroupResult,
    Member,
    SyncGroupResult,
    resolve,
)


class Membership:
    """Group membership for every group of this (single) broker: JoinGroup, SyncGroup,
    Heartbeat and LeaveGroup, and the timers that expire members and end rebalances.

    Public calls mirror the requests; errors come back as ``ErrorCode`` values in the result,
    exactly where the protocol carries them, so handlers only copy fields.
    """

    def __init__(
        self,
        *,
        min_session_timeout_ms: int = 1000,
        max_session_timeout_ms: int = 1_800_000,
        initial_rebalance_delay_ms: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._min_session_ms = min_session_timeout_ms
        self._max_session_ms = max_session_timeout_ms
        self._initial_delay = initial_rebalance_delay_ms / 1000
        self._clock = clock
        self._groups: dict[str, Group] = {}
        self._closed = False
        self._wakeup = asyncio.Event()

    # --- JoinGroup ---------------------------------------------------------------------------

    async def join_group(
        self,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        require_known_member_id: bool,
    ) -> JoinGroupResult:
        """Join (or rejoin) a group; returns once the rebalance this join is part of completes,
        which takes up to the largest member rebalance timeout."""
        params = JoinParams(
            group_instance_id,
            protocol_type,
            protocols,
            session_timeout_ms,
            rebalance_timeout_ms,
            client_id,
            client_host,
        )
        outcome = self._join(group_id, member_id, params, require_known_member_id)
        return outcome if isinstance(outcome, JoinGroupResult) else await outcome

    def _join(
        self, group_id: str, member_id: str, params: JoinParams, require_known_member_id: bool
    ) -> JoinGroupResult | asyncio.Future[JoinGroupResult]:
        group = self._join_target(group_id, member_id, params)
        if isinstance(group, ErrorCode):
            return JoinGroupResult(group, member_id=member_id)
        if member_id:
            return self._join_known(group, member_id, params)
        instance = params.group_instance_id
        new_id = f"{instance or params.client_id}-{uuid.uuid4()}"
        if instance is not None and instance in group.static_members:
            return self._rejoin_static(group, new_id, params)
        if require_known_member_id and instance is None:
            # KIP-394: a member id costs nothing until its owner proves it is alive by rejoining
            # with it, so a client retrying timed-out joins cannot flood the group. Static
            # members are exempt (as in Kafka): their instance id already names their slot.
            group.pending[new_id] = self._clock() + params.session_timeout_ms / 1000
            self._wakeup.set()
            return JoinGroupResult(ErrorCode.MEMBER_ID_REQUIRED, member_id=new_id)
        return self._add_member(group, new_id, params)

    def _join_target(self, group_id: str, member_id: str, params: JoinParams) -> Group | ErrorCode:
        """The group a JoinGroup may join (created for a new member), or why it may not."""
        error = self._request_error(group_id)
        if error is not ErrorCode.NONE:
            return error
        if not self._min_session_ms <= params.session_timeout_ms <= self._max_session_ms:
            return ErrorCode.INVALID_SESSION_TIMEOUT
        group = self._groups.get(group_id)
        if group is None:
            if member_id:
                return ErrorCode.UNKNOWN_MEMBER_ID
            group = self._groups[group_id] = Group(group_id)
        if not group.supports(params.protocol_type, params.protocols):
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        return group

    def _join_known(
        self, group: Group, member_id: str, params: JoinParams
    ) -> JoinGroupResult | asyncio.Future[JoinGroupResult]:
        if member_id in group.pending:
            return self._add_member(group, member_id, params)
        if group.is_fenced(member_id, params.group_instance_id):
            return JoinGroupResult(ErrorCode.FENCED_INSTANCE_ID, member_id=member_id)
        member = group.members.get(member_id)
        instance = params.group_instance_id
        if member is None or (instance is not None and instance not in group.static_members):
            return JoinGroupResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id)
        if member.params.protocols == params.protocols and (
            group.state is GroupState.COMPLETING_REBALANCE
            or (group.state is GroupState.STABLE and member_id != group.leader_id)
        ):
            # Nothing changed: the member lost our answer (say, to a request timeout) or it
            # rejoins for no reason of ours; repeat the current generation.
            self._touch(member)
            return group.join_result(member)
        # New metadata, or the leader asking for a rebalance (say, topics it watches changed).
        return self._update_member(group, member, params)

    def _rejoin_static(
        self, group: Group, new_id: str, params: JoinParams
    ) -> JoinGroupResult | asyncio.Future[JoinGroupResult]:
        """A restarted static member (KIP-345) takes over its old slot under a new member id,
        fencing the old process, and keeps its assignment without a rebalance when nothing
        changed; the leader and changed metadata still rebalance, which is always safe."""
        instance = params.group_instance_id
        assert instance is not None
        member = group.members.pop(group.static_members[instance])
        fenced = ErrorCode.FENCED_INSTANCE_ID
        resolve(member.join_waiter, JoinGroupResult(fenced, member_id=member.member_id))
        resolve(member.sync_waiter, SyncGroupResult(fenced))
        member.join_waiter = member.sync_waiter = None
        if group.leader_id == member.member_id:
            group.leader_id = new_id
        member.member_id = new_id
        group.members[new_id] = member
        group.static_members[instance] = new_id
        if (
            group.state is GroupState.STABLE
            and member.params.protocols == params.protocols
            and new_id != group.leader_id
        ):
            member.params = params
            self._touch(member)
            return group.join_result(member)
        return self._update_member(group, member, params)

    def _add_member(
        self, group: Group, member_id: str, params: JoinParams
    ) -> asyncio.Future[JoinGroupResult]:
        group.pending.pop(member_id, None)
        if not group.members:
            group.protocol_type = params.protocol_type
        member = Member(member_id, params, expires_at=0.0)
        group.members[member_id] = member
        if not group.leader_id:
            group.leader_id = member_id
        if params.group_instance_id is not None:
            group.static_members[params.group_instance_id] = member_id
        if group.state is GroupState.PREPARING_REBALANCE:
            # During the initial delay every newcomer buys the others a little more time, so a
            # fleet of consumers starting together lands in one rebalance, not one each.
            now = self._clock()
            if now < group.join_not_before:
                group.join_not_before = min(now + self._initial_delay, group.join_deadline)
        return self._update_member(group, member, params)

    def _update_member(
        self, group: Group, member: Member, params: JoinParams
    ) -> asyncio.Future[JoinGroupResult]:
        member.params = params
        waiter = asyncio.get_running_loop().create_future()
        resolve(member.join_waiter, JoinGroupResult(ErrorCode.REBALANCE_IN_PROGRESS))
        member.join_waiter = waiter
        self._touch(member)
        self._rebalance(group)
        return waiter

    # --- SyncGroup ---------------------------------------------------------------------------

    async def sync_group(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: dict[str, bytes],
    ) -> SyncGroupResult:
        """Collect the leader's assignment and hand each member its share; followers wait here
        until the leader's SyncGroup arrives (or a new rebalance starts)."""
        found = self._member(group_id, generation_id, member_id, group_instance_id)
        if isinstance(found, ErrorCode):
            return SyncGroupResult(found)
        group, member = found
        if protocol_type not in (None, group.protocol_type) or protocol_name not in (
            None,
            group.protocol_name,
        ):
            return SyncGroupResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if group.state is GroupState.PREPARING_REBALANCE:
            return SyncGroupResult(ErrorCode.REBALANCE_IN_PROGRESS)
        self._touch(member)
        if group.state is GroupState.STABLE:
            return group.sync_result(member)
        waiter = asyncio.get_running_loop().create_future()
        resolve(member.sync_waiter, SyncGroupResult(ErrorCode.REBALANCE_IN_PROGRESS))
        member.sync_waiter = waiter
        if member_id == group.leader_id:
            group.state = GroupState.STABLE
            for each in group.members.values():
                each.assignment = assignments.get(each.member_id, b"")
                resolve(each.sync_waiter, group.sync_result(each))
                each.sync_waiter = None
                self._touch(each)
        return await waiter

    # --- Heartbeat and LeaveGroup ------------------------------------------------------------

    def heartbeat(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        """Keep the member's session alive; REBALANCE_IN_PROGRESS is how a member of a Stable
        group learns it must rejoin."""
        found = self._member(group_id, generation_id, member_id, group_instance_id)
        if isinstance(found, ErrorCode):
            return found
        group, member = found
        self._touch(member)
        if group.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        # CompletingRebalance answers NONE, as Kafka does since 2.4: a member may heartbeat
        # between its JoinGroup and SyncGroup, and must not be sent back to rejoin for it.
        return ErrorCode.NONE

    def leave_group(self, group_id: str, members: list[tuple[str, str | None]]) -> LeaveGroupResult:
        """Remove members at once (no waiting for their sessions to expire) and rebalance the
        rest. A static member leaves by its instance id alone (KIP-345 admin removal)."""
        error = self._request_error(group_id)
        if error is not ErrorCode.NONE:
            return LeaveGroupResult(error)
        group = self._groups.get(group_id)
        return LeaveGroupResult(
            ErrorCode.NONE,
            [(mid, instance, self._leave(group, mid, instance)) for mid, instance in members],
        )

    def _leave(self, group: Group | None, member_id: str, instance: str | None) -> ErrorCode:
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if member_id and group.is_fenced(member_id, instance):
            return ErrorCode.FENCED_INSTANCE_ID
        if member_id in group.pending:
            del group.pending[member_id]
            self._maybe_complete_join(group)
            return ErrorCode.NONE
        member_id = group.static_members.get(instance, member_id) if instance else member_id
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._remove_member(group, member)
        return ErrorCode.NONE

    # --- timers and life cycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Act on timers until ``close()``: sleep to the earliest deadline, or until a request
        may have set an earlier one."""
        while not self._closed:
            self._wakeup.clear()
            due = self.tick()
            timeout = None if due is None else max(0.0, due - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def tick(self) -> float | None:
        """Expire pending members and members whose session passed without a request, finish
        rebalances whose initial delay or rebalance timeout passed; return the next deadline
        on the clock (None: nothing scheduled)."""
        now = self._clock()
        for group in list(self._groups.values()):
            for member_id, expires_at in list(group.pending.items()):
                if now >= expires_at:
                    del group.pending[member_id]
            for member in [m for m in group.members.values() if not m.awaiting]:
                if now >= member.expires_at:
                    self._remove_member(group, member)
            if group.state is GroupState.PREPARING_REBALANCE and now >= group.join_deadline:
                self._complete_join(group)
            else:
                self._maybe_complete_join(group)
        return min(self._deadlines(now), default=None)

    def _deadlines(self, now: float) -> Iterator[float]:
        for group in self._groups.values():
            yield from group.pending.values()
            yield from (m.expires_at for m in group.members.values() if not m.awaiting)
            if group.state is GroupState.PREPARING_REBALANCE:
                yield group.join_deadline
                if group.join_not_before > now:
                    yield group.join_not_before

    def close(self) -> None:
        """Answer every parked JoinGroup and SyncGroup with COORDINATOR_NOT_AVAILABLE (so no
        client request hangs at shutdown), refuse new requests, and end ``run()``."""
        self._closed = True
        unavailable = ErrorCode.COORDINATOR_NOT_AVAILABLE
        for group in self._groups.values():
            group.state = GroupState.DEAD
            for member in group.members.values():
                resolve(member.join_waiter, JoinGroupResult(unavailable))
                resolve(member.sync_waiter, SyncGroupResult(unavailable))
                member.join_waiter = member.sync_waiter = None
        self._wakeup.set()

    # --- shared steps ------------------------------------------------------------------------

    def _request_error(self, group_id: str, *, empty_group_id_ok: bool = False) -> ErrorCode:
        """Checks every group request starts with. Offset APIs accept the empty group id, as
        Kafka does for backwards compatibility."""
        if self._closed:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if not group_id and not empty_group_id_ok:
            return ErrorCode.INVALID_GROUP_ID
        return ErrorCode.NONE

    def _member(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> tuple[Group, Member] | ErrorCode:
        """The member a SyncGroup, Heartbeat or OffsetCommit comes from, checked in Kafka's
        order: coordinator, group id, fenced instance, unknown member, stale generation."""
        error = self._request_error(group_id)
        if error is not ErrorCode.NONE:
            return error
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.is_fenced(member_id, group_instance_id):
            return ErrorCode.FENCED_INSTANCE_ID
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        return group, member

    def _touch(self, member: Member) -> None:
        """Restart the member's session: any request from it proves it alive."""
        member.expires_at = self._clock() + member.params.session_timeout_ms / 1000
        self._wakeup.set()

    def _rebalance(self, group: Group) -> None:
        """Start a rebalance unless one is under way, then see whether it can finish."""
        if group.state is not GroupState.PREPARING_REBALANCE:
            if group.state is GroupState.COMPLETING_REBALANCE:
                # Members parked in SyncGroup go back to JoinGroup for the new generation.
                for member in group.members.values():
                    member.assignment = b""
                    resolve(member.sync_waiter, SyncGroupResult(ErrorCode.REBALANCE_IN_PROGRESS))
                    member.sync_waiter = None
            now = self._clock()
            timeout = group.rebalance_timeout()
            group.join_deadline = now + timeout
            initial = group.state is GroupState.EMPTY
            group.join_not_before = now + min(self._initial_delay, timeout) if initial else now
            group.state = GroupState.PREPARING_REBALANCE
            self._wakeup.set()
        self._maybe_complete_join(group)

    def _maybe_complete_join(self, group: Group) -> None:
        if (
            group.state is GroupState.PREPARING_REBALANCE
            and group.all_joined()
            and self._clock() >= group.join_not_before
        ):
            self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        """End the join phase: drop dynamic members that did not rejoin, start the next
        generation, and answer every parked JoinGroup (the leader gets the members)."""
        for member in list(group.members.values()):
            # A static member that did not rejoin keeps its slot until its session expires:
            # that is what lets it restart without costing the group a rebalance.
            if member.join_waiter is None and member.params.group_instance_id is None:
                group.drop_member(member)
        joined = [m for m in group.members.values() if m.join_waiter is not None]
        if group.members and not joined:
            # Only absent static members are left: give them another rebalance timeout.
            group.join_deadline = self._clock() + group.rebalance_timeout()
            return
        group.generation_id += 1
        if not group.members:
            group.state, group.protocol_name, group.leader_id = GroupState.EMPTY, "", ""
            return
        if group.leader_id not in {m.member_id for m in joined}:
            group.leader_id = joined[0].member_id
        group.protocol_name = group.select_protocol()
        group.state = GroupState.COMPLETING_REBALANCE
        for member in group.members.values():
            resolve(member.join_waiter, group.join_result(member))
            member.join_waiter = None
            self._touch(member)

    def _remove_member(self, group: Group, member: Member) -> None:
        """Remove a member that left or expired; the others rebalance without it."""
        group.drop_member(member)
        self._rebalance(group)
