"""Consumer groups: the classic group coordinator, committed offsets and lag, protocol-free.

Handlers translate requests into these calls; nothing here parses or builds wire messages.
"""

from reference_broker.groups.coordinator import GroupCoordinator
from reference_broker.groups.group import (
    GroupMember,
    GroupState,
    GroupSummary,
    JoinGroupResult,
    LeaveGroupResult,
    MemberSummary,
    SyncGroupResult,
)
from reference_broker.groups.lag import LagRow, consumer_lag
from reference_broker.groups.offset_records import CommittedOffset
from reference_broker.groups.offsets import OFFSETS_TOPIC, OffsetStore, open_offset_store

__all__ = [
    "OFFSETS_TOPIC",
    "CommittedOffset",
    "GroupCoordinator",
    "GroupMember",
    "GroupState",
    "GroupSummary",
    "JoinGroupResult",
    "LagRow",
    "LeaveGroupResult",
    "MemberSummary",
    "OffsetStore",
    "SyncGroupResult",
    "consumer_lag",
    "open_offset_store",
]
