"""Consumer lag: how far each group's committed position trails the end of each partition.

Definitions (per group and partition with a committed offset):

- ``committed_offset``: the offset the group committed, i.e. the next record it will consume.
- ``log_end_offset``: the offset the next produced record will get (Kafka's LEO; this broker has
  no replicas, so it equals the high watermark).
- ``lag_records`` = max(0, log_end_offset - committed_offset): records produced but not yet
  consumed. Clamped at 0 because a commit beyond the end (a log truncated after a crash) is
  not negative work.
- ``lag_bytes``: bytes of log from the committed offset to the end, as the callable reports
  them (whole batches, so it may slightly exceed the records' own size): what a catching-up
  consumer will make the broker read, from the page cache or from disk.

Partitions a group never committed are not listed: their assignment is opaque bytes to the
coordinator, so it cannot tell which partitions a consumer owns but has not committed yet.
"""

from collections.abc import Callable
from dataclasses import dataclass

from reference_broker.groups.offsets import OffsetStore

LogEnd = Callable[[str, int, int], tuple[int, int] | None]
"""(topic, partition, committed offset) -> (log end offset, bytes from committed offset to the
end), or None if the broker has no such partition (say, the topic was deleted)."""


@dataclass(frozen=True)
class LagRow:
    group_id: str
    topic: str
    partition: int
    committed_offset: int
    log_end_offset: int
    lag_records: int
    lag_bytes: int


def consumer_lag(offsets: OffsetStore, log_end: LogEnd) -> list[LagRow]:
    """Lag of every committed partition of every group, sorted by group, topic, partition.
    It needs the committed offsets only, never the coordinator (which a broker makes at its
    first group request: a metrics scrape does not make it).

    ``log_end`` is passed in rather than a log store so that this view stays independent of
    the log's API; the broker wires it.
    """
    rows = []
    committed_offsets = (
        (group_id, topic, partition, c.offset)
        for group_id in offsets.groups()
        for (topic, partition), c in offsets.group_offsets(group_id).items()
    )
    for group_id, topic, partition, committed in sorted(committed_offsets):
        end = log_end(topic, partition, committed)
        if end is None:
            continue
        log_end_offset, lag_bytes = end
        rows.append(
            LagRow(
                group_id,
                topic,
                partition,
                committed,
                log_end_offset,
                max(0, log_end_offset - committed),
                lag_bytes,
            )
        )
    return rows
