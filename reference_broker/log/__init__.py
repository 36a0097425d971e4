"""The on-disk log: segments of record batches, sparse indexes, retention and recovery.

It knows nothing of the network or the protocol beyond the error codes its exceptions carry.
"""

from reference_broker.log.config import FsyncPolicy, LogConfig
from reference_broker.log.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidTopic,
    LogError,
    OffsetOutOfRange,
    RecordListTooLarge,
    TopicExists,
    UnknownTopic,
)
from reference_broker.log.partition import (
    CLEAN_SHUTDOWN_MARKER,
    AppendResult,
    FileSlice,
    PartitionLog,
    ReadResult,
)
from reference_broker.log.segment import Segment
from reference_broker.log.store import LogStore, validate_topic_name

__all__ = [
    "CLEAN_SHUTDOWN_MARKER",
    "AppendResult",
    "FileSlice",
    "FsyncPolicy",
    "InvalidConfig",
    "InvalidPartitions",
    "InvalidTopic",
    "LogConfig",
    "LogError",
    "LogStore",
    "OffsetOutOfRange",
    "PartitionLog",
    "ReadResult",
    "RecordListTooLarge",
    "Segment",
    "TopicExists",
    "UnknownTopic",
    "validate_topic_name",
]
