"""The data path: Metadata, Produce, Fetch, ListOffsets (request, response)."""

from __future__ import annotations

from ..api_keys import ApiKey
from ..schema import BOOL, INT8, INT16, INT32, INT64, RECORDS, STRING, UUID, Array, Field, Struct

_METADATA = (
    Struct(
        Field(
            "topics",
            Array(Struct(Field("topic_id", UUID, "10+"), Field("name", STRING, nullable="10+"))),
            nullable="1+",
        ),
        Field("allow_auto_topic_creation", BOOL, "4+", default=True),
        Field("include_cluster_authorized_operations", BOOL, "8-10"),
        Field("include_topic_authorized_operations", BOOL, "8+"),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "3+"),
        Field(
            "brokers",
            Array(
                Struct(
                    Field("node_id", INT32),
                    Field("host", STRING),
                    Field("port", INT32),
                    Field("rack", STRING, "1+", nullable="1+", default=None),
                )
            ),
        ),
        Field("cluster_id", STRING, "2+", nullable="2+", default=None),
        Field("controller_id", INT32, "1+", default=-1),
        Field(
            "topics",
            Array(
                Struct(
                    Field("error_code", INT16),
                    Field("name", STRING, nullable="12+"),
                    Field("topic_id", UUID, "10+"),
                    Field("is_internal", BOOL, "1+", default=False),
                    Field(
                        "partitions",
                        Array(
                            Struct(
                                Field("error_code", INT16),
                                Field("partition_index", INT32),
                                Field("leader_id", INT32),
                                Field("leader_epoch", INT32, "7+", default=-1),
                                Field("replica_nodes", Array(INT32)),
                                Field("isr_nodes", Array(INT32)),
                                Field("offline_replicas", Array(INT32), "5+"),
                            )
                        ),
                    ),
                    Field("topic_authorized_operations", INT32, "8+", default=-(2**31)),
                )
            ),
        ),
        Field("cluster_authorized_operations", INT32, "8-10", default=-(2**31)),
    ),
)

_PRODUCE = (
    Struct(
        Field("transactional_id", STRING, "3+", nullable="3+", default=None),
        Field("acks", INT16),
        Field("timeout_ms", INT32),
        Field(
            "topic_data",
            Array(
                Struct(
                    Field("name", STRING),
                    Field(
                        "partition_data",
                        Array(
                            Struct(
                                Field("index", INT32),
                                Field("records", RECORDS, nullable="0+"),
                            )
                        ),
                    ),
                )
            ),
        ),
    ),
    Struct(
        Field(
            "responses",
            Array(
                Struct(
                    Field("name", STRING),
                    Field(
                        "partition_responses",
                        Array(
                            Struct(
                                Field("index", INT32),
                                Field("error_code", INT16),
                                Field("base_offset", INT64),
                                Field("log_append_time_ms", INT64, "2+", default=-1),
                                Field("log_start_offset", INT64, "5+", default=-1),
                                Field(
                                    "record_errors",
                                    Array(
                                        Struct(
                                            Field("batch_index", INT32, "8+"),
                                            Field(
                                                "batch_index_error_message",
                                                STRING,
                                                "8+",
                                                nullable="8+",
                                                default=None,
                                            ),
                                        )
                                    ),
                                    "8+",
                                ),
                                Field("error_message", STRING, "8+", nullable="8+", default=None),
                            )
                        ),
                    ),
                )
            ),
        ),
        Field("throttle_time_ms", INT32, "1+"),
    ),
)

_FETCH = (
    Struct(
        Field("replica_id", INT32, "0-14", default=-1),
        Field("max_wait_ms", INT32),
        Field("min_bytes", INT32),
        Field("max_bytes", INT32, "3+", default=0x7FFFFFFF),
        Field("isolation_level", INT8, "4+", default=0),
        Field("session_id", INT32, "7+", default=0),
        Field("session_epoch", INT32, "7+", default=-1),
        Field(
            "topics",
            Array(
                Struct(
                    Field("topic", STRING, "0-12"),
                    Field("topic_id", UUID, "13+"),
                    Field(
                        "partitions",
                        Array(
                            Struct(
                                Field("partition", INT32),
                                Field("current_leader_epoch", INT32, "9+", default=-1),
                                Field("fetch_offset", INT64),
                                Field("last_fetched_epoch", INT32, "12+", default=-1),
                                Field("log_start_offset", INT64, "5+", default=-1),
                                Field("partition_max_bytes", INT32),
                            )
                        ),
                    ),
                )
            ),
        ),
        Field(
            "forgotten_topics_data",
            Array(
                Struct(
                    Field("topic", STRING, "7-12"),
                    Field("topic_id", UUID, "13+"),
                    Field("partitions", Array(INT32), "7+"),
                )
            ),
            "7+",
        ),
        Field("rack_id", STRING, "11+", default=""),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "1+"),
        Field("error_code", INT16, "7+"),
        Field("session_id", INT32, "7+", default=0),
        Field(
            "responses",
            Array(
                Struct(
                    Field("topic", STRING, "0-12"),
                    Field("topic_id", UUID, "13+"),
                    Field(
                        "partitions",
                        Array(
                            Struct(
                                Field("partition_index", INT32),
                                Field("error_code", INT16),
                                Field("high_watermark", INT64),
                                Field("last_stable_offset", INT64, "4+", default=-1),
                                Field("log_start_offset", INT64, "5+", default=-1),
                                Field(
                                    "aborted_transactions",
                                    Array(
                                        Struct(
                                            Field("producer_id", INT64, "4+"),
                                            Field("first_offset", INT64, "4+"),
                                        )
                                    ),
                                    "4+",
                                    nullable="4+",
                                ),
                                Field("preferred_read_replica", INT32, "11+", default=-1),
                                Field("records", RECORDS, nullable="0+"),
                            )
                        ),
                    ),
                )
            ),
        ),
    ),
)

_LIST_OFFSETS = (
    Struct(
        Field("replica_id", INT32),
        Field("isolation_level", INT8, "2+"),
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
                                Field("current_leader_epoch", INT32, "4+", default=-1),
                                Field("timestamp", INT64),
                                Field("max_num_offsets", INT32, "0", default=1),
                            )
                        ),
                    ),
                )
            ),
        ),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "2+"),
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
                                Field("old_style_offsets", Array(INT64), "0"),
                                Field("timestamp", INT64, "1+", default=-1),
                                Field("offset", INT64, "1+", default=-1),
                                Field("leader_epoch", INT32, "4+", default=-1),
                            )
                        ),
                    ),
                )
            ),
        ),
    ),
)

DECLARED: dict[ApiKey, tuple[Struct, Struct]] = {
    ApiKey.METADATA: _METADATA,
    ApiKey.PRODUCE: _PRODUCE,
    ApiKey.FETCH: _FETCH,
    ApiKey.LIST_OFFSETS: _LIST_OFFSETS,
}
