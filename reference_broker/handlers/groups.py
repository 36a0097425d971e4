"""The consumer-group APIs: coordinator lookup, membership (join, sync, heartbeat, leave),
committed offsets and group administration (list, describe, delete groups and offsets),
translated into ``GroupCoordinator`` calls."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from reference_broker.errors import TRANSACTIONS_REFUSED, ErrorCode
from reference_broker.handlers.common import (
    Body,
    Request,
)

if TYPE_CHECKING:
    from reference_broker.server import Broker


COORDINATOR_KEY_GROUP = 0

log = logging.getLogger(__name__)


async def handle_find_coordinator(broker: Broker, request: Request) -> Body:
    """This broker coordinates every group; transactional ids are refused (v4+ asks for a
    batch of keys of one type at once, and gets one answer per key). The first lookup
    creates the offsets topic, as in Kafka."""
    body = request.body
    if body.get("key_type", COORDINATOR_KEY_GROUP) != COORDINATOR_KEY_GROUP:
        answer = _no_coordinator(
            ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, TRANSACTIONS_REFUSED
        )
    else:
        answer = {
            "error_code": ErrorCode.NONE,
            "error_message": None,
            "node_id": broker.config.node_id,
            "host": broker.host,
            "port": broker.port,
        }
        try:
            broker.offsets.create_topic()
        except OSError as exc:
            log.exception("creating the offsets topic failed")
            answer = _no_coordinator(
                ErrorCode.COORDINATOR_NOT_AVAILABLE, f"the offsets topic cannot be created: {exc}"
            )
    coordinators = [{"key": key, **answer} for key in body.get("coordinator_keys", [])]
    return {"throttle_time_ms": 0, **answer, "coordinators": coordinators}


def _no_coordinator(error: ErrorCode, message: str) -> Body:
    return {"error_code": error, "error_message": message, "node_id": -1, "host": "", "port": -1}


async def handle_join_group(broker: Broker, request: Request) -> Body:
    body = request.body
    result = await broker.coordinator.join_group(
        group_id=body["group_id"],
        member_id=body["member_id"],
        group_instance_id=body.get("group_instance_id"),
        protocol_type=body["protocol_type"],
        protocols=[(p["name"], bytes(p["metadata"])) for p in body["protocols"]],
        session_timeout_ms=body["session_timeout_ms"],
        rebalance_timeout_ms=body.get("rebalance_timeout_ms", -1)
        if request.version >= 1
        else body["session_timeout_ms"],
        client_id=request.header.client_id or "",
        client_host=request.client_host,
        require_known_member_id=request.version >= 4,
    )
    return {
        "throttle_time_ms": 0,
        "error_code": result.error,
        "generation_id": result.generation_id,
        "protocol_type": body["protocol_type"],  # v7+: a member joins only with the group's
        "protocol_name": result.protocol_name or "",
        "leader": result.leader_id,
        "member_id": result.member_id,
        "members": [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "metadata": m.metadata,
            }
            for m in result.members
        ],
    }


async def handle_sync_group(broker: Broker, request: Request) -> Body:
    body = request.body
    result = await broker.coordinator.sync_group(
        group_id=body["group_id"],
        generation_id=body["generation_id"],
        member_id=body["member_id"],
        group_instance_id=body.get("group_instance_id"),
        protocol_type=body.get("protocol_type"),
        protocol_name=body.get("protocol_name"),
        assignments={a["member_id"]: bytes(a["assignment"]) for a in body["assignments"]},
    )
    return {
        "throttle_time_ms": 0,
        "error_code": result.error,
        # v5+: the coordinator refused a type or name other than the group's, so echoing
        # them answers with the group's
        "protocol_type": body.get("protocol_type"),
        "protocol_name": body.get("protocol_name"),
        "assignment": result.assignment,
    }


async def handle_heartbeat(broker: Broker, request: Request) -> Body:
    body = request.body
    error = broker.coordinator.heartbeat(
        body["group_id"], body["generation_id"], body["member_id"], body.get("group_instance_id")
    )
    return {"throttle_time_ms": 0, "error_code": error}


async def handle_leave_group(broker: Broker, request: Request) -> Body:
    body = request.body
    if request.version >= 3:
        leaving = [(m["member_id"], m.get("group_instance_id")) for m in body["members"]]
    else:
        leaving = [(body["member_id"], None)]
    result = broker.coordinator.leave_group(body["group_id"], leaving)
    error = result.error
    if request.version < 3 and error == ErrorCode.NONE:
        error = result.members[0][2]  # v0-2 carry one member and no per-member errors
    return {
        "throttle_time_ms": 0,
        "error_code": error,
        "members": [
            {"member_id": member, "group_instance_id": instance, "error_code": error}
            for member, instance, error in result.members
        ],
    }


async def handle_offset_commit(broker: Broker, request: Request) -> Body:
    body = request.body
    offsets = [
        (topic["name"], p["partition_index"], p["committed_offset"], p.get("committed_metadata"))
        for topic in body["topics"]
        for p in topic["partitions"]
    ]
    errors = broker.coordinator.commit_offsets(
        body["group_id"],
        body.get("generation_id_or_member_epoch", -1),
        body.get("member_id", ""),
        body.get("group_instance_id"),
        offsets,
    )
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": topic["name"],
                "partitions": [
                    {
                        "partition_index": p["partition_index"],
                        "error_code": errors[(topic["name"], p["partition_index"])],
                    }
                    for p in topic["partitions"]
                ],
            }
            for topic in body["topics"]
        ],
    }


async def handle_offset_fetch(broker: Broker, request: Request) -> Body:
    """Committed offsets of one group (v0-7) or of a batch of groups (v8+)."""
    body = request.body
    if request.version >= 8:
        groups = [
            {"group_id": group["group_id"], **_committed(broker, group, partition_errors=False)}
            for group in body["groups"]
        ]
        return {"throttle_time_ms": 0, "groups": groups}
    # v0-1 have no top-level error code: the error goes on every partition instead.
    return {"throttle_time_ms": 0, **_committed(broker, body, request.version < 2)}


def _committed(broker: Broker, group: Body, partition_errors: bool) -> Body:
    """One group's answer: its error code and topics (all when the request names none)."""
    requested = group.get("topics")
    wanted = (
        None
        if requested is None
        else [(t["name"], index) for t in requested for index in t["partition_indexes"]]
    )
    error, committed = broker.coordinator.fetch_offsets(group["group_id"], wanted)
    topics: dict[str, list[Body]] = {}
    for (topic, index), (offset, metadata) in sorted(committed.items()):
        topics.setdefault(topic, []).append(
            {
                "partition_index": index,
                "committed_offset": offset,
                "committed_leader_epoch": -1,
                "metadata": metadata,
                "error_code": error if partition_errors else ErrorCode.NONE,
            }
        )
    return {
        "error_code": error,
        "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()],
    }


