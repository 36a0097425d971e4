"""One function per API key: a decoded request dict in, a response dict out.

Handlers translate between the wire's shapes and the log's and the group coordinator's calls.
They hold no state of their own: everything lives on the ``Broker`` they are given. Field names
are the snake_case forms of Kafka's JSON message definitions (see ``reference_broker.protocol``).
The modules follow the APIs' families: ``topics`` (cluster and topic administration), ``data``
(produce and fetch), ``groups`` (consumer groups); ``common`` holds what they share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from reference_broker.errors import ErrorCode
from reference_broker.handlers.common import Body, CloseConnection, Request
from reference_broker.handlers.data import (
    handle_fetch,
    handle_init_producer_id,
    handle_list_offsets,
    handle_produce,
)
from reference_broker.handlers.groups import (
    handle_delete_groups,
    handle_describe_groups,
    handle_find_coordinator,
    handle_heartbeat,
    handle_join_group,
    handle_leave_group,
    handle_list_groups,
    handle_offset_commit,
    handle_offset_delete,
    handle_offset_fetch,
    handle_sync_group,
)
from reference_broker.handlers.topics import (
    handle_alter_configs,
    handle_create_partitions,
    handle_create_topics,
    handle_delete_records,
    handle_delete_topics,
    handle_describe_configs,
    handle_incremental_alter_configs,
    handle_metadata,
)
from reference_broker.protocol import SCHEMA_VERSIONS, ApiKey

if TYPE_CHECKING:
    from reference_broker.server import Broker


def api_versions_body(error: ErrorCode = ErrorCode.NONE) -> Body:
    """The ApiVersions response; also sent (as v0) to clients asking with a newer version."""
    return {
        "error_code": error,
        "api_keys": [
            {"api_key": int(key), "min_version": lo, "max_version": hi}
            for key, (lo, hi) in sorted(ADVERTISED.items())
        ],
        "throttle_time_ms": 0,
    }


async def handle_api_versions(broker: Broker, request: Request) -> Body:
    return api_versions_body()


Handler = Callable[["Broker", Request], Awaitable[Body | None]]


HANDLERS: dict[ApiKey, Handler] = {
    ApiKey.PRODUCE: handle_produce,
    ApiKey.FETCH: handle_fetch,
    ApiKey.LIST_OFFSETS: handle_list_offsets,
    ApiKey.METADATA: handle_metadata,
    ApiKey.OFFSET_COMMIT: handle_offset_commit,
    ApiKey.OFFSET_FETCH: handle_offset_fetch,
    ApiKey.FIND_COORDINATOR: handle_find_coordinator,
    ApiKey.JOIN_GROUP: handle_join_group,
    ApiKey.HEARTBEAT: handle_heartbeat,
    ApiKey.LEAVE_GROUP: handle_leave_group,
    ApiKey.SYNC_GROUP: handle_sync_group,
    ApiKey.API_VERSIONS: handle_api_versions,
    ApiKey.CREATE_TOPICS: handle_create_topics,
    ApiKey.INIT_PRODUCER_ID: handle_init_producer_id,
    ApiKey.DESCRIBE_CONFIGS: handle_describe_configs,
    ApiKey.DESCRIBE_GROUPS: handle_describe_groups,
    ApiKey.LIST_GROUPS: handle_list_groups,
    ApiKey.DELETE_GROUPS: handle_delete_groups,
    ApiKey.OFFSET_DELETE: handle_offset_delete,
    ApiKey.DELETE_TOPICS: handle_delete_topics,
    ApiKey.CREATE_PARTITIONS: handle_create_partitions,
    ApiKey.DELETE_RECORDS: handle_delete_records,
    ApiKey.ALTER_CONFIGS: handle_alter_configs,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: handle_incremental_alter_configs,
}


ADVERTISED: dict[ApiKey, tuple[int, int]] = {key: SCHEMA_VERSIONS[key] for key in HANDLERS}

__all__ = ["ADVERTISED", "HANDLERS", "CloseConnection", "Request", "api_versions_body"]
