"""Sparse indexes of a segment: offset -> file position, and timestamp -> offset.

Kafka memory-maps preallocated index files, so a process kill loses no entry. Here an index is an
append-only file written through with one ``write`` per entry (into the page cache: a process
kill loses nothing either) plus an in-memory copy that every lookup uses. Neither index is
checksummed: both are derived from the segment's batches and are rebuilt whenever they disagree
with it.
"""

import errno
import os
import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import ClassVar


class IndexInconsistent(Exception):
    """An index file that is missing or malformed: the segment must rebuild it."""


class SparseIndex:
    """Entries (key, value), both strictly increasing, appended in order.

    The write handle opens on the first append, so loading or discarding an index that is
    never extended touches no file handle.
    """

    ENTRY: ClassVar[struct.Struct]
    KEY_TYPECODE: ClassVar[str]

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys = array(self.KEY_TYPECODE)
        self._values = array("i")
        self._fd: int | None = None

    def load(self) -> None:
        """Read the index file, raising IndexInconsistent if it is missing or malformed."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise IndexInconsistent(f"{self.path.name} is missing") from None
        if len(data) % self.ENTRY.size:
            raise IndexInconsistent(f"{self.path.name} ends with a partial entry")
        entries = list(self.ENTRY.iter_unpack(data))
        keys = array(self.KEY_TYPECODE, (key for key, _ in entries))
        values = array("i", (value for _, value in entries))
        for column in (keys, values):
            if any(a >= b for a, b in pairwise(column)) or (column and column[0] < 0):
                raise IndexInconsistent(f"{self.path.name} entries are not increasing")
        self._keys, self._values = keys, values

    def reset(self) -> None:
        """Empty the index and its file (before a rebuild)."""
        self.close()
        self.path.write_bytes(b"")
        self._keys = array(self.KEY_TYPECODE)
        self._values = array("i")

    def __len__(self) -> int:
        return len(self._keys)

    def append(self, key: int, value: int) -> None:
        """Write the entry through to the file, then remember it (OSError: not remembered)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        entry = self.ENTRY.pack(key, value)
        if os.write(self._fd, entry) != len(entry):  # the disk filled up within the entry
            raise OSError(errno.ENOSPC, f"{self.path.name}: short write")
        self._keys.append(key)
        self._values.append(value)

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` entries, in memory and in the file."""
        del self._keys[length:]
        del self._values[length:]
        os.truncate(self.path, length * self.ENTRY.size)

    def last_on_disk(self) -> tuple[int, int] | None:
        """The file's last entry, read without loading the index (IndexInconsistent if the file
        is missing or ends with a partial entry)."""
        try:
            with open(self.path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                if size % self.ENTRY.size:
                    raise IndexInconsistent(f"{self.path.name} ends with a partial entry")
                if size == 0:
                    return None
                return self.ENTRY.unpack(
                    os.pread(file.fileno(), self.ENTRY.size, size - self.ENTRY.size)
                )
        except FileNotFoundError:
            raise IndexInconsistent(f"{self.path.name} is missing") from None

    def entries(self) -> Iterator[tuple[int, int]]:
        return zip(self._keys, self._values, strict=True)

    def last(self) -> tuple[int, int] | None:
        return self._entry(len(self._keys) - 1)

    def floor(self, key: int) -> tuple[int, int] | None:
        """The last entry whose key is <= ``key``."""
        return self._entry(bisect_right(self._keys, key) - 1)

    def below(self, key: int) -> tuple[int, int] | None:
        """The last entry whose key is < ``key``."""
        return self._entry(bisect_left(self._keys, key) - 1)

    def _entry(self, i: int) -> tuple[int, int] | None:
        return (self._keys[i], self._values[i]) if i >= 0 else None

    def flush(self) -> None:
        """fsync the file (entries are in the page cache as soon as they are appended)."""
        if self._fd is not None:
            os.fsync(self._fd)

    def rename(self, path: Path) -> None:
        self.path = self.path.rename(path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class OffsetIndex(SparseIndex):
    """``.index``: (offset relative to the segment base, file position of that batch)."""

    ENTRY = struct.Struct(">ii")
    KEY_TYPECODE = "i"


class TimeIndex(SparseIndex):
    """``.timeindex``: (largest timestamp so far, relative offset of the batch reaching it)."""

    ENTRY = struct.Struct(">qi")
    KEY_TYPECODE = "q"
