"""Consumer group administration: list, describe, delete groups and their offsets.

Non-flexible versions only (ListGroups 0-2, DescribeGroups 0-4, DeleteGroups 0-1, OffsetDelete
0), field by field from Kafka's JSON definitions.
"""

from __future__ import annotations

from ..api_keys import ApiKey
from ..schema import BOOL, BYTES, INT16, INT32, STRING, Array, Field, Struct

NO_AUTHORIZED_OPERATIONS = -(2**31)
"""AuthorizedOperations' JSON default: operations were not asked for."""

_LIST_GROUPS = (
    Struct(),
    Struct(
        Field("throttle_time_ms", INT32, "1+"),
        Field("error_code", INT16),
        Field("groups", Array(Struct(Field("group_id", STRING), Field("protocol_type", STRING)))),
    ),
)

_DESCRIBE_GROUPS = (
    Struct(
        Field("groups", Array(STRING)),
        Field("include_authorized_operations", BOOL, "3+"),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "1+"),
        Field(
            "groups",
            Array(
                Struct(
                    Field("error_code", INT16),
                    Field("group_id", STRING),
                    Field("group_state", STRING),
                    Field("protocol_type", STRING),
                    Field("protocol_data", STRING),
                    Field(
                        "members",
                        Array(
                            Struct(
                                Field("member_id", STRING),
                                Field(
                                    "group_instance_id", STRING, "4+", nullable="4+", default=None
                                ),
                                Field("client_id", STRING),
                                Field("client_host", STRING),
                                Field("member_metadata", BYTES),
                                Field("member_assignment", BYTES),
                            )
                        ),
                    ),
                    Field("authorized_operations", INT32, "3+", default=NO_AUTHORIZED_OPERATIONS),
                )
            ),
        ),
    ),
)

_DELETE_GROUPS = (
    Struct(Field("groups_names", Array(STRING))),
    Struct(
        Field("throttle_time_ms", INT32),
        Field("results", Array(Struct(Field("group_id", STRING), Field("error_code", INT16)))),
    ),
)

_OFFSET_DELETE = (
    Struct(
        Field("group_id", STRING),
        Field(
            "topics",
            Array(
                Struct(
                    Field("name", STRING),
                    Field("partitions", Array(Struct(Field("partition_index", INT32)))),
                )
            ),
        ),
    ),
    Struct(
        Field("error_code", INT16),
        Field("throttle_time_ms", INT32),
        Field(
            "topics",
            Array(
                Struct(
                    Field("name", STRING),
                    Field(
                        "partitions",
                        Array(Struct(Field("partition_index", INT32), Field("error_code", INT16))),
                    ),
                )
            ),
        ),
    ),
)

DECLARED: dict[ApiKey, tuple[Struct, Struct]] = {
    ApiKey.LIST_GROUPS: _LIST_GROUPS,
    ApiKey.DESCRIBE_GROUPS: _DESCRIBE_GROUPS,
    ApiKey.DELETE_GROUPS: _DELETE_GROUPS,
    ApiKey.OFFSET_DELETE: _OFFSET_DELETE,
}