async def handle_list_groups(broker: Broker, request: Request) -> Body:
    error, groups = broker.coordinator.list_groups()
    return {
        "throttle_time_ms": 0,
        "error_code": error,
        "groups": [{"group_id": g.group_id, "protocol_type": g.protocol_type} for g in groups],
    }


async def handle_describe_groups(broker: Broker, request: Request) -> Body:
    described = []
    for group_id in request.body["groups"]:
        error, group = broker.coordinator.describe_group(group_id)
        described.append(
            {
                "error_code": error,
                "group_id": group_id,
                "group_state": group.state.value,
                "protocol_type": group.protocol_type,
                "protocol_data": group.protocol_name,
                "members": [
                    {
                        "member_id": m.member_id,
                        "group_instance_id": m.group_instance_id,
                        "client_id": m.client_id,
                        "client_host": m.client_host,
                        "member_metadata": m.metadata,
                        "member_assignment": m.assignment,
                    }
                    for m in group.members
                ],
            }
        )
    return {"throttle_time_ms": 0, "groups": described}


async def handle_delete_groups(broker: Broker, request: Request) -> Body:
    return {
        "throttle_time_ms": 0,
        "results": [
            {"group_id": group_id, "error_code": broker.coordinator.delete_group(group_id)}
            for group_id in request.body["groups_names"]
        ],
    }


async def handle_offset_delete(broker: Broker, request: Request) -> Body:
    """Partitions the broker does not have are UNKNOWN_TOPIC_OR_PARTITION, as in Kafka, and
    are not passed on to the coordinator."""
    body = request.body
    asked = [(t["name"], p["partition_index"]) for t in body["topics"] for p in t["partitions"]]
    known = [key for key in asked if broker.store.partition(*key) is not None]
    error, errors = broker.coordinator.delete_offsets(body["group_id"], known)
    topics: dict[str, list[Body]] = {}
    for key in asked:
        partition_error = errors.get(key, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        topics.setdefault(key[0], []).append(
            {"partition_index": key[1], "error_code": partition_error}
        )
    return {
        "error_code": error,
        "throttle_time_ms": 0,
        "topics": [] if error else [{"name": n, "partitions": p} for n, p in topics.items()],
    }
