"""Idempotent producers: what one partition remembers of each producer id, and its snapshots.

Kafka's rules (ProducerStateManager, ProducerAppendInfo), for batches that carry a producer id
and a base sequence, per producer id in one partition:

- the last ``RETAINED_BATCHES`` batches are remembered as (first sequence, last sequence, base
  offset, last offset). A batch of the current epoch matching one of them exactly is a retry of
  a batch already in the log: it gets the original offsets and nothing is appended;
- an older epoch is a fenced producer instance: INVALID_PRODUCER_EPOCH;
- a newer epoch must start at sequence 0, the current epoch must continue at the last sequence
  + 1 (wrapping after 2**31 - 1): else OUT_OF_ORDER_SEQUENCE_NUMBER;
- a producer id the partition has never seen may start at any sequence (its batches may have
  been deleted by retention).

The state is a function of the batch headers in the log, so it is rebuilt from them at start-up.
A ``<offset>.snapshot`` file (written at every roll and at close, as Kafka does) holds the state
of the log below that offset, so start-up replays only the headers after the newest snapshot.
"""

import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import astuple, dataclass, field
from pathlib import Path

from reference_broker.log.errors import InvalidProducerEpoch, OutOfOrderSequence
from reference_broker.log.files import replace_file
from reference_broker.records import BatchHeader

log = logging.getLogger(__name__)

RETAINED_BATCHES = 5
SNAPSHOT_SUFFIX = ".snapshot"
_SNAPSHOT_VERSION = 1
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class ProducedBatch:
    """What a duplicate of a batch is answered with, and how the next batch must follow it."""

    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int


@dataclass
class ProducerEntry:
    epoch: int
    batches: deque[ProducedBatch] = field(default_factory=lambda: deque(maxlen=RETAINED_BATCHES))

    def with_batch(self, epoch: int, batch: ProducedBatch) -> "ProducerEntry":
        """A new entry with ``batch`` added; a new epoch forgets the batches of the old one."""
        kept = self.batches if epoch == self.epoch else ()
        return ProducerEntry(epoch, deque([*kept, batch], maxlen=RETAINED_BATCHES))


def is_idempotent(header: BatchHeader) -> bool:
    return header.producer_id >= 0 and header.base_sequence >= 0


def _produced(header: BatchHeader) -> ProducedBatch:
    last = header.base_sequence + header.last_offset_delta
    if last > _INT32_MAX:  # sequences wrap around to 0 after INT32_MAX, as Kafka's do
        last -= _INT32_MAX + 1
    return ProducedBatch(header.base_sequence, last, header.base_offset, header.last_offset)


