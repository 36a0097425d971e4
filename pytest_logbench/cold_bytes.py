"""Per-consumer cold bytes: what each fetch of one consumer brought from the disk, read from
the page cache's view of the segment it reads (mincore before and after the fetch)."""

from __future__ import annotations

import os
from pathlib import Path

from pytest_logbench.pagecache import residency
from pytest_logbench.residency import PAGE_SIZE
from reference_broker.records import HEADER_SIZE, read_header


class ColdBytes:
    """Follows a consumer's position through the segment files of its partition and counts the
    bytes each fetch brought from the disk: the pages of the fetched range that were not in the
    page cache just before it, plus the pages of the same segment the kernel read ahead during
    it (they were cold until this fetch; with ``read_ahead_kb`` of several MiB, a sequential
    replay finds most of its range already read ahead by its previous fetch).

    Why from the consumer's side: which member's fetch sent the broker to the disk is what a
    test needs, and only the consumer knows where its reads start. A fetch is answered from one
    segment, starting at the batch that holds the requested offset, so the consumer can keep the
    file position of its next batch by adding up the sizes of the batches it read. Two members
    reading the same cold segment at once may both count a page: an estimate, not an accounting.
    """

    def __init__(self, partition_dir: Path, offset: int) -> None:
        self.dir = partition_dir
        self.file, self.position = self._locate(offset)

    def _locate(self, offset: int) -> tuple[Path, int]:
        """The segment holding ``offset`` and the position of the batch that holds it."""
        segments = sorted(self.dir.glob("*.log"), key=lambda p: int(p.stem))
        older = [p for p in segments if int(p.stem) <= offset] or segments[:1]
        if not older:
            raise FileNotFoundError(f"no segment files in {self.dir}")
        path, position = older[-1], 0
        with open(path, "rb") as f:
            while True:
                head = os.pread(f.fileno(), HEADER_SIZE, position)
                if len(head) < HEADER_SIZE:
                    return path, position
                header = read_header(head)
                if header.last_offset >= offset:
                    return path, position
                position += header.size

    def page_map(self) -> bytes:
        """One byte per page of the current segment (1 = resident), now."""
        return residency(self.file, method="mincore")[self.file].page_map

    def advance(self, before: bytes, read: int) -> int:
        """Count what the fetch of ``read`` bytes at the position brought from the disk (given
        the segment's page map from just before it), then move past it, and on to the next
        segment at the end of this one."""
        after = self.page_map()
        first, last = self.position // PAGE_SIZE, -(-(self.position + read) // PAGE_SIZE)
        in_range = before[first:last].count(0)
        read_ahead = sum(
            1
            for page, (was, now) in enumerate(zip(before, after, strict=False))
            if not was and now and not first <= page < last
        )
        self.position += read
        if self.position >= self.file.stat().st_size:
            after_this = [p for p in self.dir.glob("*.log") if int(p.stem) > int(self.file.stem)]
            if after_this:
                self.file, self.position = min(after_this, key=lambda p: int(p.stem)), 0
        return (in_range + read_ahead) * PAGE_SIZE
