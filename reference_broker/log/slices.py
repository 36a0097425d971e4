"""What the log hands back: the file slice a fetch ships with ``os.sendfile``, and what an
append or a read did. Plain values, so the server and the transport depend on them and not on
the partition's internals."""

from dataclasses import dataclass
from io import FileIO
from pathlib import Path


@dataclass(frozen=True)
class AppendResult:
    """Where an append landed. A ``duplicate`` (an idempotent producer's retry of batches the
    log already holds) carries the original offsets and appended nothing: size and counts 0."""

    base_offset: int
    last_offset: int
    size: int
    batch_count: int
    record_count: int
    duplicate: bool = False


@dataclass(frozen=True)
class FileSlice:
    """Bytes of one segment file to ship with ``os.sendfile(out, file.fileno(), position, length)``.

    ``file`` stays open while the segment is deleted by retention (renamed ``.deleted``, closed
    only after file_delete_delay_ms), so a slice taken before the deletion still reads.
    ``base_offset`` and ``path`` name the segment for diagnostics.
    """

    file: FileIO
    position: int
    length: int
    base_offset: int
    path: Path


@dataclass(frozen=True)
class ReadResult:
    """A fetch's answer for one partition.

    ``first_offset`` is the base offset of the first batch in the slice (it may be below the
    requested offset: clients skip the records they did not ask for). ``tail_distance`` is the
    number of bytes from the start of the slice to the end of the log across segments: 0 reads
    the tail, large values replay history that is likely no longer in the page cache.
    """

    slice: FileSlice | None
    high_watermark: int
    log_start_offset: int
    first_offset: int
    tail_distance: int
