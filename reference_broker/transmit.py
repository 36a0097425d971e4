"""Shipping a response: user-space bytes plus file slices, by sendfile or by copy.

A fetch response is a small header built in Python followed by one file slice per partition
(segment file, position, length). How the slices reach the socket is the whole point of the seed:

- ``zerocopy``: ``os.sendfile`` moves the bytes from the page cache to the socket inside the
  kernel; they never enter this process (Kafka's ``FileChannel.transferTo``).
- ``copy``: ``os.pread`` into a Python buffer, then ``send`` — two copies across the user/kernel
  boundary for every byte, the way a broker with its own read path works.
- ``tls``: the copy path on a TLS transport: encryption happens in user space, so zero-copy is
  impossible (the seed's "TLS tax"; Python 3.11 has no kernel TLS).

The transmitters count bytes by path in the broker's metrics, which is how tests prove which
path a fetch took.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from reference_broker.metrics import Metrics

# Copy path read size: large enough that syscalls do not dominate, small enough to stay in cache.
COPY_CHUNK_BYTES = 256 * 1024
# Bytes per sendfile call: on this project's machine 1 MiB calls moved 1.1-1.6x what 8 MiB
# calls did over loopback (docs/performance.md).
SENDFILE_CHUNK_BYTES = 1 << 20


class FileSliceLike(Protocol):
    """What a transmitter needs of a log's file slice."""

    @property
    def file(self) -> object: ...  # an open file object with fileno()

    @property
    def position(self) -> int: ...

    @property
    def length(self) -> int: ...


Chunk = bytes | FileSliceLike


class Transmitter:
    """Writes response chunks to a stream; subclasses decide how file slices travel."""

    path = "abstract"

    def __init__(self, metrics: Metrics, slowdown: float = 1.0) -> None:
        self.metrics = metrics
        self.slowdown = slowdown
        self._seconds_per_byte: float | None = None  # the last response's sending pace

    async def send(self, writer: asyncio.StreamWriter, chunks: Sequence[Chunk]) -> None:
        """Send every chunk in order and wait until the socket buffer accepted them."""
        if writer.transport.is_closing():
            # The client left while its fetch was parked: there is no one to answer.
            raise ConnectionResetError("client disconnected before its response was sent")
        sliced = sum(c.length for c in chunks if not isinstance(c, bytes | bytearray | memoryview))
        if self.slowdown > 1 and sliced:
            await self._stretch(sliced)
        started = time.perf_counter()
        for chunk in chunks:
            if isinstance(chunk, bytes | bytearray | memoryview):
                writer.write(chunk)
                self.metrics.add("logbench_response_header_bytes_total", len(chunk))
            elif chunk.length > 0:
                await self.send_slice(writer, chunk)
                self.metrics.add("logbench_bytes_sent_total", chunk.length, path=self.path)
                self.metrics.add("logbench_slices_sent_total", 1, path=self.path)
        await writer.drain()
        if sliced:
            self._seconds_per_byte = (time.perf_counter() - started) / sliced

    async def _stretch(self, sliced: int) -> None:
        """A deliberate regression, for testing regression detection: before a response with
        ``sliced`` bytes of file slices, wait ``slowdown - 1`` times as long as sending that many
        bytes took at the pace of the last response, so each fetch takes ``slowdown`` times as
        long (the first one sets the pace). Waiting before the response keeps its client
        waiting whatever it does next; a wait after the response overlapped the client's next
        steps (reading another broker, draining its socket buffer)."""
        if self._seconds_per_byte is not None:
            await asyncio.sleep(sliced * self._seconds_per_byte * (self.slowdown - 1))


