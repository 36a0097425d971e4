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
After a restart, members get UNKNOWN_MEMBER_ID and simply rejoin. Committed offsets do persist
(``OffsetStore``).
"""

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, TypeVar

from reference_broker.errors import ErrorCode
from reference_broker.groups.offsets import OffsetStore

NO_GENERATION = -1
"""The generation a JoinGroup error carries, and a standalone consumer commits with."""

MAX_METADATA_CHARS = 4096
"""Kafka's default ``offset.metadata.max.bytes``: longer commit metadata is refused."""

_T = TypeVar("_T")


class GroupState(StrEnum):
    """The classic protocol's group states, named as DescribeGroups reports them."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True)
class GroupMember:
    """A member as the leader sees it: the metadata of the protocol the group selected."""

    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True)
class JoinGroupResult:
    """The JoinGroup answer; ``members`` is filled for the leader only, who assigns."""

    error: ErrorCode
    generation_id: int = NO_GENERATION
    protocol_type: str = ""
    protocol_name: str = ""
    leader_id: str = ""
    member_id: str = ""
    members: list[GroupMember] = field(default_factory=list)


@dataclass(frozen=True)
class SyncGroupResult:
    """The SyncGroup answer: this member's share of the leader's assignment."""

    error: ErrorCode
    protocol_type: str = ""
    protocol_name: str = ""
    assignment: bytes = b""


@dataclass(frozen=True)
class LeaveGroupResult:
    """The LeaveGroup answer: a top-level error and one ``(member_id, instance, error)`` each."""

    error: ErrorCode
    members: list[tuple[str, str | None, ErrorCode]] = field(default_factory=list)


class MemberSummary(NamedTuple):
    """One member in ``describe()``."""

    member_id: str
    client_id: str
    client_host: str
    assignment: bytes


@dataclass(frozen=True)
class GroupSummary:
    """One group in ``describe()``, for DescribeGroups, metrics and debugging."""

    group_id: str
    state: GroupState
    protocol_type: str
    protocol_name: str
    generation_id: int
    leader_id: str
    members: list[MemberSummary]


@dataclass(frozen=True)
class _JoinParams:
    """What a member said in its latest JoinGroup: kept to vote, time out and describe."""

    group_instance_id: str | None
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    client_id: str
    client_host: str


@dataclass(eq=False)
class _Member:
    member_id: str
    params: _JoinParams
    expires_at: float
    assignment: bytes = b""
    join_waiter: asyncio.Future[JoinGroupResult] | None = None
    sync_waiter: asyncio.Future[SyncGroupResult] | None = None

    @property
    def awaiting(self) -> bool:
        """A member parked in JoinGroup or SyncGroup cannot heartbeat (its connection waits for
        the answer), so, as in Kafka, it does not expire while parked."""
        return self.join_waiter is not None or self.sync_waiter is not None

    def metadata(self, protocol_name: str) -> bytes:
        return dict(self.params.protocols)[protocol_name]


@dataclass(eq=False)
class _Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    generation_id: int = 0
    protocol_type: str = ""
    protocol_name: str = ""
    leader_id: str = ""
    members: dict[str, _Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)
    """group_instance_id -> the member id that instance currently holds."""
    pending: dict[str, float] = field(default_factory=dict)
    """Member ids handed out with MEMBER_ID_REQUIRED -> when they expire unless they rejoin."""
    join_not_before: float = 0.0
    join_deadline: float = 0.0

    def supports(self, protocol_type: str, protocols: list[tuple[str, bytes]]) -> bool:
        """A joiner must share the group's protocol type and at least one protocol with every
        member, else no assignor could serve them all (INCONSISTENT_GROUP_PROTOCOL)."""
        if not protocol_type or not protocols:
            return False
        if not self.members:
            return True
        return protocol_type == self.protocol_type and any(
            all(name in dict(m.params.protocols) for m in self.members.values())
            for name, _ in protocols
        )

    def select_protocol(self) -> str:
        """Each member votes for its most preferred protocol among those all members support;
        the most votes win, ties going to the leader's preference (Kafka leaves ties open)."""
        names = [dict(m.params.protocols) for m in self.members.values()]
        leader_order = [name for name, _ in self.members[self.leader_id].params.protocols]
        candidates = [name for name in leader_order if all(name in n for n in names)]
        votes = Counter(
            next(name for name, _ in m.params.protocols if name in candidates)
            for m in self.members.values()
        )
        return max(candidates, key=lambda name: votes[name])

    def all_joined(self) -> bool:
        return not self.pending and all(m.join_waiter is not None for m in self.members.values())

    def rebalance_timeout(self) -> float:
        """Seconds the join phase may last: the most patient member's rebalance timeout."""
        return max((m.params.rebalance_timeout_ms for m in self.members.values()), default=0) / 1000

    def is_fenced(self, member_id: str, group_instance_id: str | None) -> bool:
        """Another process now holds this static instance id: the caller is a zombie."""
        holder = self.static_members.get(group_instance_id) if group_instance_id else None
        return holder is not None and holder != member_id

    def leader_view(self) -> list[GroupMember]:
        return [
            GroupMember(m.member_id, m.params.group_instance_id, m.metadata(self.protocol_name))
            for m in self.members.values()
        ]

    def join_result(self, member: _Member) -> JoinGroupResult:
        is_leader = member.member_id == self.leader_id
        return JoinGroupResult(
            ErrorCode.NONE,
            self.generation_id,
            self.protocol_type,
            self.protocol_name,
            self.leader_id,
            member.member_id,
            self.leader_view() if is_leader else [],
        )


