"""Connection set-up and topic administration: ApiVersions, InitProducerId, CreateTopics,
DeleteTopics, CreatePartitions, DeleteRecords, DescribeConfigs, AlterConfigs,
IncrementalAlterConfigs (request, response)."""

from __future__ import annotations

from ..api_keys import ApiKey
from ..schema import BOOL, INT8, INT16, INT32, INT64, STRING, UUID, Array, Field, Struct

_API_VERSIONS = (
    Struct(
        Field("client_software_name", STRING, "3+"),
        Field("client_software_version", STRING, "3+"),
    ),
    Struct(
        Field("error_code", INT16),
        Field(
            "api_keys",
            Array(
                Struct(
                    Field("api_key", INT16),
                    Field("min_version", INT16),
                    Field("max_version", INT16),
                )
            ),
        ),
        Field("throttle_time_ms", INT32, "1+"),
    ),
)

_INIT_PRODUCER_ID = (
    Struct(
        Field("transactional_id", STRING, nullable="0+"),
        Field("transaction_timeout_ms", INT32),
        Field("producer_id", INT64, "3+", default=-1),
        Field("producer_epoch", INT16, "3+", default=-1),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "0+"),
        Field("error_code", INT16),
        Field("producer_id", INT64, default=-1),
        Field("producer_epoch", INT16),
    ),
)

_CREATE_TOPICS = (
    Struct(
        Field(
            "topics",
            Array(
                Struct(
                    Field("name", STRING),
                    Field("num_partitions", INT32),
                    Field("replication_factor", INT16),
                    Field(
                        "assignments",
                        Array(
                            Struct(
                                Field("partition_index", INT32),
                                Field("broker_ids", Array(INT32)),
                            )
                        ),
                    ),
                    Field(
                        "configs",
                        Array(
                            Struct(
                                Field("name", STRING),
                                Field("value", STRING, nullable="0+"),
                            )
                        ),
                    ),
                )
            ),
        ),
        Field("timeout_ms", INT32, default=60000),
        Field("validate_only", BOOL, "1+", default=False),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "2+"),
        Field(
            "topics",
            Array(
                Struct(
                    Field("name", STRING),
                    Field("topic_id", UUID, "7+"),
                    Field("error_code", INT16),
                    Field("error_message", STRING, "1+", nullable="0+"),
                    Field("num_partitions", INT32, "5+", default=-1),
                    Field("replication_factor", INT16, "5+", default=-1),
                    Field(
                        "configs",
                        Array(
                            Struct(
                                Field("name", STRING, "5+"),
                                Field("value", STRING, "5+", nullable="5+"),
                                Field("read_only", BOOL, "5+"),
                                Field("config_source", INT8, "5+", default=-1),
                                Field("is_sensitive", BOOL, "5+"),
                            )
                        ),
                        "5+",
                        nullable="5+",
                    ),
                )
            ),
        ),
    ),
)

_DESCRIBE_CONFIGS = (
    Struct(
        Field(
            "resources",
            Array(
                Struct(
                    Field("resource_type", INT8),
                    Field("resource_name", STRING),
                    Field("configuration_keys", Array(STRING), nullable="0+"),
                )
            ),
        ),
        Field("include_synonyms", BOOL, "1+", default=False),
        Field("include_documentation", BOOL, "3+", default=False),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "0+"),
        Field(
            "results",
            Array(
                Struct(
                    Field("error_code", INT16),
                    Field("error_message", STRING, nullable="0+"),
                    Field("resource_type", INT8),
                    Field("resource_name", STRING),
                    Field(
                        "configs",
                        Array(
                            Struct(
                                Field("name", STRING),
                                Field("value", STRING, nullable="0+"),
                                Field("read_only", BOOL),
                                Field("is_default", BOOL, "0"),
                                Field("config_source", INT8, "1+", default=-1),
                                Field("is_sensitive", BOOL),
                                Field(
                                    "synonyms",
                                    Array(
                                        Struct(
                                            Field("name", STRING, "1+"),
                                            Field("value", STRING, "1+", nullable="0+"),
                                            Field("source", INT8, "1+"),
                                        )
                                    ),
                                    "1+",
                                ),
                                Field("config_type", INT8, "3+", default=0),
                                Field("documentation", STRING, "3+", nullable="0+"),
                            )
                        ),
                    ),
                )
            ),
        ),
    ),
)