class ProducerStates:
    """The producer ids of one partition, with their epochs and last batches."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._producers: dict[int, ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._producers)

    @property
    def max_producer_id(self) -> int:
        return max(self._producers, default=-1)

    def find_duplicate(self, headers: Iterable[BatchHeader]) -> ProducedBatch | None:
        """The first batch of ``headers`` that the log already holds (a client's retry)."""
        for header in headers:
            entry = self._producers.get(header.producer_id)
            if entry is None or entry.epoch != header.producer_epoch or not is_idempotent(header):
                continue
            produced = _produced(header)
            for batch in entry.batches:
                if (batch.first_sequence, batch.last_sequence) == (
                    produced.first_sequence,
                    produced.last_sequence,
                ):
                    return batch
        return None

    def check(self, headers: Iterable[BatchHeader]) -> dict[int, ProducerEntry]:
        """Check the epochs and sequences of batches about to be appended (offsets assigned).

        Returns the entries to ``apply`` once the batches are in the log; raises
        InvalidProducerEpoch or OutOfOrderSequence and changes nothing otherwise.
        """
        updates: dict[int, ProducerEntry] = {}
        for header in headers:
            if not is_idempotent(header):
                continue
            pid, epoch = header.producer_id, header.producer_epoch
            produced = _produced(header)
            entry = updates.get(pid) or self._producers.get(pid)
            if entry is None:
                entry = ProducerEntry(epoch)
            elif epoch < entry.epoch:
                raise InvalidProducerEpoch(
                    f"producer {pid} epoch {epoch} is older than the current epoch {entry.epoch}"
                )
            elif epoch > entry.epoch and produced.first_sequence != 0:
                raise OutOfOrderSequence(
                    f"producer {pid} new epoch {epoch} starts at sequence "
                    f"{produced.first_sequence}, not 0"
                )
            elif epoch == entry.epoch and entry.batches:
                expected = (entry.batches[-1].last_sequence + 1) % (_INT32_MAX + 1)
                if produced.first_sequence != expected:
                    raise OutOfOrderSequence(
                        f"producer {pid} epoch {epoch} sent sequence {produced.first_sequence}, "
                        f"the next expected is {expected}"
                    )
            updates[pid] = entry.with_batch(epoch, produced)
        return updates

    def apply(self, updates: dict[int, ProducerEntry]) -> None:
        self._producers.update(updates)

    def replay(self, header: BatchHeader) -> None:
        """Account for a batch read back from the log: no checks, it was checked when appended."""
        if is_idempotent(header):
            entry = self._producers.get(header.producer_id) or ProducerEntry(header.producer_epoch)
            self._producers[header.producer_id] = entry.with_batch(
                header.producer_epoch, _produced(header)
            )

    def evict_below(self, log_start_offset: int) -> None:
        """Forget producers whose batches are all below the log start (deleted by retention), as
        a rebuild from the remaining log would; drop the snapshots below it too."""
        self._producers = {
            pid: entry
            for pid, entry in self._producers.items()
            if entry.batches[-1].last_offset >= log_start_offset
        }
        for offset, path in self._snapshots():
            if offset < log_start_offset:
                path.unlink(missing_ok=True)

    # --- snapshots -----------------------------------------------------------------------------

    def _snapshots(self) -> list[tuple[int, Path]]:
        """(offset, path) of the snapshot files, oldest first; leftover temporaries removed."""
        found = []
        for path in self.directory.iterdir():
            if path.name.endswith(SNAPSHOT_SUFFIX + ".tmp"):
                path.unlink(missing_ok=True)
            elif path.suffix == SNAPSHOT_SUFFIX and path.stem.isdigit():
                found.append((int(path.stem), path))
        return sorted(found)

    def write_snapshot(self, offset: int, *, fsync: bool) -> None:
        """Save the state of the log below ``offset`` as ``<offset>.snapshot``.

        A snapshot only saves start-up work, so a failure to write one (a full disk) is logged
        and otherwise ignored: the next start replays from an older snapshot.
        """
        producers = [
            [pid, entry.epoch, [astuple(batch) for batch in entry.batches]]
            for pid, entry in sorted(self._producers.items())
        ]
        text = json.dumps({"version": _SNAPSHOT_VERSION, "offset": offset, "producers": producers})
        path = self.directory / f"{offset:020d}{SNAPSHOT_SUFFIX}"
        try:
            replace_file(path, text, fsync=fsync)
        except OSError as exc:
            log.warning("%s: producer state snapshot not written: %s", path, exc)

    def load(self, upto: int) -> int:
        """Load the newest readable snapshot at or below ``upto``; return its offset (0: none).

        Snapshots above ``upto`` describe batches the log no longer holds (recovery truncated
        it) and are deleted; so are unreadable ones. The caller replays the headers from the
        returned offset on.
        """
        self._producers = {}
        for offset, path in reversed(self._snapshots()):
            if offset > upto:
                path.unlink(missing_ok=True)
                continue
            try:
                self._producers = _parse_snapshot(path.read_text(), offset)
                return offset
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("%s: unreadable producer state snapshot (%s), ignored", path, exc)
                path.unlink(missing_ok=True)
        return 0


def _parse_snapshot(text: str, offset: int) -> dict[int, ProducerEntry]:
    document = json.loads(text)
    if document["version"] != _SNAPSHOT_VERSION or document["offset"] != offset:
        raise ValueError(f"version {document['version']}, offset {document['offset']}")
    producers = {}
    for pid, epoch, batches in document["producers"]:
        entry = ProducerEntry(int(epoch))
        entry.batches.extend(ProducedBatch(*map(int, batch)) for batch in batches)
        if not entry.batches:
            raise ValueError(f"producer {pid} has no batches")
        producers[int(pid)] = entry
    return producers
