"""What the broker lets in: connection quotas and the memory that buffered requests may hold.

Kafka protects itself from its clients with ``max.connections``, ``max.connections.per.ip``
(new connections over the limit are closed at once) and ``queued.max.request.bytes`` (a memory
pool for request buffers: a connection whose next request does not fit is muted, i.e. its
socket is not read, until memory is released). Without them a few hundred idle sockets exhaust
the file descriptors and a few stalled 100 MB frames exhaust the memory.

Both classes are plain bookkeeping for one asyncio loop; the server decides when to ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections import Counter, deque
from collections.abc import AsyncIterator


def default_max_connections() -> int:
    """Half the process's open-file limit: the other half stays for segment files, so the
    broker can always accept (and refuse) a connection and open a log."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, soft // 2) if soft != resource.RLIM_INFINITY else 1 << 20


class ConnectionQuotas:
    """Counts open connections, in total and per client address."""

    def __init__(self, max_connections: int, max_per_ip: int | None) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self._per_ip: Counter[str] = Counter()

    def admit(self, host: str) -> str | None:
        """Count a new connection from ``host`` in, or name the limit (Kafka's config) that
        refuses it."""
        if self.max_per_ip is not None and self._per_ip[host] >= self.max_per_ip:
            return "max.connections.per.ip"
        if self._per_ip.total() >= self.max_connections:
            return "max.connections"
        self._per_ip[host] += 1
        return None

    def release(self, host: str) -> None:
        self._per_ip[host] -= 1
        if not self._per_ip[host]:
            del self._per_ip[host]


class RequestMemory:
    """A byte budget for request buffers, handed out whole.

    A request reserves its full frame size before its body is read, so memory is committed
    only within the budget; a reservation that does not fit waits (and with it, the reading
    of its connection) until others are done. Waiters are served in arrival order among those
    that fit: a small request does not queue behind a large one that cannot fit yet (Kafka's
    pool likewise serves whichever muted connection's request fits), so a client that claims
    large frames and stalls holds at most the budget, never the whole broker. Reservations
    larger than the budget are never made: the server refuses frames above
    ``max.request.bytes``, which is at most the budget.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Requests waiting for memory now."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes of the budget for the duration of the block."""
        if size > self.capacity:
            raise ValueError(f"a {size}-byte reservation can never fit in {self.capacity}")
        if self.in_use + size > self.capacity:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append((size, turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release(size)  # granted just as we were cancelled
                else:
                    self._waiting.remove((size, turn))
                raise
        else:
            self.in_use += size
        try:
            yield
        finally:
            self._release(size)

    def _release(self, size: int) -> None:
        self.in_use -= size
        self._grant()

    def _grant(self) -> None:
        """Wake, in arrival order, every waiter that fits in what is free now."""
        for size, turn in list(self._waiting):
            if self.in_use + size <= self.capacity:
                self._waiting.remove((size, turn))
                self.in_use += size
                turn.set_result(None)