_DELETE_TOPICS = (
    Struct(
        Field(
            "topics",
            Array(
                Struct(
                    Field("name", STRING, "6+", nullable="6+", default=None),
                    Field("topic_id", UUID, "6+"),
                )
            ),
            "6+",
        ),
        Field("topic_names", Array(STRING), "0-5"),
        Field("timeout_ms", INT32),
    ),
    Struct(
        Field("throttle_time_ms", INT32, "1+"),
        Field(
            "responses",
            Array(
                Struct(
                    Field("name", STRING, nullable="6+"),
                    Field("topic_id", UUID, "6+"),
                    Field("error_code", INT16),
                    Field("error_message", STRING, "5+", nullable="5+", default=None),
                )
            ),
        ),
    ),
)

_CREATE_PARTITIONS = (
    Struct(
        Field(
            "topics",
            Array(
                Struct(
                    Field("name", STRING),
                    Field("count", INT32),
                    Field(
                        "assignments",
                        Array(Struct(Field("broker_ids", Array(INT32)))),
                        nullable="0+",
                    ),
                )
            ),
        ),
        Field("timeout_ms", INT32),
        Field("validate_only", BOOL),
    ),
    Struct(
        Field("throttle_time_ms", INT32),
        Field(
            "results",
            Array(
                Struct(
                    Field("name", STRING),
                    Field("error_code", INT16),
                    Field("error_message", STRING, nullable="0+", default=None),
                )
            ),
        ),
    ),
)

_DELETE_RECORDS = (
    Struct(
        Field(
            "topics",
            Array(
                Struct(
                    Field("name", STRING),
                    Field(
                        "partitions",
                        Array(Struct(Field("partition_index", INT32), Field("offset", INT64))),
                    ),
                )
            ),
        ),
        Field("timeout_ms", INT32),
    ),
    Struct(
        Field("throttle_time_ms", INT32),
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
                                Field("low_watermark", INT64),
                                Field("error_code", INT16),
                            )
                        ),
                    ),
                )
            ),
        ),
    ),
)

# AlterConfigs and IncrementalAlterConfigs answer the same way; the incremental request adds
# an operation per config (0 set, 1 delete, 2 append, 3 subtract).
_ALTER_CONFIGS_RESPONSE = Struct(
    Field("throttle_time_ms", INT32),
    Field(
        "responses",
        Array(
            Struct(
                Field("error_code", INT16),
                Field("error_message", STRING, nullable="0+"),
                Field("resource_type", INT8),
                Field("resource_name", STRING),
            )
        ),
    ),
)


def _alter_configs_request(*config: Field) -> Struct:
    return Struct(
        Field(
            "resources",
            Array(
                Struct(
                    Field("resource_type", INT8),
                    Field("resource_name", STRING),
                    Field("configs", Array(Struct(*config))),
                )
            ),
        ),
        Field("validate_only", BOOL),
    )


_ALTER_CONFIGS = (
    _alter_configs_request(Field("name", STRING), Field("value", STRING, nullable="0+")),
    _ALTER_CONFIGS_RESPONSE,
)

_INCREMENTAL_ALTER_CONFIGS = (
    _alter_configs_request(
        Field("name", STRING),
        Field("config_operation", INT8),
        Field("value", STRING, nullable="0+"),
    ),
    _ALTER_CONFIGS_RESPONSE,
)

DECLARED: dict[ApiKey, tuple[Struct, Struct]] = {
    ApiKey.API_VERSIONS: _API_VERSIONS,
    ApiKey.INIT_PRODUCER_ID: _INIT_PRODUCER_ID,
    ApiKey.CREATE_TOPICS: _CREATE_TOPICS,
    ApiKey.DESCRIBE_CONFIGS: _DESCRIBE_CONFIGS,
    ApiKey.DELETE_TOPICS: _DELETE_TOPICS,
    ApiKey.CREATE_PARTITIONS: _CREATE_PARTITIONS,
    ApiKey.DELETE_RECORDS: _DELETE_RECORDS,
    ApiKey.ALTER_CONFIGS: _ALTER_CONFIGS,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: _INCREMENTAL_ALTER_CONFIGS,
}
