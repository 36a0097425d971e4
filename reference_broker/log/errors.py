"""Errors of the on-disk log, each carrying the error code a broker answers with.

The log knows nothing of requests; it only names the Kafka error that describes the failure, so
a handler can turn any of these into a response with ``exc.error_code``.
"""

from typing import ClassVar

from reference_broker.errors import ErrorCode


class LogError(Exception):
    """Base of the log's errors."""

    error_code: ClassVar[ErrorCode] = ErrorCode.UNKNOWN_SERVER_ERROR


class OffsetOutOfRange(LogError):
    """A fetch below the log start offset or above the log end offset."""

    error_code = ErrorCode.OFFSET_OUT_OF_RANGE

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class RecordListTooLarge(LogError):
    """One append larger than a whole segment: it could never be written without a roll."""

    error_code = ErrorCode.RECORD_LIST_TOO_LARGE


class InvalidTopic(LogError, ValueError):
    """A topic name Kafka would refuse (it would also make an unsafe directory name)."""

    error_code = ErrorCode.INVALID_TOPIC_EXCEPTION


class TopicExists(LogError):
    error_code = ErrorCode.TOPIC_ALREADY_EXISTS


class UnknownTopic(LogError):
    error_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class InvalidPartitions(LogError, ValueError):
    error_code = ErrorCode.INVALID_PARTITIONS


class InvalidConfig(LogError, ValueError):
    """An unknown topic config key or a value out of range."""

    error_code = ErrorCode.INVALID_CONFIG


class KafkaStorageError(LogError, OSError):
    """The disk refused a write or a sync (ENOSPC, EIO): nothing of the append was kept.

    Clients treat it as retriable, so a produce succeeds again once space returns. It is an
    OSError too, so callers that handle a failing disk (the committed-offsets store) still do.
    """

    error_code = ErrorCode.KAFKA_STORAGE_ERROR


class OutOfOrderSequence(LogError):
    """An idempotent producer's batch does not follow the last sequence the log holds."""

    error_code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class InvalidProducerEpoch(LogError):
    """A batch from an older epoch of a producer id: a fenced (zombie) producer instance."""

    error_code = ErrorCode.INVALID_PRODUCER_EPOCH
