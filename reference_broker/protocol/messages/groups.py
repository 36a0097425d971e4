"""Consumer groups: coordinator lookup, membership, committed offsets (request, response)."""

from __future__ import annotations

from ..api_keys import ApiKey
from ..schema import BOOL, BYTES, INT8, INT16, INT32, INT64, STRING, Array, Field, Struct

_FIND_COORDINATOR = (
    Struct(
        Field("key", STRING, "0-3"),
        Field("key_type", INT8, "1+", default=0),
        Field("coordinator_keys", Array(STRING), "4+"),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "1+"),
        Field("error_code", INT16, "0-3"),
        Field("error_message", STRING, "1-3", nullable="1-3"),
        Field("node_id", INT32, "0-3"),
        Field("host", STRING, "0-3"),
        Field("port", INT32, "0-3"),
        Field(
            "coordinators",
            Array(
                Struct(
                    Field("key", STRING, "4+"),
                    Field("node_id", INT32, "4+"),
                    Field("host", STRING, "4+"),
                    Field("port", INT32, "4+"),
                    Field("error_code", INT16, "4+"),
                    Field("error_message", STRING, "4+", nullable="4+"),
                )
            ),
            "4+",
        ),
    ),
)

_JOIN_GROUP = (
    Struct(
        Field("group_id", STRING),
        Field("session_timeout_ms", INT32),
        Field("rebalance_timeout_ms", INT32, "1+", default=-1),
        Field("member_id", STRING),
        Field("group_instance_id", STRING, "5+", nullable="5+", default=None),
        Field("protocol_type", STRING),
        Field("protocols", Array(Struct(Field("name", STRING), Field("metadata", BYTES)))),
        Field("reason", STRING, "8+", nullable="8+", default=None),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "2+"),
        Field("error_code", INT16),
        Field("generation_id", INT32, default=-1),
        Field("protocol_type", STRING, "7+", nullable="7+", default=None),
        Field("protocol_name", STRING, nullable="7+"),
        Field("leader", STRING),
        Field("skip_assignment", BOOL, "9+", default=False),
        Field("member_id", STRING),
        Field(
            "members",
            Array(
                Struct(
                    Field("member_id", STRING),
                    Field("group_instance_id", STRING, "5+", nullable="5+", default=None),
                    Field("metadata", BYTES),
                )
            ),
        ),
    ),
)

_SYNC_GROUP = (
    Struct(
        Field("group_id", STRING),
        Field("generation_id", INT32),
        Field("member_id", STRING),
        Field("group_instance_id", STRING, "3+", nullable="3+", default=None),
        Field("protocol_type", STRING, "5+", nullable="5+", default=None),
        Field("protocol_name", STRING, "5+", nullable="5+", default=None),
        Field(
            "assignments",
            Array(Struct(Field("member_id", STRING), Field("assignment", BYTES))),
        ),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "1+"),
        Field("error_code", INT16),
        Field("protocol_type", STRING, "5+", nullable="5+", default=None),
        Field("protocol_name", STRING, "5+", nullable="5+", default=None),
        Field("assignment", BYTES),
    ),
)

_HEARTBEAT = (
    Struct(
        Field("group_id", STRING),
        Field("generation_id", INT32),
        Field("member_id", STRING),
        Field("group_instance_id", STRING, "3+", nullable="3+", default=None),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "1+"),
        Field("error_code", INT16),
    ),
)

_LEAVE_GROUP = (
    Struct(
        Field("group_id", STRING),
        Field("member_id", STRING, "0-2"),
        Field(
            "members",
            Array(
                Struct(
                    Field("member_id", STRING, "3+"),
                    Field("group_instance_id", STRING, "3+", nullable="3+", default=None),
                    Field("reason", STRING, "5+", nullable="5+", default=None),
                )
            ),
            "3+",
        ),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "1+"),
        Field("error_code", INT16),
        Field(
            "members",
            Array(
                Struct(
                    Field("member_id", STRING, "3+"),
                    Field("group_instance_id", STRING, "3+", nullable="3+"),
                    Field("error_code", INT16, "3+"),
                )
            ),
            "3+",
        ),
    ),
)