def _resolve(waiter: asyncio.Future[_T] | None, result: _T) -> None:
    """Answer a parked request unless its client already went away (the task was cancelled)."""
    if waiter is not None and not waiter.done():
        waiter.set_result(result)


class GroupCoordinator:
    """Kafka's classic group coordinator for every group of this (single) broker.

    Public calls mirror the requests; errors come back as ``ErrorCode`` values in the result,
    exactly where the protocol carries them, so handlers only copy fields.
    """

    def __init__(
        self,
        offsets: OffsetStore,
        *,
        min_session_timeout_ms: int = 1000,
        max_session_timeout_ms: int = 1_800_000,
        initial_rebalance_delay_ms: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._offsets = offsets
        self._min_session_ms = min_session_timeout_ms
        self._max_session_ms = max_session_timeout_ms
        self._initial_delay = initial_rebalance_delay_ms / 1000
        self._clock = clock
        self._groups: dict[str, _Group] = {}
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
        params = _JoinParams(
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
        self, group_id: str, member_id: str, params: _JoinParams, require_known_member_id: bool
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

    def _join_target(
        self, group_id: str, member_id: str, params: _JoinParams
    ) -> _Group | ErrorCode:
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
            group = self._groups[group_id] = _Group(group_id)
        if not group.supports(params.protocol_type, params.protocols):
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        return group

    def _join_known(
        self, group: _Group, member_id: str, params: _JoinParams
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
        self, group: _Group, new_id: str, params: _JoinParams
    ) -> JoinGroupResult | asyncio.Future[JoinGroupResult]:
        """A restarted static member (KIP-345) takes over its old slot under a new member id,
        fencing the old process, and keeps its assignment without a rebalance when nothing
        changed; the leader and changed metadata still rebalance, which is always safe."""
        instance = params.group_instance_id
        assert instance is not None
        member = group.members.pop(group.static_members[instance])
        fenced = ErrorCode.FENCED_INSTANCE_ID
        _resolve(member.join_waiter, JoinGroupResult(fenced, member_id=member.member_id))
        _resolve(member.sync_waiter, SyncGroupResult(fenced))
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
        self, group: _Group, member_id: str, params: _JoinParams
    ) -> asyncio.Future[JoinGroupResult]:
        group.pending.pop(member_id, None)
        if not group.members:
            group.protocol_type = params.protocol_type
        member = _Member(member_id, params, expires_at=0.0)
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
        self, group: _Group, member: _Member, params: _JoinParams
    ) -> asyncio.Future[JoinGroupResult]:
        member.params = params
        waiter = asyncio.get_running_loop().create_future()
        _resolve(member.join_waiter, JoinGroupResult(ErrorCode.REBALANCE_IN_PROGRESS))
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
            return self._sync_result(group, member)
        waiter = asyncio.get_running_loop().create_future()
        _resolve(member.sync_waiter, SyncGroupResult(ErrorCode.REBALANCE_IN_PROGRESS))
        member.sync_waiter = waiter
        if member_id == group.leader_id:
            group.state = GroupState.STABLE
            for each in group.members.values():
                each.assignment = assignments.get(each.member_id, b"")
                _resolve(each.sync_waiter, self._sync_result(group, each))
                each.sync_waiter = None
                self._touch(each)
        return await waiter

    @staticmethod
    def _sync_result(group: _Group, member: _Member) -> SyncGroupResult:
        return SyncGroupResult(
            ErrorCode.NONE, group.protocol_type, group.protocol_name, member.assignment
        )

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

    def _leave(self, group: _Group | None, member_id: str, instance: str | None) -> ErrorCode:
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

    # --- offsets -----------------------------------------------------------------------------

    def commit_offsets(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        offsets: list[tuple[str, int, int, str | None]],
    ) -> dict[tuple[str, int], ErrorCode]:
        """Commit durably (to the offsets log) before answering, as Kafka acknowledges only
        what ``__consumer_offsets`` holds.

        Generation -1 with no member id is a standalone consumer (``assign()``): allowed while
        the group has no members, so it cannot overwrite the progress of a live group.
        """
        error = self._commit_error(group_id, generation_id, member_id, group_instance_id)
        if error is not ErrorCode.NONE:
            return {(topic, partition): error for topic, partition, _, _ in offsets}
        errors: dict[tuple[str, int], ErrorCode] = {}
        accepted: list[tuple[str, int, int, str]] = []
        for topic, partition, offset, metadata in offsets:
            if metadata is not None and len(metadata) > MAX_METADATA_CHARS:
                errors[(topic, partition)] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            else:
                # Kafka stores a null metadata as "" (OffsetAndMetadata.NoMetadata).
                accepted.append((topic, partition, offset, metadata or ""))
                errors[(topic, partition)] = ErrorCode.NONE
        if accepted:
            stored = self._offsets.commit(group_id, accepted)
            if stored is not ErrorCode.NONE:
                errors.update({(topic, partition): stored for topic, partition, _, _ in accepted})
        return errors

    def _commit_error(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        error = self._request_error(group_id, empty_group_id_ok=True)
        if error is not ErrorCode.NONE:
            return error
        group = self._groups.get(group_id)
        if generation_id < 0 and not member_id and group_instance_id is None:
            standalone_ok = group is None or not group.members
            return ErrorCode.NONE if standalone_ok else ErrorCode.UNKNOWN_MEMBER_ID
        if group is None:
            # Kafka: a member's commit to a group the coordinator does not know comes from an
            # older incarnation of that group (say, from before a broker restart).
            return (
                ErrorCode.ILLEGAL_GENERATION
                if generation_id >= 0
                else (ErrorCode.UNKNOWN_MEMBER_ID)
            )
        found = self._member(group_id, generation_id, member_id, group_instance_id)
        if isinstance(found, ErrorCode):
            return found
        if group.state is GroupState.COMPLETING_REBALANCE:
            # The member has the new generation but no assignment yet: what would it commit?
            return ErrorCode.REBALANCE_IN_PROGRESS
        # Allowed while PreparingRebalance: members commit their progress before rejoining.
        self._touch(found[1])
        return ErrorCode.NONE

    def fetch_offsets(
        self, group_id: str, partitions: list[tuple[str, int]] | None
    ) -> tuple[ErrorCode, dict[tuple[str, int], tuple[int, str]]]:
        """Committed offsets, whatever the group's state (standalone consumers have no state);
        ``None`` asks for every committed partition, one never committed gets offset -1 and
        metadata "" (as Kafka answers; a null committed metadata reads back as "" too)."""
        error = self._request_error(group_id, empty_group_id_ok=True)
        if error is not ErrorCode.NONE:
            return error, {}
        committed = self._offsets.group_offsets(group_id)
        if partitions is None:
            return ErrorCode.NONE, {key: (c.offset, c.metadata) for key, c in committed.items()}
        found = {}
        for key in partitions:
            c = committed.get(key)
            found[key] = (-1, "") if c is None else (c.offset, c.metadata)
        return ErrorCode.NONE, found

    # --- views -------------------------------------------------------------------------------

    def describe(self) -> list[GroupSummary]:
        """Every group: those with members or a history, and (as Empty, generation 0) those
        that only have committed offsets, such as standalone consumers' or any group's after a
        restart."""
        summaries = [
            GroupSummary(
                g.group_id,
                g.state,
                g.protocol_type,
                g.protocol_name,
                g.generation_id,
                g.leader_id,
                [
                    MemberSummary(
                        m.member_id, m.params.client_id, m.params.client_host, m.assignment
                    )
                    for m in g.members.values()
                ],
            )
            for g in self._groups.values()
        ]
        offsets_only = [g for g in self._offsets.groups() if g not in self._groups]
        summaries += [GroupSummary(g, GroupState.EMPTY, "", "", 0, "", []) for g in offsets_only]
        return summaries

    def committed(self) -> Iterator[tuple[str, str, int, int]]:
        """``(group_id, topic, partition, offset)`` for every committed offset, for lag."""
        for group_id in self._offsets.groups():
            for (topic, partition), c in self._offsets.group_offsets(group_id).items():
                yield group_id, topic, partition, c.offset

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
                _resolve(member.join_waiter, JoinGroupResult(unavailable))
                _resolve(member.sync_waiter, SyncGroupResult(unavailable))
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
    ) -> tuple[_Group, _Member] | ErrorCode:
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

    def _touch(self, member: _Member) -> None:
        """Restart the member's session: any request from it proves it alive."""
        member.expires_at = self._clock() + member.params.session_timeout_ms / 1000
        self._wakeup.set()

    def _rebalance(self, group: _Group) -> None:
        """Start a rebalance unless one is under way, then see whether it can finish."""
        if group.state is not GroupState.PREPARING_REBALANCE:
            if group.state is GroupState.COMPLETING_REBALANCE:
                # Members parked in SyncGroup go back to JoinGroup for the new generation.
                for member in group.members.values():
                    member.assignment = b""
                    _resolve(member.sync_waiter, SyncGroupResult(ErrorCode.REBALANCE_IN_PROGRESS))
                    member.sync_waiter = None
            now = self._clock()
            timeout = group.rebalance_timeout()
            group.join_deadline = now + timeout
            initial = group.state is GroupState.EMPTY
            group.join_not_before = now + min(self._initial_delay, timeout) if initial else now
            group.state = GroupState.PREPARING_REBALANCE
            self._wakeup.set()
        self._maybe_complete_join(group)

    def _maybe_complete_join(self, group: _Group) -> None:
        if (
            group.state is GroupState.PREPARING_REBALANCE
            and group.all_joined()
            and self._clock() >= group.join_not_before
        ):
            self._complete_join(group)

    def _complete_join(self, group: _Group) -> None:
        """End the join phase: drop dynamic members that did not rejoin, start the next
        generation, and answer every parked JoinGroup (the leader gets the members)."""
        for member in list(group.members.values()):
            # A static member that did not rejoin keeps its slot until its session expires:
            # that is what lets it restart without costing the group a rebalance.
            if member.join_waiter is None and member.params.group_instance_id is None:
                self._drop_member(group, member)
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
            _resolve(member.join_waiter, group.join_result(member))
            member.join_waiter = None
            self._touch(member)

    def _remove_member(self, group: _Group, member: _Member) -> None:
        """Remove a member that left or expired; the others rebalance without it."""
        self._drop_member(group, member)
        self._rebalance(group)

    @staticmethod
    def _drop_member(group: _Group, member: _Member) -> None:
        unknown = ErrorCode.UNKNOWN_MEMBER_ID
        _resolve(member.join_waiter, JoinGroupResult(unknown))
        _resolve(member.sync_waiter, SyncGroupResult(unknown))
        del group.members[member.member_id]
        instance = member.params.group_instance_id
        if instance is not None and group.static_members.get(instance) == member.member_id:
            del group.static_members[instance]
        if group.leader_id == member.member_id:
            group.leader_id = next(iter(group.members), "")
