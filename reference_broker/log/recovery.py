"""What start-up recovery may skip (the recovery point) and what it found (the report).

The recovery point is Kafka's ``recovery-point-offset-checkpoint``, kept per partition directory
here: every segment wholly below it was complete when it was sealed (and synced, unless fsync is
"never"), so after a crash those segments get no scan, only a check of their last batches.

Damage is never allowed to take intact data with it: a damaged segment is truncated at its first
bad byte and the segments after it keep their batches and offsets. The offsets lost in between
are a *hole*; the report lists each truncation and hole so the broker can expose them.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from reference_broker.log.files import replace_file

log = logging.getLogger(__name__)

RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"


@dataclass(frozen=True)
class Truncation:
    """Bytes recovery cut from a segment: from ``position`` (where offset ``first_lost_offset``
    would have started) to the end of the file. ``next_segment`` is the base offset of the
    segment after it (None for the last one): the offsets in between became a hole."""

    segment: int
    position: int
    first_lost_offset: int
    dropped_bytes: int
    reason: str
    next_segment: int | None = None


@dataclass(frozen=True)
class Hole:
    """Offsets [first_missing, next_present) that no segment holds any more, between batches
    that are still in the log."""

    first_missing: int
    next_present: int


@dataclass
class RecoveryReport:
    """Everything recovery cut from one partition since it was opened."""

    directory: Path
    truncations: list[Truncation] = field(default_factory=list)
    holes: list[Hole] = field(default_factory=list)

    def truncated(self, truncation: Truncation) -> None:
        self.truncations.append(truncation)
        log.warning(
            "%s: segment %d: truncating %d bytes from byte %d (offsets from %d on): %s",
            self.directory,
            truncation.segment,
            truncation.dropped_bytes,
            truncation.position,
            truncation.first_lost_offset,
            truncation.reason,
        )
        if truncation.next_segment is not None:
            self.hole(Hole(truncation.first_lost_offset, truncation.next_segment))

    def hole(self, hole: Hole) -> None:
        """A hole is data lost behind the log end: always an ERROR, never silent."""
        self.holes.append(hole)
        log.error(
            "%s: offsets [%d, %d) are lost (a damaged or missing segment); the later segments "
            "are kept with their offsets",
            self.directory,
            hole.first_missing,
            hole.next_present,
        )


def read_recovery_point(directory: Path) -> int:
    """The saved recovery point; 0 (recover every segment) if it is missing or unreadable."""
    return read_offset_checkpoint(directory / RECOVERY_POINT_FILE)


def read_offset_checkpoint(path: Path) -> int:
    """An offset saved in a one-line file; 0 if it is missing or unreadable."""
    try:
        return max(0, int(path.read_text()))
    except (FileNotFoundError, ValueError):
        return 0


def write_recovery_point(directory: Path, offset: int, *, fsync: bool) -> None:
    """Replace the checkpoint atomically. A failure only costs start-up time (an older point
    means more scanning), so it is logged, not raised."""
    try:
        replace_file(directory / RECOVERY_POINT_FILE, f"{offset}\n", fsync=fsync)
    except OSError as exc:
        log.warning("%s: recovery point not saved: %s", directory, exc)
