"""What the page cache holds of some files, as ``pagecache`` measured it: per-file counts and
page maps, their deltas, and the reports printed from them (vmtouch-like strips)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")
PathArg = str | os.PathLike[str]


def page_count(size: int) -> int:
    return -(-size // PAGE_SIZE)


def fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


@dataclass(frozen=True)
class FileResidency:
    """Page-cache residency of one file at one moment.

    ``page_map`` has one byte per page (1 = resident): 0.025 % of the file size, so even a file
    larger than RAM gives a map that fits comfortably. ``dirty_pages`` and the eviction counters
    are ``None`` when the counts came from mincore, which cannot see them.
    """

    path: Path
    size: int
    resident_pages: int
    page_map: bytes
    method: str
    dirty_pages: int | None = None
    writeback_pages: int | None = None
    evicted_pages: int | None = None
    recently_evicted_pages: int | None = None
    page_size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return len(self.page_map)

    @property
    def resident_bytes(self) -> int:
        """Resident pages in bytes, clamped to the file size (the last page may be partial)."""
        return min(self.resident_pages * self.page_size, self.size)

    @property
    def fraction(self) -> float:
        """Resident share of the pages; 1.0 for an empty file, since reading it needs no IO."""
        return self.resident_pages / self.pages if self.pages else 1.0

    def strip(self, width: int = 64) -> str:
        """vmtouch -v style map: 'O' bucket fully resident, 'o' partly, ' ' not at all."""
        if width < 1:
            raise ValueError(f"strip width must be >= 1, got {width}")
        n = self.pages
        cols = min(width, n)
        cells = []
        for i in range(cols):
            start, end = i * n // cols, (i + 1) * n // cols
            count = self.page_map.count(1, start, end)
            cells.append("O" if count == end - start else ("o" if count else " "))
        return f"[{''.join(cells)}] {self.resident_pages}/{n}"

    def report(self, strip_width: int = 32) -> str:
        """One line: path, resident bytes and pages, dirty pages, method, optional strip."""
        dirty = "?" if self.dirty_pages is None else str(self.dirty_pages)
        line = (
            f"{self.path}: {fmt_bytes(self.resident_bytes)} of {fmt_bytes(self.size)} resident "
            f"({self.fraction:.1%}), {self.resident_pages}/{self.pages} pages, dirty {dirty}, "
            f"via {self.method}"
        )
        return f"{line}  {self.strip(strip_width)}" if strip_width else line


@dataclass(frozen=True)
class FileDelta:
    """How one file's residency changed between two measurements (either side may be absent)."""

    path: Path
    before: FileResidency | None
    after: FileResidency | None

    @property
    def gained_pages(self) -> int:
        """Pages resident after but not before (new pages of a grown file included)."""
        return _bit_diff(self.after, self.before)

    @property
    def lost_pages(self) -> int:
        """Pages resident before but not after: evicted, or cut off by truncation."""
        return _bit_diff(self.before, self.after)

    @property
    def change(self) -> int:
        """Net change of the resident page count."""
        return (self.after.resident_pages if self.after else 0) - (
            self.before.resident_pages if self.before else 0
        )

    def report(self) -> str:
        return (
            f"{self.path}: {self.change:+d} pages (+{self.gained_pages} cached, "
            f"-{self.lost_pages} evicted)"
        )


def _bit_diff(a: FileResidency | None, b: FileResidency | None) -> int:
    """Pages resident in ``a`` but not in ``b`` (maps are 0/1 bytes, compared as big ints)."""
    if a is None:
        return 0
    if b is None:
        return a.page_map.count(1)
    a_bits = int.from_bytes(a.page_map, "little")
    b_bits = int.from_bytes(b.page_map, "little")
    return (a_bits & ~b_bits).bit_count()


