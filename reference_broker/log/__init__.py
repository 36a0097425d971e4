"""The on-disk log: segments of record batches, sparse indexes, retention and recovery.

It knows nothing of the network or the protocol beyond the error codes its exceptions carry.
"""

from reference_broker.log.config import FsyncPolicy, LogConfig
from reference_broker.log.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidProducerEpoch,
    InvalidTopic,
    KafkaStorageError,
    LogError,
    OffsetOutOfRange,
    OutOfOrderSequence,
    RecordListTooLarge,
    TopicExists,
    UnknownTopic,
)
from reference_broker.log.partition import CLEAN_SHUTDOWN_MARKER, PartitionLog
from reference_broker.log.recovery import Hole, RecoveryReport, Truncation
from reference_broker.log.segment import Segment
from reference_broker.log.slices import AppendResult, FileSlice, ReadResult
from reference_broker.log.store import LogStore, validate_topic_name

__all__ = [
    "CLEAN_SHUTDOWN_MARKER",
    "AppendResult",
    "FileSlice",
    "FsyncPolicy",
    "Hole",
    "InvalidConfig",
    "InvalidPartitions",
    "InvalidProducerEpoch",
    "InvalidTopic",
    "KafkaStorageError",
    "LogConfig",
    "LogError",
    "LogStore",
    "OffsetOutOfRange",
    "OutOfOrderSequence",
    "PartitionLog",
    "ReadResult",
    "RecordListTooLarge",
    "RecoveryReport",
    "Segment",
    "TopicExists",
    "Truncation",
    "UnknownTopic",
    "validate_topic_name",
]