_OFFSET_COMMIT = (
    Struct(
        Field("group_id", STRING),
        Field("generation_id_or_member_epoch", INT32, "1+", default=-1),
        Field("member_id", STRING, "1+"),
        Field("group_instance_id", STRING, "7+", nullable="7+", default=None),
        Field("retention_time_ms", INT64, "2-4", default=-1),
        Field(
            "topics",
            Array(
                Struct(
                    Field("name", STRING),
                    Field(
                        "partitions",
                        Array(
                            Struct(
                                Field("partition_index", INT32),
                                Field("committed_offset", INT64),
                                Field("committed_leader_epoch", INT32, "6+", default=-1),
                                Field("commit_timestamp", INT64, "1", default=-1),
                                Field("committed_metadata", STRING, nullable="0+"),
                            )
                        ),
                    ),
                )
            ),
        ),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "3+"),
        Field(
            "topics",
            Array(
                Struct(
                    Field("name", STRING),
                    Field(
                        "partitions",
                        Array(
                            Struct(
                                Field("partition_index", INT32),
                                Field("error_code", INT16),
                            )
                        ),
                    ),
                )
            ),
        ),
    ),
)

_OFFSET_FETCH = (
    Struct(
        Field("group_id", STRING, "0-7"),
        Field(
            "topics",
            Array(
                Struct(
                    Field("name", STRING, "0-7"),
                    Field("partition_indexes", Array(INT32), "0-7"),
                )
            ),
            "0-7",
            nullable="2-7",
        ),
        Field(
            "groups",
            Array(
                Struct(
                    Field("group_id", STRING, "8+"),
                    Field("member_id", STRING, "9+", nullable="9+", default=None),
                    Field("member_epoch", INT32, "9+", default=-1),
                    Field(
                        "topics",
                        Array(
                            Struct(
                                Field("name", STRING, "8+"),
                                Field("partition_indexes", Array(INT32), "8+"),
                            )
                        ),
                        "8+",
                        nullable="8+",
                    ),
                )
            ),
            "8+",
        ),
        Field("require_stable", BOOL, "7+", default=False),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "3+"),
        Field(
            "topics",
            Array(
                Struct(
                    Field("name", STRING, "0-7"),
                    Field(
                        "partitions",
                        Array(
                            Struct(
                                Field("partition_index", INT32, "0-7"),
                                Field("committed_offset", INT64, "0-7"),
                                Field("committed_leader_epoch", INT32, "5-7", default=-1),
                                Field("metadata", STRING, "0-7", nullable="0-7"),
                                Field("error_code", INT16, "0-7"),
                            )
                        ),
                        "0-7",
                    ),
                )
            ),
            "0-7",
        ),
        Field("error_code", INT16, "2-7", default=0),
        Field(
            "groups",
            Array(
                Struct(
                    Field("group_id", STRING, "8+"),
                    Field(
                        "topics",
                        Array(
                            Struct(
                                Field("name", STRING, "8+"),
                                Field(
                                    "partitions",
                                    Array(
                                        Struct(
                                            Field("partition_index", INT32, "8+"),
                                            Field("committed_offset", INT64, "8+"),
                                            Field(
                                                "committed_leader_epoch",
                                                INT32,
                                                "8+",
                                                default=-1,
                                            ),
                                            Field("metadata", STRING, "8+", nullable="8+"),
                                            Field("error_code", INT16, "8+"),
                                        )
                                    ),
                                    "8+",
                                ),
                            )
                        ),
                        "8+",
                    ),
                    Field("error_code", INT16, "8+", default=0),
                )
            ),
            "8+",
        ),
    ),
)

DECLARED: dict[ApiKey, tuple[Struct, Struct]] = {
    ApiKey.FIND_COORDINATOR: _FIND_COORDINATOR,
    ApiKey.JOIN_GROUP: _JOIN_GROUP,
    ApiKey.SYNC_GROUP: _SYNC_GROUP,
    ApiKey.HEARTBEAT: _HEARTBEAT,
    ApiKey.LEAVE_GROUP: _LEAVE_GROUP,
    ApiKey.OFFSET_COMMIT: _OFFSET_COMMIT,
    ApiKey.OFFSET_FETCH: _OFFSET_FETCH,
}
