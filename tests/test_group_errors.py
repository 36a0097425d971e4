"""Consumer-group error paths over the wire, with raw requests a well-behaved client never sends.

Real clients recover from these errors (they rejoin, refetch the coordinator, retry), which hides
whether the broker sent the right code or merely a code that happens to make a client retry. So
each request here is hand-built with the harness ``Connection``, and the test checks the exact
error code, in the place each API version carries it (LeaveGroup v0-2 answer for one member at
the top level, v3 per member; OffsetFetch v0-1 put errors on partitions, v2+ also at the top).
Every test ends by checking that the broker still serves: an error answer must never cost the
connection that asked, nor anybody else's.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_logbench.client import Connection
from reference_broker.errors import ErrorCode
from reference_broker.protocol import ApiKey, encode_request

SESSION_MS = 10_000
"""Long enough that no raw member expires during a test: expiry has its own test with clients."""
PROTOCOL = [{"name": "range", "metadata": b"opaque to the broker"}]
TOPIC = "orders"


# --- raw requests ----------------------------------------------------------------------------


def join_body(group: str, member_id: str = "", **changes: Any) -> dict[str, Any]:
    body = {
        "group_id": group,
        "session_timeout_ms": SESSION_MS,
        "rebalance_timeout_ms": SESSION_MS,
        "member_id": member_id,
        "group_instance_id": None,
        "protocol_type": "consumer",
        "protocols": PROTOCOL,
    }
    return body | changes


def send(conn: Connection, api_key: int, version: int, body: dict[str, Any]) -> int:
    """Send a request without waiting for its answer (a JoinGroup the broker will park);
    returns the correlation id to read the answer with ``conn.read_response``."""
    correlation = conn.next_correlation_id()
    conn.sock.sendall(encode_request(api_key, version, correlation, conn.client_id, body))
    return correlation


def stable_member(conn: Connection, group: str, version: int = 3) -> tuple[str, int]:
    """Join ``group`` as its only member and sync as leader: (member id, generation)."""
    joined = conn.request(ApiKey.JOIN_GROUP, version, join_body(group))
    assert joined["error_code"] == ErrorCode.NONE, joined
    member, generation = joined["member_id"], joined["generation_id"]
    assert joined["leader"] == member
    synced = conn.request(ApiKey.SYNC_GROUP, 1, sync_body(group, generation, member, b"all"))
    assert (synced["error_code"], synced["assignment"]) == (ErrorCode.NONE, b"all")
    return member, generation


def sync_body(
    group: str,
    generation: int,
    member: str,
    assignment: bytes | None = None,
) -> dict[str, Any]:
    """A SyncGroup; with ``assignment`` the sender assigns it to itself (a leader's sync)."""
    given = [] if assignment is None else [{"member_id": member, "assignment": assignment}]
    return {
        "group_id": group,
        "generation_id": generation,
        "member_id": member,
        "group_instance_id": None,
        "assignments": given,
    }


def heartbeat(
    conn: Connection, group: str, generation: int, member: str, version: int = 3
) -> ErrorCode:
    body = {
        "group_id": group,
        "generation_id": generation,
        "member_id": member,
        "group_instance_id": None,
    }
    return ErrorCode(conn.request(ApiKey.HEARTBEAT, version, body)["error_code"])


def commit(
    conn: Connection,
    version: int,
    group: str,
    offsets: dict[int, int],
    *,
    generation: int = -1,
    member: str = "",
    metadata: str | None = None,
) -> dict[int, ErrorCode]:
    """OffsetCommit of ``{partition: offset}`` of ``TOPIC``; ``{partition: error}``."""
    body = {
        "group_id": group,
        "generation_id_or_member_epoch": generation,
        "member_id": member,
        "group_instance_id": None,
        "retention_time_ms": -1,
        "topics": [
            {
                "name": TOPIC,
                "partitions": [
                    {
                        "partition_index": p,
                        "committed_offset": o,
                        "committed_leader_epoch": -1,
                        "commit_timestamp": -1,
                        "committed_metadata": metadata,
                    }
                    for p, o in offsets.items()
                ],
            }
        ],
    }
    [topic] = conn.request(ApiKey.OFFSET_COMMIT, version, body)["topics"]
    assert topic["name"] == TOPIC
    return {p["partition_index"]: ErrorCode(p["error_code"]) for p in topic["partitions"]}


def fetch_offsets(
    conn: Connection, version: int, group: str, partitions: list[int] | None
) -> dict[str, Any]:
    """The raw OffsetFetch answer; ``partitions=None`` asks for all (v2+ only)."""
    topics = None if partitions is None else [{"name": TOPIC, "partition_indexes": partitions}]
    return conn.request(ApiKey.OFFSET_FETCH, version, {"group_id": group, "topics": topics})


def assert_still_serving(broker: Any, *connections: Connection) -> None:
    """The connections that received errors still answer, a new one does too, and no
    connection was closed for a request the broker could not handle."""
    with Connection(broker.bootstrap) as fresh:
        for conn in (*connections, fresh):
            answer = conn.request(ApiKey.API_VERSIONS, 2, {})
            assert answer["error_code"] == ErrorCode.NONE
        member, generation = stable_member(fresh, "still-serving")
        assert heartbeat(fresh, "still-serving", generation, member) is ErrorCode.NONE
    assert broker.running
    assert broker.metric("logbench_request_errors_total") == 0, broker.stderr_tail()


# --- JoinGroup -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 3, 5])
def test_join_group_validation_errors(broker, version):
    """Requests refused before any group state changes: an empty group id and a session
    timeout outside the broker's bounds (default 1 s to 30 min)."""
    with Connection(broker.bootstrap) as conn:
        refused = conn.request(ApiKey.JOIN_GROUP, version, join_body(""))
        assert refused["error_code"] == ErrorCode.INVALID_GROUP_ID
        assert refused["generation_id"] == -1
        for session_ms in (10, 1_800_001):
            refused = conn.request(
                ApiKey.JOIN_GROUP, version, join_body("g", session_timeout_ms=session_ms)
            )
            assert refused["error_code"] == ErrorCode.INVALID_SESSION_TIMEOUT, session_ms
        # Nothing above created a member: a proper join is the first and only one.
        _, generation = stable_member(conn, "g")
        assert generation == 1
        assert_still_serving(broker, conn)


@pytest.mark.parametrize("version", [4, 5])
def test_join_v4_plus_requires_a_member_id_first(broker, version):
    """KIP-394: from v4 an unknown member gets MEMBER_ID_REQUIRED and an id to rejoin with,
    so a client whose join timed out cannot leave ghost members behind."""
    with Connection(broker.bootstrap) as conn:
        first = conn.request(ApiKey.JOIN_GROUP, version, join_body("g"))
        assert first["error_code"] == ErrorCode.MEMBER_ID_REQUIRED
        assigned = first["member_id"]
        assert assigned.startswith(conn.client_id + "-")
        assert first["generation_id"] == -1

        joined = conn.request(ApiKey.JOIN_GROUP, version, join_body("g", assigned))
        assert joined["error_code"] == ErrorCode.NONE
        assert (joined["member_id"], joined["leader"], joined["generation_id"]) == (
            assigned,
            assigned,
            1,
        )
        assert [m["member_id"] for m in joined["members"]] == [assigned]
        assert joined["protocol_name"] == "range"

        # An id the broker never handed out is refused, not adopted.
        forged = conn.request(ApiKey.JOIN_GROUP, version, join_body("g", "forged-id"))
        assert forged["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
        assert_still_serving(broker, conn)


def test_join_v3_does_not_require_a_member_id(broker):
    """Before v4 the broker must not answer MEMBER_ID_REQUIRED: old clients do not know it."""
    with Connection(broker.bootstrap) as conn:
        joined = conn.request(ApiKey.JOIN_GROUP, 3, join_body("g"))
        assert joined["error_code"] == ErrorCode.NONE
        assert joined["member_id"]


def test_inconsistent_group_protocol(broker):
    """A joiner whose protocol type differs from the group's, or who shares no assignor with
    it, could never be given an assignment: refused at once, the group left as it was."""
    with Connection(broker.bootstrap) as conn, Connection(broker.bootstrap) as other:
        member, generation = stable_member(conn, "g")
        wrong_type = other.request(ApiKey.JOIN_GROUP, 3, join_body("g", protocol_type="connect"))
        assert wrong_type["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        no_shared = other.request(
            ApiKey.JOIN_GROUP,
            3,
            join_body("g", protocols=[{"name": "roundrobin", "metadata": b""}]),
        )
        assert no_shared["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        empty_type = other.request(ApiKey.JOIN_GROUP, 3, join_body("new", protocol_type=""))
        assert empty_type["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL

        # No rebalance was started: the member's generation still holds.
        assert heartbeat(conn, "g", generation, member) is ErrorCode.NONE
        assert_still_serving(broker, conn, other)


# --- SyncGroup, Heartbeat, OffsetCommit: who is asking ----------------------------------------


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_unknown_member_and_illegal_generation(broker, version):
    """SyncGroup, Heartbeat and OffsetCommit name a member and a generation: an unknown member
    must rejoin from scratch (UNKNOWN_MEMBER_ID), a stale generation must rejoin the group
    (ILLEGAL_GENERATION); neither may disturb the real member."""
    commit_version = {0: 1, 1: 2, 2: 5, 3: 7}[version]  # OffsetCommit v0 names no member
    with Connection(broker.bootstrap) as conn:
        member, generation = stable_member(conn, "g")

        assert heartbeat(conn, "g", generation, "nobody", version) is ErrorCode.UNKNOWN_MEMBER_ID
        synced = conn.request(ApiKey.SYNC_GROUP, version, sync_body("g", generation, "nobody"))
        assert synced["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
        assert commit(
            conn, commit_version, "g", {0: 5, 1: 6}, generation=generation, member="nobody"
        ) == {0: ErrorCode.UNKNOWN_MEMBER_ID, 1: ErrorCode.UNKNOWN_MEMBER_ID}
        # A group nobody joined has no members to know.
        unknown_group = heartbeat(conn, "no-such-group", 1, member, version)
        assert unknown_group is ErrorCode.UNKNOWN_MEMBER_ID

        for stale in (generation - 1, generation + 1):
            assert heartbeat(conn, "g", stale, member, version) is ErrorCode.ILLEGAL_GENERATION
            synced = conn.request(ApiKey.SYNC_GROUP, version, sync_body("g", stale, member))
            assert synced["error_code"] == ErrorCode.ILLEGAL_GENERATION
            assert commit(conn, commit_version, "g", {0: 5}, generation=stale, member=member) == {
                0: ErrorCode.ILLEGAL_GENERATION
            }

        # None of it was committed, and the real member is undisturbed.
        fetched = fetch_offsets(conn, 2, "g", [0, 1])
        assert [p["committed_offset"] for p in fetched["topics"][0]["partitions"]] == [-1, -1]
        assert heartbeat(conn, "g", generation, member, version) is ErrorCode.NONE
        assert commit(conn, commit_version, "g", {0: 5}, generation=generation, member=member) == {
            0: ErrorCode.NONE
        }
        assert_still_serving(broker, conn)


def test_heartbeat_during_a_rebalance_says_rejoin(broker):
    """A heartbeat is how a member of a Stable group learns that another member joined:
    REBALANCE_IN_PROGRESS until it rejoins; then both get the next generation."""
    with Connection(broker.bootstrap) as conn, Connection(broker.bootstrap) as newcomer:
        member, generation = stable_member(conn, "g")
        parked = send(newcomer, ApiKey.JOIN_GROUP, 3, join_body("g"))

        assert heartbeat(conn, "g", generation, member) is ErrorCode.REBALANCE_IN_PROGRESS
        # The old generation may no longer be synced to, but may still commit its progress.
        synced = conn.request(ApiKey.SYNC_GROUP, 3, sync_body("g", generation, member))
        assert synced["error_code"] == ErrorCode.REBALANCE_IN_PROGRESS
        assert commit(conn, 7, "g", {0: 3}, generation=generation, member=member) == {
            0: ErrorCode.NONE
        }

        rejoined = conn.request(ApiKey.JOIN_GROUP, 3, join_body("g", member))
        joined = newcomer.read_response(ApiKey.JOIN_GROUP, 3, parked)
        for answer in (rejoined, joined):
            assert answer["error_code"] == ErrorCode.NONE
            assert answer["generation_id"] == generation + 1
            assert answer["leader"] == member
        assert len(rejoined["members"]) == 2 and joined["members"] == []

        follower = joined["member_id"]
        assignments = [
            {"member_id": member, "assignment": b"p0"},
            {"member_id": follower, "assignment": b"p1"},
        ]
        synced = conn.request(
            ApiKey.SYNC_GROUP,
            3,
            sync_body("g", generation + 1, member) | {"assignments": assignments},
        )
        assert (synced["error_code"], synced["assignment"]) == (ErrorCode.NONE, b"p0")
        synced = newcomer.request(ApiKey.SYNC_GROUP, 3, sync_body("g", generation + 1, follower))
        assert (synced["error_code"], synced["assignment"]) == (ErrorCode.NONE, b"p1")
        assert heartbeat(conn, "g", generation + 1, member) is ErrorCode.NONE
        assert heartbeat(newcomer, "g", generation + 1, follower) is ErrorCode.NONE
        assert_still_serving(broker, conn, newcomer)


# --- LeaveGroup ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 2])
def test_leave_group_v0_to_v2_answer_one_member_at_the_top(broker, version):
    with Connection(broker.bootstrap) as conn:
        member, generation = stable_member(conn, "g")
        body = {"group_id": "g", "member_id": "nobody"}
        unknown = conn.request(ApiKey.LEAVE_GROUP, version, body)
        assert unknown["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
        assert "members" not in unknown  # v3+ only

        left = conn.request(ApiKey.LEAVE_GROUP, version, body | {"member_id": member})
        assert left["error_code"] == ErrorCode.NONE
        assert heartbeat(conn, "g", generation, member) is ErrorCode.UNKNOWN_MEMBER_ID
        empty_id = conn.request(ApiKey.LEAVE_GROUP, version, {"group_id": "", "member_id": member})
        assert empty_id["error_code"] == ErrorCode.INVALID_GROUP_ID
        assert_still_serving(broker, conn)


def test_leave_group_v3_answers_per_member(broker):
    """v3 (KIP-345) leaves several members at once; one unknown member does not fail the
    others: the top-level error stays NONE and each member gets its own code."""
    with Connection(broker.bootstrap) as conn:
        member, generation = stable_member(conn, "g")
        body = {
            "group_id": "g",
            "members": [
                {"member_id": "nobody", "group_instance_id": None},
                {"member_id": member, "group_instance_id": None},
            ],
        }
        left = conn.request(ApiKey.LEAVE_GROUP, 3, body)
        assert left["error_code"] == ErrorCode.NONE
        assert [(m["member_id"], m["error_code"]) for m in left["members"]] == [
            ("nobody", ErrorCode.UNKNOWN_MEMBER_ID),
            (member, ErrorCode.NONE),
        ]
        assert heartbeat(conn, "g", generation, member) is ErrorCode.UNKNOWN_MEMBER_ID
        assert_still_serving(broker, conn)


# --- OffsetCommit and OffsetFetch across versions -------------------------------------------


def test_offsets_across_versions(broker):
    """A standalone consumer (v0, or generation -1 without a member id) may commit only while
    the group has no members; what anyone commits reads back through every OffsetFetch
    version, and a partition never committed reads as offset -1."""
    with Connection(broker.bootstrap) as conn:
        assert commit(conn, 0, "g", {0: 10, 1: 20}, metadata="v0") == {
            0: ErrorCode.NONE,
            1: ErrorCode.NONE,
        }
        assert commit(conn, 1, "g", {1: 21}) == {1: ErrorCode.NONE}  # metadata null: reads ""

        v1 = fetch_offsets(conn, 1, "g", [0, 1, 2])
        assert "error_code" not in v1  # v0-1 carry errors on partitions only
        assert [
            (p["partition_index"], p["committed_offset"], p["metadata"], p["error_code"])
            for p in v1["topics"][0]["partitions"]
        ] == [(0, 10, "v0", 0), (1, 21, "", 0), (2, -1, "", 0)]

        everything = fetch_offsets(conn, 2, "g", None)  # null topics: all committed (v2+)
        assert everything["error_code"] == ErrorCode.NONE
        assert [
            (t["name"], [(p["partition_index"], p["committed_offset"]) for p in t["partitions"]])
            for t in everything["topics"]
        ] == [(TOPIC, [(0, 10), (1, 21)])]
        v5 = fetch_offsets(conn, 5, "g", [3])
        assert (v5["error_code"], v5["topics"][0]["partitions"][0]["committed_offset"]) == (
            ErrorCode.NONE,
            -1,
        )
        never = fetch_offsets(conn, 3, "never-committed", [0])
        assert never["topics"][0]["partitions"][0]["committed_offset"] == -1

        # Once the group has a live member, standalone commits would overwrite its progress.
        member, generation = stable_member(conn, "g")
        assert commit(conn, 0, "g", {0: 99}) == {0: ErrorCode.UNKNOWN_MEMBER_ID}
        assert commit(conn, 7, "g", {0: 99}) == {0: ErrorCode.UNKNOWN_MEMBER_ID}
        assert commit(
            conn, 7, "g", {0: 11}, generation=generation, member=member, metadata="v7"
        ) == {0: ErrorCode.NONE}
        v2 = fetch_offsets(conn, 2, "g", [0])
        assert [(p["committed_offset"], p["metadata"]) for p in v2["topics"][0]["partitions"]] == [
            (11, "v7")
        ]
        assert_still_serving(broker, conn)


def test_commit_metadata_too_large(broker):
    """Kafka caps commit metadata (offset.metadata.max.bytes, 4096): the partition gets
    OFFSET_METADATA_TOO_LARGE, the others in the same request still commit."""
    with Connection(broker.bootstrap) as conn:
        body = {
            "group_id": "g",
            "topics": [
                {
                    "name": TOPIC,
                    "partitions": [
                        {
                            "partition_index": 0,
                            "committed_offset": 1,
                            "committed_metadata": "x" * 4097,
                        },
                        {"partition_index": 1, "committed_offset": 2, "committed_metadata": "ok"},
                    ],
                }
            ],
        }
        [topic] = conn.request(ApiKey.OFFSET_COMMIT, 2, body)["topics"]
        assert [p["error_code"] for p in topic["partitions"]] == [
            ErrorCode.OFFSET_METADATA_TOO_LARGE,
            ErrorCode.NONE,
        ]
        fetched = fetch_offsets(conn, 1, "g", [0, 1])
        assert [p["committed_offset"] for p in fetched["topics"][0]["partitions"]] == [-1, 2]
        assert_still_serving(broker, conn)
