"""Page-cache controls against the real kernel: real files, real eviction, util-linux as witness."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_logbench.pagecache import (
    PAGE_SIZE,
    FileResidency,
    PageCache,
    cachestat_available,
    evict,
    eviction_supported,
    residency,
    warm,
)
from tests.unprivileged import as_nobody

MiB = 1 << 20
# Tens of MiB, and not a whole number of pages: the partial last page is counted too.
FILE_SIZE = 32 * MiB + 100
FILE_PAGES = -(-FILE_SIZE // PAGE_SIZE)

needs_cachestat = pytest.mark.skipif(not cachestat_available()[0], reason=cachestat_available()[1])


def _write(path: Path, size: int, *, sync: bool = True) -> Path:
    with open(path, "wb") as f:
        f.write(b"\x6b" * size)
        f.flush()
        if sync:
            os.fsync(f.fileno())
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose filesystem really drops pages on DONTNEED (not tmpfs)."""
    directory = tmp_path_factory.mktemp("pagecache")
    ok, reason = eviction_supported(directory)
    if not ok:
        pytest.skip(reason)
    return directory


@pytest.fixture(scope="module")
def data_file(cache_dir: Path) -> Iterator[Path]:
    """One synced file shared by the tests; each test sets the cache state it needs first."""
    path = _write(cache_dir / "00000000000000000000.log", FILE_SIZE)
    yield path
    path.unlink()


def _fincore(path: Path) -> tuple[int, int]:
    """(resident bytes, resident pages) as util-linux fincore reports them."""
    if shutil.which("fincore") is None:
        pytest.skip("util-linux fincore is not installed: no independent witness")
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,PAGES", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


def test_evict_leaves_nothing_resident(data_file: Path) -> None:
    warm(data_file)
    result = evict(data_file)
    assert result.before.resident_pages == FILE_PAGES, result.before.report()
    assert result.complete, result.report()
    assert result.after.resident_pages == 0
    assert result.evicted_pages == FILE_PAGES
    assert result.stayed == ()
    assert _fincore(data_file) == (0, 0)


def test_warm_read_makes_the_whole_file_resident(data_file: Path) -> None:
    evict(data_file)
    after = warm(data_file)
    assert after.fraction == 1.0, after.report()
    assert after.resident_bytes == FILE_SIZE
    assert after[data_file].strip() == f"[{'O' * 64}] {FILE_PAGES}/{FILE_PAGES}"
    assert _fincore(data_file) == (FILE_PAGES * PAGE_SIZE, FILE_PAGES)


def test_warm_range_caches_exactly_that_range(data_file: Path) -> None:
    evict(data_file)
    after = warm(data_file, offset=8 * MiB, length=4 * MiB)[data_file]
    first, count = 8 * MiB // PAGE_SIZE, 4 * MiB // PAGE_SIZE
    expected = bytes(first) + b"\x01" * count + bytes(FILE_PAGES - first - count)
    assert after.page_map == expected, after.report(64)
    assert after.resident_pages == count
    # 32 cells of 1 MiB each: cells 8..11 full.
    assert after.strip(32) == f"[{' ' * 8}OOOO{' ' * 20}] {count}/{FILE_PAGES}"
    assert _fincore(data_file) == (count * PAGE_SIZE, count)


@needs_cachestat
def test_cachestat_and_mincore_agree_on_a_partly_cached_file(data_file: Path) -> None:
    evict(data_file)
    warm(data_file, offset=3 * MiB, length=5 * MiB)
    warm(data_file, offset=20 * MiB, length=1 * MiB)
    by_cachestat = residency(data_file, method="cachestat")[data_file]
    by_mincore = residency(data_file, method="mincore")[data_file]
    assert by_cachestat.method == "cachestat" and by_mincore.method == "mincore"
    assert by_cachestat.resident_pages == by_mincore.resident_pages == 6 * MiB // PAGE_SIZE
    assert by_cachestat.page_map == by_mincore.page_map
    assert by_mincore.dirty_pages is None and by_cachestat.dirty_pages == 0
    assert _fincore(data_file)[1] == by_cachestat.resident_pages


@needs_cachestat
def test_willneed_starts_readahead_for_the_whole_file(data_file: Path) -> None:
    # cachestat counts pages as soon as readahead has inserted them, before the IO completes,
    # and the range is issued in chunks because a single WILLNEED is capped at the readahead
    # size (8 MiB here), so the whole file must be counted right away.
    evict(data_file)
    after = warm(data_file, method="willneed")
    assert after.method == "cachestat"
    assert after.resident_pages == FILE_PAGES, after.report()


def test_evict_syncs_dirty_pages_before_dropping_them(cache_dir: Path) -> None:
    path = _write(cache_dir / "dirty.log", 4 * MiB, sync=False)
    try:
        before = residency(path)
        if before.dirty_pages is not None:  # cachestat sees dirty pages, mincore cannot
            assert before.dirty_pages > 0, before.report()
        result = evict(path)
        assert result.complete, result.report()
    finally:
        path.unlink()


