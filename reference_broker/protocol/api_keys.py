"""API keys, the versions this codec handles, and where each API's flexible versions begin.

The ranges reach the flexible versions (KIP-482) Kafka 4.x clients start at; each API's upper
end is where the next version would need something the broker does not have (share groups,
topic ids in Produce and OffsetCommit, two-phase commit).
"""

from enum import IntEnum


class ApiKey(IntEnum):
    """The Kafka API keys the reference broker speaks (numbers from Kafka's message JSON)."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    CREATE_PARTITIONS = 37
    DELETE_GROUPS = 42
    INCREMENTAL_ALTER_CONFIGS = 44
    OFFSET_DELETE = 47


SCHEMA_VERSIONS: dict[ApiKey, tuple[int, int]] = {
    ApiKey.PRODUCE: (0, 11),
    ApiKey.FETCH: (0, 16),
    ApiKey.LIST_OFFSETS: (0, 8),
    ApiKey.METADATA: (0, 12),
    ApiKey.OFFSET_COMMIT: (0, 9),
    ApiKey.OFFSET_FETCH: (0, 9),
    ApiKey.FIND_COORDINATOR: (0, 4),
    ApiKey.JOIN_GROUP: (0, 9),
    ApiKey.HEARTBEAT: (0, 4),
    ApiKey.LEAVE_GROUP: (0, 5),
    ApiKey.SYNC_GROUP: (0, 5),
    ApiKey.API_VERSIONS: (0, 4),
    ApiKey.CREATE_TOPICS: (0, 7),
    ApiKey.INIT_PRODUCER_ID: (0, 5),
    ApiKey.DESCRIBE_CONFIGS: (0, 4),
    ApiKey.DELETE_TOPICS: (0, 6),
    ApiKey.DELETE_RECORDS: (0, 2),
    ApiKey.ALTER_CONFIGS: (0, 2),
    ApiKey.CREATE_PARTITIONS: (0, 3),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: (0, 1),
    ApiKey.DESCRIBE_GROUPS: (0, 4),
    ApiKey.LIST_GROUPS: (0, 2),
    ApiKey.DELETE_GROUPS: (0, 1),
    ApiKey.OFFSET_DELETE: (0, 0),
}
"""The (min, max) versions the codec encodes and decodes, per API key."""

# First flexible version ("flexibleVersions" in the JSON): from there on a request uses header
# v2 and a response header v1 (except ApiVersions), and bodies use compact lengths and tagged
# fields. Clients send such versions before they know what the broker supports (ApiVersions v3+
# above all), so the header of any version must parse.
FIRST_FLEXIBLE_VERSION: dict[ApiKey, int] = {
    ApiKey.PRODUCE: 9,
    ApiKey.FETCH: 12,
    ApiKey.LIST_OFFSETS: 6,
    ApiKey.METADATA: 9,
    ApiKey.OFFSET_COMMIT: 8,
    ApiKey.OFFSET_FETCH: 6,
    ApiKey.FIND_COORDINATOR: 3,
    ApiKey.JOIN_GROUP: 6,
    ApiKey.HEARTBEAT: 4,
    ApiKey.LEAVE_GROUP: 4,
    ApiKey.SYNC_GROUP: 4,
    ApiKey.API_VERSIONS: 3,
    ApiKey.CREATE_TOPICS: 5,
    ApiKey.INIT_PRODUCER_ID: 2,
    ApiKey.DESCRIBE_CONFIGS: 4,
    ApiKey.DELETE_TOPICS: 4,
    ApiKey.DELETE_RECORDS: 2,
    ApiKey.ALTER_CONFIGS: 2,
    ApiKey.CREATE_PARTITIONS: 2,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: 1,
    ApiKey.DESCRIBE_GROUPS: 5,
    ApiKey.LIST_GROUPS: 3,
    ApiKey.DELETE_GROUPS: 2,
    ApiKey.OFFSET_DELETE: 1,
}


def api_name(api_key: int) -> str:
    """Kafka's name for an API key ("Produce"), or "api key N" for one this codec does not know."""
    try:
        key = ApiKey(api_key)
    except ValueError:
        return f"api key {api_key}"
    return "".join(word.capitalize() for word in key.name.split("_"))


def is_flexible_request(api_key: int, api_version: int) -> bool:
    """Whether a request of this key and version carries request header v2 (tagged fields).

    Unknown keys are taken as non-flexible: their header is read up to the client id, which is
    all the broker needs to answer UNSUPPORTED_VERSION. So is a key without an entry in
    FIRST_FLEXIBLE_VERSION (an API whose JSON says ``"flexibleVersions": "none"``).
    """
    try:
        first = FIRST_FLEXIBLE_VERSION.get(ApiKey(api_key))
    except ValueError:
        return False
    return first is not None and api_version >= first
