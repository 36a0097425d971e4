"""Apache Kafka as a broker of logbench: pinned jars from Maven Central (``jars``) and a
single-node KRaft launcher with the reference broker's interface (``broker``)."""

from pytest_logbench.kafka.broker import KafkaBroker, unsupported_options
from pytest_logbench.kafka.jars import KAFKA_VERSION, KafkaUnavailable, fetch, unavailable_reason

__all__ = [
    "KAFKA_VERSION",
    "KafkaBroker",
    "KafkaUnavailable",
    "fetch",
    "unavailable_reason",
    "unsupported_options",
]
