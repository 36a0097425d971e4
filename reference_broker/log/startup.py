"""Opening a partition's directory at start-up: what an earlier run left half-done is removed,
the segments are found and opened (the ones a crash may have torn are scanned and CRC-checked),
and missing ranges between them are noted as holes."""

from itertools import pairwise
from pathlib import Path

from reference_broker.log.recovery import Hole, RecoveryReport, read_recovery_point
from reference_broker.log.segment import DELETED_SUFFIX, Segment

_INDEX_SUFFIXES = (".index", ".timeindex")


def open_segments(
    directory: Path, index_interval_bytes: int, report: RecoveryReport, *, clean: bool
) -> list[Segment]:
    """The segments in ``directory``, oldest first (empty if there are none).

    After a clean shutdown every segment gets only the cheap check of its last batches; after
    a crash, those wholly below the recovery point too, and the others are recovered.
    """
    for path in directory.iterdir():
        if path.name.endswith(DELETED_SUFFIX) or (
            path.suffix in _INDEX_SUFFIXES and not path.with_suffix(".log").exists()
        ):
            path.unlink()  # left by an earlier run: deleted segments, orphan indexes
    bases = sorted(
        int(path.stem)
        for path in directory.glob("*.log")
        if len(path.stem) == 20 and path.stem.isdigit()
    )
    recovery_point = read_recovery_point(directory)
    segments = []
    for base, next_base in zip(bases, [*bases[1:], None], strict=False):
        below = next_base is not None and next_base <= recovery_point
        segments.append(
            Segment.open(
                directory,
                base,
                index_interval_bytes,
                report,
                recover=not (clean or below),
                next_base=next_base,
            )
        )
    for before, after in pairwise(segments):
        hole = Hole(before.next_offset, after.base_offset)
        if hole.first_missing < hole.next_present and hole not in report.holes:
            report.hole(hole)  # a missing segment
    return segments
