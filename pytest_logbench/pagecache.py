"""Page-cache controls for files: measure, evict and warm the cache of a broker's segment files.

Why this exists: Kafka reads are fast because the OS page cache is the read cache, so a benchmark
that does not control and observe the cache measures luck. These functions put files into a known
state (cold: evicted; hot: read through) and report, per page, what the kernel actually holds, so
a test can assert "the tail was resident" instead of inferring it from timings.

How residency is measured:

* counts come from cachestat(2) (Linux >= 6.5, called through ctypes because Python 3.11's ``os``
  has no wrapper): one syscall per file, plus dirty / writeback / evicted counts;
* the per-page map (for the vmtouch-like strip and for before/after diffs) comes from mincore(2)
  on a read-only shared mapping made with libc's mmap through ctypes (Python's ``mmap`` gives no
  address for read-only maps); mapping does not fault pages in, so measuring does not warm.
* without cachestat (ENOSYS, blocked, or an unknown syscall number) the counts come from the
  mincore map too; ``method`` says which source each file's counts came from.
* the kernel only reveals cache state of files the caller owns or may write: otherwise cachestat
  fails with EPERM and mincore *pretends every page is resident*. We raise PermissionError then
  rather than return a map that would make a cold file look hot.

Counts and map are two snapshots: with concurrent IO they can differ by the pages that changed in
between. Pages are the kernel's base pages (``PAGE_SIZE``), also inside large folios.

Directories given as paths are expanded to the regular files beneath them (recursively, sorted,
symlinked files followed, other special files skipped) because a broker's log directory is the
natural unit to warm or evict. A non-regular file named explicitly (FIFO, device) is rejected:
opening a FIFO would block.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from pytest_logbench.residency import (
    PAGE_SIZE,
    EvictResult,
    FileDelta,
    FileResidency,
    PathArg,
    Residency,
    ResidencyDelta,
    page_count,
)

__all__ = [
    "PAGE_SIZE",
    "EvictResult",
    "FileDelta",
    "FileResidency",
    "HasSegmentFiles",
    "PageCache",
    "Residency",
    "ResidencyDelta",
    "cachestat_available",
    "evict",
    "eviction_supported",
    "files_of",
    "residency",
    "warm",
]


Paths = PathArg | Iterable[PathArg]
Method = Literal["auto", "cachestat", "mincore"]

# cachestat(2) uses the unified syscall table number on these architectures.
_CACHESTAT_SYSCALL = {"x86_64": 451, "aarch64": 451}
# mincore windows: bounds the mapping size and the per-call vector for files larger than RAM.
_MINCORE_WINDOW = (1 << 30) // PAGE_SIZE * PAGE_SIZE
# warm(method="read") buffer, reused for the whole call.
_READ_CHUNK = 1 << 20
# fadvise(WILLNEED) reads at most max(read_ahead_kb, max_sectors_kb) per call (measured: a 64 MiB
# WILLNEED read 8 MiB here), so the range is issued in chunks no larger than a small window.
_WILLNEED_CHUNK = 128 << 10
# mincore sets bit 0 for a resident page; the other bits are reserved.
_LOW_BIT = bytes(b & 1 for b in range(256))

_PROT_READ = 0x1
_MAP_SHARED = 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int64,
]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.restype = ctypes.c_int
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_libc.syscall.restype = ctypes.c_long


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [
        ("nr_cache", ctypes.c_uint64),
        ("nr_dirty", ctypes.c_uint64),
        ("nr_writeback", ctypes.c_uint64),
        ("nr_evicted", ctypes.c_uint64),
        ("nr_recently_evicted", ctypes.c_uint64),
    ]


def _syscall_cachestat(fd: int, offset: int, length: int) -> _Cachestat:
    """Call cachestat(2); raise OSError with the kernel's errno (ENOSYS when unknown here)."""
    nr = _CACHESTAT_SYSCALL.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, f"no cachestat syscall number known for {platform.machine()}")
    rng = _CachestatRange(offset, length)
    result = _Cachestat()
    rc = _libc.syscall(
        ctypes.c_long(nr),
        ctypes.c_long(fd),
        ctypes.byref(rng),
        ctypes.byref(result),
        ctypes.c_long(0),
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


@functools.cache
def cachestat_available() -> tuple[bool, str]:
    """Whether cachestat(2) can be called here, and why not when it cannot.

    Probed with an invalid fd: EBADF proves the syscall exists without touching any file. EPERM
    for an invalid fd means a seccomp filter (e.g. a container's default profile) blocks it.
    """
    try:
        _syscall_cachestat(-1, 0, 0)
    except OSError as exc:
        if exc.errno == errno.EBADF:
            nr = _CACHESTAT_SYSCALL[platform.machine()]
            return True, f"cachestat(2) available (syscall {nr})"
        if exc.errno == errno.ENOSYS:
            return False, f"cachestat(2) not available: {exc.strerror} (needs Linux >= 6.5)"
        if exc.errno == errno.EPERM:
            return False, "cachestat(2) blocked: EPERM even for an invalid fd (seccomp filter?)"
        return False, f"cachestat(2) unusable: {exc.strerror}"
    return False, "cachestat(2) accepted an invalid fd: not trusting it"


def _page_map(fd: int, size: int, path: Path) -> bytes:
    """One byte per page of ``fd`` (1 = resident), from mincore(2) over read-only windows."""
    out = bytearray()
    for start in range(0, size, _MINCORE_WINDOW):
        length = min(_MINCORE_WINDOW, size - start)
        addr = _libc.mmap(None, length, _PROT_READ, _MAP_SHARED, fd, start)
        if addr is None or addr == _MAP_FAILED:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap for mincore failed: {os.strerror(err)}", str(path))
        try:
            vec = (ctypes.c_ubyte * page_count(length))()
            if _libc.mincore(addr, length, vec) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mincore failed: {os.strerror(err)}", str(path))
        finally:
            _libc.munmap(addr, length)
        out += bytes(vec).translate(_LOW_BIT)
    return bytes(out)


def _kernel_reveals(path: Path, st: os.stat_result) -> bool:
    """Mirror of the kernel's rule for cachestat/mincore: owner, capable, or may write."""
    euid = os.geteuid()
    return euid == 0 or st.st_uid == euid or os.access(path, os.W_OK, effective_ids=True)


def _hidden_error(path: Path) -> PermissionError:
    return PermissionError(
        errno.EPERM,
        "the kernel reveals page-cache residency only to a caller that owns the file or may "
        "write it (cachestat(2) returns EPERM and mincore(2) reports every page resident)",
        str(path),
    )


def _expand(paths: Paths) -> list[Path]:
    """Absolute file paths: directories expanded to regular files beneath, duplicates dropped."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    out: dict[Path, None] = {}
    for item in items:
        path = Path(os.path.abspath(item))
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", str(path)) from None
        if stat.S_ISREG(mode):
            out[path] = None
        elif stat.S_ISDIR(mode):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    child = Path(root, name)
                    try:
                        if stat.S_ISREG(os.stat(child).st_mode):
                            out[child] = None
                    except FileNotFoundError:  # dangling symlink or removed meanwhile
                        continue
        else:
            kind = stat.filemode(mode)
            raise ValueError(f"{path}: not a regular file or directory (mode {kind})")
    return list(out)


def _measure(path: Path, method: Method) -> FileResidency:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        pages = page_count(st.st_size)
        use_cachestat = method == "cachestat" or (method == "auto" and cachestat_available()[0])
        if use_cachestat:
            try:
                cs = _syscall_cachestat(fd, 0, pages * PAGE_SIZE) if pages else _Cachestat()
            except OSError as exc:
                if exc.errno == errno.EPERM:
                    raise _hidden_error(path) from None
                message = f"cachestat(2) failed: {exc.strerror}"
                raise OSError(exc.errno, message, str(path)) from None
            page_map = _page_map(fd, st.st_size, path)
            return FileResidency(
                path=path,
                size=st.st_size,
                resident_pages=min(cs.nr_cache, pages),
                page_map=page_map,
                method="cachestat",
                dirty_pages=cs.nr_dirty,
                writeback_pages=cs.nr_writeback,
                evicted_pages=cs.nr_evicted,
                recently_evicted_pages=cs.nr_recently_evicted,
            )
        if not _kernel_reveals(path, st):
            raise _hidden_error(path)
        page_map = _page_map(fd, st.st_size, path)
        return FileResidency(path, st.st_size, page_map.count(1), page_map, "mincore")
    finally:
        os.close(fd)


def residency(paths: Paths, *, method: Method = "auto") -> Residency:
    """Measure which pages of ``paths`` are in the page cache, without faulting any in.

    ``method="auto"`` counts with cachestat(2) where available and falls back to mincore(2);
    ``"cachestat"`` insists on cachestat (OSError if unavailable); ``"mincore"`` forces mincore
    counts, e.g. to cross-check the two. Raises FileNotFoundError naming a missing path and
    PermissionError when the kernel would hide the truth (see the module docstring).
    """
    return Residency(tuple(_measure(p, method) for p in _expand(paths)))


def _fadvise_range(offset: int, length: int | None) -> tuple[int, int]:
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"negative range: offset={offset}, length={length}")
    return offset, 0 if length is None else length


def evict(paths: Paths, *, offset: int = 0, length: int | None = None) -> EvictResult:
    """Drop the files' pages from the page cache: fdatasync, then posix_fadvise(DONTNEED).

    Why per file: /proc/sys/vm/drop_caches is global and often not writable (not even as root in
    containers); DONTNEED works for any file we can open. The sync first turns dirty pages into
    clean ones, which DONTNEED can drop (fdatasync on Linux works on a read-only fd, so files we
    may only read are handled too). ``offset``/``length`` limit the range (None = to EOF). The
    result re-measures, so pages that stayed are reported rather than assumed gone.
    """
    files = _expand(paths)
    before = residency(files)
    start, count = _fadvise_range(offset, length)
    for path in files:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, start, count, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return EvictResult(before, residency(files))


def warm(
    paths: Paths,
    *,
    method: Literal["read", "willneed"] = "read",
    offset: int = 0,
    length: int | None = None,
) -> Residency:
    """Bring the files (or the byte range ``offset``..``offset+length`` of each) into the cache.

    ``"read"`` reads through with large preads into one reused buffer: synchronous and certain,
    and the pages are charged to the caller's memory cgroup; for a range, readahead is switched
    off on our descriptor so that only the range is cached. ``"willneed"`` asks the kernel for
    readahead (posix_fadvise WILLNEED) in chunks, because one call is capped at the device's
    readahead size; it is asynchronous, so the residency returned may still be growing (cachestat
    counts pages under read IO, mincore does not). Returns the residency measured afterwards.
    """
    if method not in ("read", "willneed"):
        raise ValueError(f"unknown warm method {method!r}: use 'read' or 'willneed'")
    files = _expand(paths)
    start, count = _fadvise_range(offset, length)
    buf = memoryview(bytearray(_READ_CHUNK)) if method == "read" else None
    for path in files:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            end = size if length is None else min(size, start + count)
            if buf is not None:
                if offset or length is not None:
                    # Readahead would cache up to read_ahead_kb past the range: read it exactly.
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                pos = start
                while pos < end:
                    n = os.preadv(fd, [buf[: min(_READ_CHUNK, end - pos)]], pos)
                    if n == 0:  # truncated meanwhile
                        break
                    pos += n
            else:
                for pos in range(start, end, _WILLNEED_CHUNK):
                    chunk = min(_WILLNEED_CHUNK, end - pos)
                    os.posix_fadvise(fd, pos, chunk, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
    return residency(files)


def eviction_supported(directory: PathArg) -> tuple[bool, str]:
    """Whether evict() really empties the cache for files in ``directory``, with the reason.

    Probed with a small synced file: tmpfs and other memory-backed filesystems ignore DONTNEED,
    and some network filesystems may keep pages; a benchmark that needs a cold cache must skip
    there instead of reporting warm numbers as cold ones.
    """
    directory = Path(directory)
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".logbench-evict-probe-") as f:
            f.write(b"\x5a" * (64 * PAGE_SIZE))
            f.flush()
            result = evict(f.name)
    except OSError as exc:
        return False, f"cannot probe eviction in {directory}: {exc}"
    if not result.complete:
        left = result.after.files[0]
        return False, (
            f"posix_fadvise(DONTNEED) left {left.resident_pages}/{left.pages} pages of a synced "
            f"probe file resident in {directory}: the filesystem keeps file pages in memory "
            "(tmpfs?)"
        )
    return True, f"posix_fadvise(DONTNEED) evicts in {directory} (via {result.after.method})"


@runtime_checkable
class HasSegmentFiles(Protocol):
    """Anything that can list its files, e.g. a broker (its log segments, of one topic or
    all)."""

    def segment_files(self, topic: str | None = None) -> Iterable[PathArg]: ...


Target = PathArg | HasSegmentFiles | Iterable[PathArg]
Topics = str | Iterable[str] | None


def files_of(target: Target, topic: Topics = None) -> Paths:
    """The files of ``target``; of a broker, the segments of ``topic`` (a name or several)
    when given, so a test measures its own topics and not what others wrote to the broker."""
    if isinstance(target, HasSegmentFiles):
        if topic is None:
            return list(target.segment_files())
        names = [topic] if isinstance(topic, str) else list(topic)
        return [path for name in names for path in target.segment_files(name)]
    if topic is not None:
        raise TypeError(f"topic= selects a broker's segments; {target!r} is not a broker")
    return target


class PageCache:
    """The ``page_cache`` fixture: the module functions, taking a path, paths or a broker
    (``topic=`` narrows a broker to the segments of that topic or those topics)."""

    def residency(
        self, target: Target, *, topic: Topics = None, method: Method = "auto"
    ) -> Residency:
        return residency(files_of(target, topic), method=method)

    def evict(
        self,
        target: Target,
        *,
        topic: Topics = None,
        offset: int = 0,
        length: int | None = None,
    ) -> EvictResult:
        return evict(files_of(target, topic), offset=offset, length=length)

    def warm(
        self,
        target: Target,
        *,
        topic: Topics = None,
        method: Literal["read", "willneed"] = "read",
        offset: int = 0,
        length: int | None = None,
    ) -> Residency:
        return warm(files_of(target, topic), method=method, offset=offset, length=length)
