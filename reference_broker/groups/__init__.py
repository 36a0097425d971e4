"""Consumer groups: the classic group coordinator, committed offsets and lag, protocol-free.

Handlers translate requests into these calls; nothing here parses or builds wire messages.

The committed offsets and the lag view over them are needed at start (the offsets topic is
replayed then; a metrics scrape reports lag); the coordinator and its group model only at the
first group request. Their names are loaded when
first used (PEP 562), so a broker that imports this package for its offsets does not pay the
coordinator's start-up cost (its dataclasses: about 7 ms of a 100 ms start).
"""

import importlib
from typing import TYPE_CHECKING, Any

from reference_broker.groups.lag import LagRow, consumer_lag
from reference_broker.groups.offset_records import CommittedOffset
from reference_broker.groups.offsets import OFFSETS_TOPIC, OffsetStore, open_offset_store

if TYPE_CHECKING:
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

_LOADED_WHEN_USED = {
    "GroupCoordinator": "coordinator",
    "GroupMember": "group",
    "GroupState": "group",
    "GroupSummary": "group",
    "JoinGroupResult": "group",
    "LeaveGroupResult": "group",
    "MemberSummary": "group",
    "SyncGroupResult": "group",
}


def __getattr__(name: str) -> Any:
    module = _LOADED_WHEN_USED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


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
