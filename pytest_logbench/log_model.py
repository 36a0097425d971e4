"""The model a log is checked against, and a real log read back batch by batch.

``PartitionModel`` is what a partition must hold after the produces a test made;
``fetch_batches`` reads a partition from an offset to its high watermark with whole batches
decoded, so a test compares the two record by record (the state machine of ``statemachine.py``
does after every step; the crash, idempotence and fuzz tests after theirs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pytest_logbench.client import FetchResult, HarnessClient
from pytest_logbench.strategies import BatchSpec
from reference_broker.record_codec import iter_records
from reference_broker.records import BatchHeader, Record


@dataclass
class PartitionModel:
    """What a partition must hold: every batch produced, in offset order, and the highest log
    start offset seen so far (retention decides when it moves; the model only bounds it)."""

    batches: list[tuple[int, BatchSpec, int]] = field(default_factory=list)  # base, spec, size
    log_start: int = 0

    @property
    def end(self) -> int:
        """The log end offset: the base offset the next produce must get."""
        if not self.batches:
            return 0
        base, spec, _ = self.batches[-1]
        return base + len(spec)

    def append(self, spec: BatchSpec, size: int) -> None:
        self.batches.append((self.end, spec, size))

    def boundaries(self) -> set[int]:
        """Offsets where a batch starts, and the end: where the log start may be."""
        return {base for base, _, _ in self.batches} | {self.end}

    def records_from(self, offset: int) -> list[Record]:
        """The records a fetch from ``offset`` must return, in order."""
        return [
            r
            for base, spec, _ in self.batches
            if base + len(spec) > offset
            for r in spec.at(base)
            if r.offset >= offset
        ]

    def record(self, offset: int) -> Record | None:
        for base, spec, _ in self.batches:
            if base <= offset < base + len(spec):
                return spec.at(base)[offset - base]
        return None

    def retained_bytes(self) -> int:
        """Bytes of the batches from the log start on: what the broker's log holds."""
        return sum(size for base, _, size in self.batches if base >= self.log_start)


def fetch_batches(
    client: HarnessClient, topic: str, partition: int, offset: int, *, max_bytes: int = 1 << 20
) -> Iterator[tuple[FetchResult, list[tuple[BatchHeader, list[Record]]]]]:
    """Fetch from ``offset`` up to the high watermark, yielding each response with its whole
    batches decoded (``iter_records`` checks their CRCs).

    Stops after a response with an error or without a whole batch (the caller judges whether
    that is right) and once the high watermark is reached. Batches may start below
    ``offset``, as Kafka's do.
    """
    position = offset
    while True:
        result = client.fetch(topic, partition, position, max_bytes=max_bytes)
        fetched = [
            (header, list(iter_records(result.records[at : at + header.size])))
            for at, header in result.batches()
        ]
        yield result, fetched
        if result.error or not fetched:
            return
        position = max(position, fetched[-1][0].next_offset)
        if position >= result.high_watermark:
            return
