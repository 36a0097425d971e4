"""One client connection: request bytes received straight into the buffers that keep them.

asyncio's ``StreamReader`` copies every byte of a request several times on its way to a frame:
the transport's ``recv`` makes a new bytes object, the reader appends it to its own buffer,
``read`` slices it out again, and the frame is assembled from the pieces. A produce request is
mostly record bytes, so those copies (and the page faults of the fresh buffers) were a large
part of the produce path's CPU. ``Connection`` is an ``asyncio.BufferedProtocol``: the server
hands it the buffer the next bytes belong in (a frame's size prefix, then its body) and the
transport's ``recv_into`` writes them there.

The socket is read only while the server waits for bytes. Bytes that arrive while it does not
(the next pipelined request, while this one is handled) go into a small buffer of
``EARLY_BYTES`` and reading pauses until the server asks again, so a connection whose request
waits for memory or for its turn holds at most that much, as Kafka mutes a connection.

Responses leave through an ``asyncio.StreamWriter`` on the same transport (``FlowControlMixin``
is asyncio's own write-side flow control for streams), so the transmitters use it as they would
any stream's writer.
"""

from __future__ import annotations

import asyncio
from asyncio.streams import FlowControlMixin
from collections.abc import Callable, Coroutine
from typing import Any

EARLY_BYTES = 64 * 1024
"""Bytes read ahead of the server's asking (the start of the next pipelined request)."""


class Idle(Exception):
    """No bytes from the client for the connection's idle time (connections.max.idle.ms)."""


class Connection(FlowControlMixin, asyncio.BufferedProtocol):
    """A client connection: ``receive_into`` for requests, ``writer`` for responses.

    ``serve`` is started as the connection's task when the connection is made and runs until
    it returns; ``close`` then closes the transport. A wait for bytes that sees none for
    ``idle_seconds`` raises ``Idle`` (any byte that arrives starts the time again).
    """

    def __init__(
        self, serve: Callable[[Connection], Coroutine[Any, Any, None]], idle_seconds: float
    ) -> None:
        super().__init__()
        self._serve = serve
        self._idle_seconds = idle_seconds
        self._last_bytes_at = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport
        self.writer: asyncio.StreamWriter
        self._task: asyncio.Task[None] | None = None  # held here: the loop holds tasks weakly
        self._into: memoryview | None = None  # where the bytes the server waits for go
        self._filled = 0
        self._waiter: asyncio.Future[int] | None = None
        self._early = bytearray(EARLY_BYTES)
        self._early_size = 0
        self._ended = False
        self._closed = self._loop.create_future()

    # --- for the server ------------------------------------------------------------------

    async def receive_into(self, buffer: memoryview) -> int:
        """Fill ``buffer`` with the client's next bytes; returns how many arrived, fewer than
        ``len(buffer)`` only if the client closed its side first. Raises ``Idle``, or the
        connection's error (ConnectionResetError, ...) if it broke."""
        filled = self._take_early(buffer)
        if filled == len(buffer) or self._ended:
            return filled
        self._into, self._filled = buffer, filled
        self._waiter = self._loop.create_future()
        self._last_bytes_at = self._loop.time()
        self._idle_timer = self._loop.call_at(
            self._last_bytes_at + self._idle_seconds, self._check_idle
        )
        self.transport.resume_reading()
        try:
            return await self._waiter
        finally:
            self._idle_timer.cancel()
            if self._into is not None:  # idle, or the task was cancelled: stop reading for it
                self.transport.pause_reading()
            self._into = self._waiter = None

    def peer(self) -> tuple[str, int]:
        """The client's (host, port)."""
        return self.transport.get_extra_info("peername") or ("?", 0)

    async def close(self) -> None:
        """Close the transport (after its buffered writes) and wait until it is closed."""
        self.transport.close()
        await self._closed

    def _check_idle(self) -> None:
        """The idle timer: raise ``Idle`` in the waiting reader, or wait on from the last byte."""
        assert self._waiter is not None
        if self._waiter.done():
            return
        idle_until = self._last_bytes_at + self._idle_seconds
        if self._loop.time() >= idle_until:
            self._waiter.set_exception(Idle())
        else:
            self._idle_timer = self._loop.call_at(idle_until, self._check_idle)

    def _take_early(self, buffer: memoryview) -> int:
        """Move bytes read ahead into ``buffer``; how many."""
        taken = min(self._early_size, len(buffer))
        if taken:
            early = memoryview(self._early)
            buffer[:taken] = early[:taken]
            early[: self._early_size - taken] = early[taken : self._early_size]
            early.release()
            self._early_size -= taken
        return taken

    # --- asyncio's side --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()  # until the server asks for bytes
        self.writer = asyncio.StreamWriter(transport, self, None, self._loop)
        self._task = self._loop.create_task(self._serve(self))

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._into is not None:
            return self._into[self._filled :]
        # Bytes nobody asked for yet: read ahead into the small buffer (empty whenever
        # reading is on), then pause until the server asks.
        return memoryview(self._early)[self._early_size :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._into is None:
            self._early_size += nbytes
            self.transport.pause_reading()
            return
        self._filled += nbytes
        self._last_bytes_at = self._loop.time()
        if self._filled == len(self._into):
            self._into = None
            self._wake(self._filled)

    def eof_received(self) -> bool:
        self._ended = True
        if self._into is not None:
            self._into = None
            self._wake(self._filled)
        # Keep the transport open for the answer to a request that arrived before the end,
        # as asyncio's streams do (TLS has no half-closed state).
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # wakes writers waiting to drain
        self._ended = True
        waiter, self._into = self._waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(self._filled)
            else:
                waiter.set_exception(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def _wake(self, received: int) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(received)