def test_evict_range_keeps_the_rest(data_file: Path) -> None:
    warm(data_file)
    result = evict(data_file, offset=0, length=16 * MiB)
    assert result.evicted_pages == 16 * MiB // PAGE_SIZE
    assert result.after.resident_pages == FILE_PAGES - 16 * MiB // PAGE_SIZE
    assert not result.complete
    assert "pages stayed" in result.report()


def test_delta_tracks_pages_gained_and_lost(data_file: Path) -> None:
    evict(data_file)
    cold = residency(data_file)
    hot_head = warm(data_file, offset=0, length=2 * MiB)
    gained = cold.delta(hot_head)
    assert (gained.gained_pages, gained.lost_pages) == (2 * MiB // PAGE_SIZE, 0)
    moved = hot_head.delta(evict(data_file, length=1 * MiB).after)
    assert (moved.gained_pages, moved.lost_pages, moved.change) == (0, 256, -256)
    assert "-256 evicted" in moved.report()


def test_strip_renders_full_partial_and_empty_buckets() -> None:
    pages = bytes([1, 1, 1, 1, 1, 0, 0, 0])
    f = FileResidency(Path("/x"), 8 * PAGE_SIZE, 5, pages, "mincore")
    assert f.strip(4) == "[OOo ] 5/8"
    assert f.strip(64) == "[OOOOO   ] 5/8"  # never more cells than pages
    assert f.strip(1) == "[o] 5/8"
    empty = FileResidency(Path("/e"), 0, 0, b"", "mincore")
    assert empty.strip() == "[] 0/0"
    assert empty.fraction == 1.0
    with pytest.raises(ValueError, match="width"):
        f.strip(0)


def test_report_has_a_line_per_file_and_a_total(data_file: Path, cache_dir: Path) -> None:
    empty = _write(cache_dir / "empty.log", 0)
    try:
        evict(data_file)
        report = warm([data_file, empty], offset=0, length=8 * MiB).report()
    finally:
        empty.unlink()
    lines = report.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{data_file}: 8.0 MiB of 32.0 MiB resident (25.0%)")
    assert lines[1].startswith(f"{empty}: 0 B of 0 B resident (100.0%), 0/0 pages")
    assert lines[2].startswith("total: 2 files, 8.0 MiB of 32.0 MiB resident")


def test_missing_path_raises_file_not_found_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-segment.log"
    for call in (residency, evict, warm):
        with pytest.raises(FileNotFoundError, match=r"no-such-segment\.log") as info:
            call(missing)
        assert info.value.filename == str(missing)


def test_directories_expand_to_their_regular_files(tmp_path: Path) -> None:
    for name in ("b/1.log", "a/2.index", "a/1.log"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        _write(tmp_path / name, PAGE_SIZE)
    fifo = tmp_path / "a" / "pipe"
    os.mkfifo(fifo)
    found = [f.path.relative_to(tmp_path).as_posix() for f in residency(tmp_path)]
    assert found == ["a/1.log", "a/2.index", "b/1.log"]  # sorted, FIFO skipped
    with pytest.raises(ValueError, match="not a regular file"):
        residency(fifo)


def test_bad_arguments_are_rejected(data_file: Path) -> None:
    with pytest.raises(ValueError, match="unknown warm method"):
        warm(data_file, method="mmap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative range"):
        evict(data_file, offset=-1)


def test_page_cache_accepts_paths_and_objects_with_segment_files(data_file: Path) -> None:
    class Broker:
        def segment_files(self) -> list[Path]:
            return [data_file]

    cache = PageCache()
    assert cache.evict(Broker()).complete
    assert cache.warm(Broker(), offset=0, length=1 * MiB).resident_pages == 256
    assert cache.residency(str(data_file)).resident_pages == 256
    assert cache.residency([data_file]).resident_pages == 256


def test_eviction_probe_recognises_tmpfs() -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm to probe")
    ok, reason = eviction_supported(shm)
    assert not ok and "left 64/64 pages" in reason


@pytest.fixture
def world_readable_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="logbench-perm-") as directory:
        os.chmod(directory, 0o755)
        path = _write(Path(directory) / "root-owned.log", 1 * MiB)
        os.chmod(path, 0o644)
        evict(path)
        yield path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
def test_residency_of_a_file_we_may_not_write_is_refused(world_readable_file: Path) -> None:
    # mincore(2) would report every page of this evicted file resident to uid 65534: refusing is
    # the only honest answer, for both count sources.
    def measure() -> str:
        lines = []
        for method in ("auto", "mincore"):
            try:
                residency(world_readable_file, method=method)
                lines.append(f"{method} measured")
            except PermissionError as exc:
                lines.append(f"{method} refused {exc.filename}")
        return "\n".join(lines)

    out = as_nobody(measure).splitlines()
    assert out == [f"auto refused {world_readable_file}", f"mincore refused {world_readable_file}"]
