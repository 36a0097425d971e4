"""Kafka's classic group coordinator: membership (``Membership``), committed offsets, and the
administration of groups (list, describe, delete groups and their offsets).

Offsets are checked against membership before they are stored: a commit must come from a
member of the current generation, or from a standalone consumer while the group has no
members, and administration never deletes what a live member may still need (Kafka's
NON_EMPTY_GROUP and GROUP_SUBSCRIBED_TO_TOPIC).
"""

import time
from collections.abc import Callable

from reference_broker.errors import ErrorCode
from reference_broker.groups.consumer_protocol import CONSUMER_PROTOCOL_TYPE, subscribed_topics
from reference_broker.groups.group import Group, GroupState, GroupSummary
from reference_broker.groups.membership import Membership
from reference_broker.groups.offsets import OffsetStore

MAX_METADATA_CHARS = 4096
"""Kafka's default ``offset.metadata.max.bytes``: longer commit metadata is refused."""


def _offsets_only(group_id: str) -> GroupSummary:
    """A group known only by its committed offsets: Empty, generation 0, no members."""
    return GroupSummary(group_id, GroupState.EMPTY, "", "", 0, "", [])


class GroupCoordinator(Membership):
    """Kafka's classic group coordinator for every group of this (single) broker."""

    def __init__(
        self,
        offsets: OffsetStore,
        *,
        min_session_timeout_ms: int = 1000,
        max_session_timeout_ms: int = 1_800_000,
        initial_rebalance_delay_ms: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            min_session_timeout_ms=min_session_timeout_ms,
            max_session_timeout_ms=max_session_timeout_ms,
            initial_rebalance_delay_ms=initial_rebalance_delay_ms,
            clock=clock,
        )
        self._offsets = offsets

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
        summaries = [g.summary() for g in self._groups.values()]
        offsets_only = [g for g in self._offsets.groups() if g not in self._groups]
        return summaries + [_offsets_only(g) for g in offsets_only]

    # --- administration ----------------------------------------------------------------------

    def list_groups(self) -> tuple[ErrorCode, list[GroupSummary]]:
        """ListGroups: every group ``describe()`` shows."""
        if self._closed:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, []
        return ErrorCode.NONE, self.describe()

    def describe_group(self, group_id: str) -> tuple[ErrorCode, GroupSummary]:
        """DescribeGroups (versions before 6): an unknown group is Dead, with no error, as
        Kafka answers; the empty group id is a group like any other here."""
        error = self._request_error(group_id, empty_group_id_ok=True)
        dead = GroupSummary(group_id, GroupState.DEAD, "", "", 0, "", [])
        if error is not ErrorCode.NONE:
            return error, dead
        group = self._groups.get(group_id)
        if group is not None:
            return ErrorCode.NONE, group.summary()
        if group_id in self._offsets.groups():
            return ErrorCode.NONE, _offsets_only(group_id)
        return ErrorCode.NONE, dead

    def delete_group(self, group_id: str) -> ErrorCode:
        """DeleteGroups for one group: its committed offsets get tombstones and the group is
        forgotten; a group with members is NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND."""
        error = self._request_error(group_id, empty_group_id_ok=True)
        if error is not ErrorCode.NONE:
            return error
        group = self._groups.get(group_id)
        committed = self._offsets.group_offsets(group_id)
        if group is None and not committed:
            return ErrorCode.GROUP_ID_NOT_FOUND
        if group is not None and group.members:
            return ErrorCode.NON_EMPTY_GROUP
        stored = self._offsets.delete(group_id, list(committed))
        if stored is ErrorCode.NONE:
            self._groups.pop(group_id, None)
        return stored

    def delete_offsets(
        self, group_id: str, partitions: list[tuple[str, int]]
    ) -> tuple[ErrorCode, dict[tuple[str, int], ErrorCode]]:
        """OffsetDelete: a top-level error, or one per partition. An Empty group loses the
        offsets asked for; a live consumer group keeps those of topics it subscribes to
        (GROUP_SUBSCRIBED_TO_TOPIC); a live group of another protocol, whose subscriptions
        the coordinator cannot read, is NON_EMPTY_GROUP."""
        error = self._request_error(group_id)
        if error is not ErrorCode.NONE:
            return error, {}
        group = self._groups.get(group_id)
        if group is None and group_id not in self._offsets.groups():
            return ErrorCode.GROUP_ID_NOT_FOUND, {}
        subscribed: frozenset[str] | None = frozenset()
        if group is not None and group.members:
            if group.protocol_type != CONSUMER_PROTOCOL_TYPE:
                return ErrorCode.NON_EMPTY_GROUP, {}
            subscribed = _subscriptions(group)
        errors = {
            key: ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
            if subscribed is None or key[0] in subscribed
            else ErrorCode.NONE
            for key in partitions
        }
        deletable = [key for key, e in errors.items() if e is ErrorCode.NONE]
        stored = self._offsets.delete(group_id, deletable)
        errors.update({key: stored for key in deletable})
        if group is not None and not group.members and not self._offsets.group_offsets(group_id):
            del self._groups[group_id]  # Kafka: an Empty group without offsets becomes Dead
        return ErrorCode.NONE, errors


def _subscriptions(group: Group) -> frozenset[str] | None:
    """Topics any member subscribes to, read from its metadata for the protocol it would use;
    None (any topic) if one member's metadata is not a subscription."""
    topics: frozenset[str] = frozenset()
    for member in group.members.values():
        name = group.protocol_name or member.params.protocols[0][0]
        found = subscribed_topics(member.metadata(name))
        if found is None:
            return None
        topics |= found
    return topics
