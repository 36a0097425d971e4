"""Sparse indexes of a segment: offset -> file position, and timestamp -> offset.

Kafka memory-maps preallocated index files; here an index is an append-only file plus an
in-memory copy that every lookup uses, which keeps the file format (big-endian fixed-size
entries) without mmap bookkeeping. Neither index is checksummed: both are derived from the
segment's batches and are rebuilt whenever they disagree with it.
"""

import os
import struct
from array import array
from bisect import bisect_left, bisect_right
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO, ClassVar


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
        self._file: BinaryIO | None = None

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
        self._keys.append(key)
        self._values.append(value)
        if self._file is None:
            self._file = open(self.path, "ab")  # noqa: SIM115 -- kept open for later appends
        self._file.write(self.ENTRY.pack(key, value))

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

    def flush(self, *, fsync: bool) -> None:
        """Push buffered entries to the file (and fsync it)."""
        if self._file is not None:
            self._file.flush()
            if fsync:
                os.fsync(self._file.fileno())

    def rename(self, path: Path) -> None:
        self.path = self.path.rename(path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class OffsetIndex(SparseIndex):
    """``.index``: (offset relative to the segment base, file position of that batch)."""

    ENTRY = struct.Struct(">ii")
    KEY_TYPECODE = "i"


class TimeIndex(SparseIndex):
    """``.timeindex``: (largest timestamp so far, relative offset of the batch reaching it)."""

    ENTRY = struct.Struct(">qi")
    KEY_TYPECODE = "q"
