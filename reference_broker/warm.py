"""Warming cold fetch ranges off the event loop: the mitigation proposed for KAFKA-7504.

Why: the broker ships records with ``sendfile`` on its one event loop. When a fetch's range is
not in the page cache (a consumer replaying history), ``sendfile`` waits for the disk, and
while it waits no other connection is served: producers' acknowledgements and the tail
consumers' fetches queue behind one replay. Kafka's network threads have the same problem
(KAFKA-7504: produce p99 from under 20 ms to 50-200 ms). The fix proposed there, never merged
into Kafka, is to bring the range into the page cache on another thread before the network
thread sends it.

``FetchWarmer.warm`` does that for the slices of one fetch response: a worker thread
``sendfile``s each range to /dev/null, which reads it into the page cache without copying it
into user space (and waits until it is there, which ``posix_fadvise(WILLNEED)`` does not), while
the event loop serves other connections. Only history reads are warmed (slices starting beyond
``tail_window_bytes`` of the log end): tail reads are almost always cached, and a thread handoff
per tail fetch would cost every consumer at the tail for nothing. Under memory pressure a warmed
page can be evicted again before the loop sends it; then that send still waits for the disk.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from reference_broker.log.slices import FileSlice

# Replays are disk-bound: a few threads let several replaying consumers wait at once.
WARM_THREADS = 4
_CHUNK = 8 << 20  # bounded sendfile calls, as the transmitter makes


def _read_into_cache(slices: Sequence[FileSlice], sink: int) -> int:
    """Bring every slice's range into the page cache; the bytes read."""
    done = 0
    for piece in slices:
        position, end = piece.position, piece.position + piece.length
        while position < end:
            sent = os.sendfile(sink, piece.file.fileno(), position, min(_CHUNK, end - position))
            if sent == 0:  # the file is shorter than the slice (truncated): nothing to warm
                break
            position += sent
            done += sent
    return done


class FetchWarmer:
    """A small thread pool that reads fetch slices into the page cache before they are sent."""

    def __init__(self, threads: int = WARM_THREADS) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="warm")
        self._sink = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)

    async def warm(self, slices: Sequence[FileSlice]) -> int:
        """Read ``slices`` into the page cache on a worker thread; the bytes read."""
        if not slices:
            return 0
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _read_into_cache, slices, self._sink)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        os.close(self._sink)