class ZeroCopyTransmitter(Transmitter):
    """Ships slices with ``os.sendfile`` straight from the segment to the connection's socket.

    The loop is written out rather than left to ``loop.sendfile``, which sends the whole slice
    per call, pauses and resumes reading around every slice and re-registers the socket with
    epoll after each partial send. Here the calls are ``SENDFILE_CHUNK_BYTES`` long (moderate
    chunks beat one huge call on loopback; see docs/performance.md), and the event loop is
    asked to wait only when the socket buffer is full.

    Before its first slice, a connection's send buffer is raised to the largest the system
    allows, where that is larger than what TCP's autotuning reaches (``_send_buffer_limit``):
    a response that fits never meets a full socket, so the loop does not wait in the middle
    of it (each wait costs a descriptor, two epoll changes and a loop turn). The buffer is a
    ceiling, not an allocation, and what it holds are references to page-cache pages, not
    copies. What waits in it beyond the reader's window is sent as the reader's ACKs arrive,
    in whichever context handles them: over loopback, often the reader's own.
    """

    path = "zerocopy"

    def __init__(self, metrics: Metrics, slowdown: float = 1.0) -> None:
        super().__init__(metrics, slowdown)
        self._prepared: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

    def _prepare(self, transport: asyncio.WriteTransport) -> None:
        """Once per connection: ``drain`` waits until the transport holds nothing (high
        water mark 0), and the send buffer is raised where that pays."""
        if transport in self._prepared or transport.is_closing():
            return
        transport.set_write_buffer_limits(high=0)
        limit = _send_buffer_limit()
        if limit:  # Linux doubles the value asked for (bookkeeping), capped at wmem_max
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limit)
        self._prepared.add(transport)

    async def send_slice(self, writer: asyncio.StreamWriter, piece: FileSliceLike) -> None:
        transport = writer.transport
        self._prepare(transport)  # type: ignore[arg-type]
        # The response header went through the transport: it must have left before the
        # records are written to the socket behind the transport's back.
        await writer.drain()
        out = transport.get_extra_info("socket").fileno()
        source = piece.file.fileno()  # type: ignore[attr-defined]
        position, end = piece.position, piece.position + piece.length
        while position < end:
            if transport.is_closing():  # the client left: ``out`` may be closed or reused
                raise ConnectionResetError("client disconnected during sendfile")
            try:
                sent = os.sendfile(out, source, position, min(end - position, SENDFILE_CHUNK_BYTES))
            except BlockingIOError:
                await _writable(out)
                continue
            if sent == 0:
                raise ConnectionError(f"segment ended {end - position} bytes short of the slice")
            position += sent


@functools.cache
def _send_buffer_limit() -> int:
    """The largest SO_SNDBUF worth asking for here, or 0 to leave TCP's autotuning alone.

    An explicit SO_SNDBUF stops autotuning for that socket and is capped at
    ``net.core.wmem_max``; autotuning grows a buffer up to ``net.ipv4.tcp_wmem``'s maximum. So
    asking only pays where the cap (doubled, as Linux doubles it) beats that maximum, as on
    this project's machines (4 MiB against 4 MiB); with Linux's defaults (208 KiB against
    4 MiB) autotuning is left to work.
    """
    try:
        cap = int(Path("/proc/sys/net/core/wmem_max").read_text())
        autotuned = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):  # not Linux, or no /proc
        return 0
    return cap if 2 * cap > autotuned else 0


async def _writable(fd: int) -> None:
    """Wait until the socket ``fd`` has room. The transport owns ``fd``'s place in the event
    loop's selector (asyncio refuses a second owner), so a duplicate descriptor of the same
    socket is watched instead, for as long as the wait lasts."""
    loop = asyncio.get_running_loop()
    duplicate = os.dup(fd)
    room: asyncio.Future[None] = loop.create_future()
    loop.add_writer(duplicate, lambda: room.done() or room.set_result(None))
    try:
        await room
    finally:
        loop.remove_writer(duplicate)
        os.close(duplicate)


class CopyTransmitter(Transmitter):
    """Ships slices through user space: ``pread`` into Python bytes, then ``write``."""

    path = "copy"

    async def send_slice(self, writer: asyncio.StreamWriter, piece: FileSliceLike) -> None:
        fd = piece.file.fileno()  # type: ignore[attr-defined]
        position, remaining = piece.position, piece.length
        while remaining > 0:
            data = os.pread(fd, min(remaining, COPY_CHUNK_BYTES), position)
            if not data:
                raise ConnectionError(f"segment ended {remaining} bytes short of the slice")
            writer.write(data)
            await writer.drain()
            position += len(data)
            remaining -= len(data)


class TlsTransmitter(CopyTransmitter):
    """The copy path on a TLS stream: counted apart, since it also pays for encryption."""

    path = "tls"


def make_transmitter(mode: str, metrics: Metrics, slowdown: float = 1.0) -> Transmitter:
    """The transmitter for a broker's ``--copy`` / TLS / default set-up."""
    kinds = {"zerocopy": ZeroCopyTransmitter, "copy": CopyTransmitter, "tls": TlsTransmitter}
    if mode not in kinds:
        raise ValueError(f"unknown transmit mode {mode!r}; expected one of {sorted(kinds)}")
    if slowdown < 1:
        raise ValueError(f"slowdown must be >= 1, got {slowdown}")
    return kinds[mode](metrics, slowdown)