@dataclass(frozen=True)
class ResidencyDelta:
    """Per-file residency change; ``Residency.delta`` builds it for the eviction experiments."""

    files: tuple[FileDelta, ...]

    @property
    def gained_pages(self) -> int:
        return sum(f.gained_pages for f in self.files)

    @property
    def lost_pages(self) -> int:
        return sum(f.lost_pages for f in self.files)

    @property
    def change(self) -> int:
        return sum(f.change for f in self.files)

    def report(self) -> str:
        lines = [f.report() for f in self.files]
        lines.append(
            f"total: {self.change:+d} pages (+{self.gained_pages} cached, -{self.lost_pages} "
            "evicted)"
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class Residency:
    """Residency of a set of files, with totals; index it by path for one file."""

    files: tuple[FileResidency, ...]

    def __iter__(self) -> Iterator[FileResidency]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, path: PathArg) -> FileResidency:
        wanted = Path(os.path.abspath(path))
        for f in self.files:
            if f.path == wanted:
                return f
        raise KeyError(str(wanted))

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def pages(self) -> int:
        return sum(f.pages for f in self.files)

    @property
    def resident_pages(self) -> int:
        return sum(f.resident_pages for f in self.files)

    @property
    def resident_bytes(self) -> int:
        return sum(f.resident_bytes for f in self.files)

    @property
    def dirty_pages(self) -> int | None:
        """Total dirty pages, or None if any file's count came from mincore."""
        counts = [f.dirty_pages for f in self.files]
        return None if None in counts else sum(c for c in counts if c is not None)

    @property
    def fraction(self) -> float:
        return self.resident_pages / self.pages if self.pages else 1.0

    @property
    def method(self) -> str:
        """The count source(s): 'cachestat', 'mincore', or both joined by '+' if mixed."""
        return "+".join(sorted({f.method for f in self.files})) or "none"

    def delta(self, after: Residency) -> ResidencyDelta:
        """Change from this measurement (before) to ``after``, per file, in path order of both."""
        mine = {f.path: f for f in self.files}
        theirs = {f.path: f for f in after.files}
        paths = list(mine) + [p for p in theirs if p not in mine]
        return ResidencyDelta(tuple(FileDelta(p, mine.get(p), theirs.get(p)) for p in paths))

    def report(self, strip_width: int = 32) -> str:
        """One line per file plus a total line, for failure messages and terminal output."""
        lines = [f.report(strip_width) for f in self.files]
        lines.append(
            f"total: {len(self.files)} files, {fmt_bytes(self.resident_bytes)} of "
            f"{fmt_bytes(self.size)} resident ({self.fraction:.1%}), "
            f"{self.resident_pages}/{self.pages} pages, via {self.method}"
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class EvictResult:
    """What evict() achieved: residency before and after, and why pages stayed if any did.

    Clean, unmapped pages go; dirty pages (written after the sync), pages under writeback, pages
    mapped or locked by some process, and files on memory-backed filesystems (tmpfs) stay.
    """

    before: Residency
    after: Residency

    @property
    def complete(self) -> bool:
        return self.after.resident_pages == 0

    @property
    def evicted_pages(self) -> int:
        return self.before.delta(self.after).lost_pages

    @property
    def stayed(self) -> tuple[FileResidency, ...]:
        """Files that still have resident pages."""
        return tuple(f for f in self.after.files if f.resident_pages)

    def report(self) -> str:
        lines = [f"evicted {self.evicted_pages} pages of {len(self.after)} files"]
        for f in self.stayed:
            if f.dirty_pages is None:
                why = "dirty, mapped, locked, or on a memory-backed filesystem (no cachestat)"
            else:
                other = f.resident_pages - f.dirty_pages - (f.writeback_pages or 0)
                why = (
                    f"{f.dirty_pages} dirty, {f.writeback_pages} under writeback, {other} other: "
                    "mapped or locked by a process, or on a memory-backed filesystem (tmpfs)"
                )
            lines.append(f"  {f.path}: {f.resident_pages}/{f.pages} pages stayed ({why})")
        return "\n".join(lines)
