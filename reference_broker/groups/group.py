"""A consumer group and its members as the classic protocol sees them, and the answers the
coordinator gives: the data of ``membership`` and ``coordinator``, with the decisions that
concern one group only (which protocol wins, who is fenced, what a describe shows).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, TypeVar

from reference_broker.errors import ErrorCode

NO_GENERATION = -1
"""The generation a JoinGroup error carries, and a standalone consumer commits with."""

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
    """One member in ``describe()``; metadata and assignment are empty unless the group is
    Stable (as in Kafka: before that, neither is settled)."""

    member_id: str
    client_id: str
    client_host: str
    assignment: bytes
    group_instance_id: str | None = None
    metadata: bytes = b""


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
class JoinParams:
    """What a member said in its latest JoinGroup: kept to vote, time out and describe."""

    group_instance_id: str | None
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    client_id: str
    client_host: str


@dataclass(eq=False)
class Member:
    member_id: str
    params: JoinParams
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
class Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    generation_id: int = 0
    protocol_type: str = ""
    protocol_name: str = ""
    leader_id: str = ""
    members: dict[str, Member] = field(default_factory=dict)
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

    def join_result(self, member: Member) -> JoinGroupResult:
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

    def sync_result(self, member: Member) -> SyncGroupResult:
        return SyncGroupResult(
            ErrorCode.NONE, self.protocol_type, self.protocol_name, member.assignment
        )

    def summary(self) -> GroupSummary:
        """What DescribeGroups and ``describe()`` show: protocol, member metadata and
        assignments only once Stable, as Kafka shows them."""
        stable = self.state is GroupState.STABLE
        return GroupSummary(
            self.group_id,
            self.state,
            self.protocol_type,
            self.protocol_name if stable else "",
            self.generation_id,
            self.leader_id,
            [
                MemberSummary(
                    m.member_id,
                    m.params.client_id,
                    m.params.client_host,
                    m.assignment if stable else b"",
                    m.params.group_instance_id,
                    m.metadata(self.protocol_name) if stable else b"",
                )
                for m in self.members.values()
            ],
        )

    def drop_member(self, member: Member) -> None:
        """Forget a member: its parked requests are answered UNKNOWN_MEMBER_ID."""
        unknown = ErrorCode.UNKNOWN_MEMBER_ID
        resolve(member.join_waiter, JoinGroupResult(unknown))
        resolve(member.sync_waiter, SyncGroupResult(unknown))
        del self.members[member.member_id]
        instance = member.params.group_instance_id
        if instance is not None and self.static_members.get(instance) == member.member_id:
            del self.static_members[instance]
        if self.leader_id == member.member_id:
            self.leader_id = next(iter(self.members), "")


def resolve(waiter: asyncio.Future[_T] | None, result: _T) -> None:
    """Answer a parked request unless its client already went away (the task was cancelled)."""
    if waiter is not None and not waiter.done():
        waiter.set_result(result)
