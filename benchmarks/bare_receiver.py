"""The least a Kafka fetch receiver can do, to check that the harness consumer is not the limit.

``BareSpliceFetch`` asks the broker for the same fetches the harness consumer does (Fetch v11,
8 MiB) but parses nothing it can avoid: it reads the fixed-size head of a one-partition response,
splices the records to /dev/null, and finds the next offset in a table of batch positions built
from the segment files before the run (so it never reads a batch header off the socket). It is
not a client anyone should use; it is the floor under the harness consumer's receive cost.
"""

from __future__ import annotations

import bisect
import socket
import time
from pathlib import Path
from typing import Any

from pytest_logbench.client import Transfer
from pytest_logbench.receive import SpliceDrain, fetch_frame, use_kernel_timeouts
from reference_broker.records import iter_batches

FETCH_BYTES = 8 << 20


class BareSpliceFetch:
    """Read a topic's partition 0 from ``broker`` with the bare splice loop."""

    name = "bare-splice"

    def __init__(self, broker: Any, topic: str) -> None:
        self.broker, self.topic = broker, topic
        self._sock: socket.socket | None = None
        self._drain: SpliceDrain | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "topic": self.topic}

    def setup(self) -> None:
        # Per segment: batch base offsets, where each batch starts and ends in the file, and
        # the offset after it.
        self._segments: list[tuple[list[int], list[int], list[int], list[int]]] = []
        for path in self.broker.segment_files(self.topic, 0):
            bases, starts, ends, nexts = [], [], [], []
            for position, header in iter_batches(memoryview(Path(path).read_bytes())):
                bases.append(header.base_offset)
                starts.append(position)
                ends.append(position + header.size)
                nexts.append(header.next_offset)
            self._segments.append((bases, starts, ends, nexts))
        self.end = self._segments[-1][3][-1]
        host, port = self.broker.bootstrap.rsplit(":", 1)
        self._sock = socket.create_connection((host, int(port)))
        use_kernel_timeouts(self._sock, 30.0)
        self._drain = SpliceDrain()
        self._frame, [self._at] = fetch_frame(self.topic, [0], "bare", FETCH_BYTES, 100)
        # size, correlation, throttle, error, session, 1 topic (count, name), 1 partition
        # (count, index, error, hw, lso, log start, aborted count, replica), records length.
        self._head = bytearray(4 + 14 + 4 + 2 + len(self.topic.encode()) + 4 + 30 + 12)

    def _advance(self, offset: int, length: int) -> tuple[int, int]:
        """(next offset, whole-batch bytes) of a response of ``length`` record bytes that
        starts at the batch holding ``offset`` (a fetch never crosses a segment)."""
        index = bisect.bisect_right([s[0][0] for s in self._segments], offset) - 1
        bases, starts, ends, nexts = self._segments[index]
        first = bisect.bisect_right(bases, offset) - 1
        last = bisect.bisect_right(ends, starts[first] + length) - 1
        if last < first:
            return offset, 0
        return nexts[last], ends[last] - starts[first]

    def prepare(self) -> None:
        from pytest_logbench import pagecache

        pagecache.warm(self.broker.segment_files(self.topic))

    def run(self) -> Transfer:
        assert self._sock is not None and self._drain is not None
        sock, head, offset, total, requests = self._sock, memoryview(self._head), 0, 0, 0
        started = time.perf_counter()
        while offset < self.end:
            self._frame[self._at : self._at + 8] = offset.to_bytes(8, "big")
            sock.sendall(self._frame)
            view = head
            while view:
                view = view[sock.recv_into(view) :]
            length = int.from_bytes(head[-4:], "big", signed=True)
            self._drain.discard(sock, length)
            offset, whole = self._advance(offset, length)
            total, requests = total + whole, requests + 1
        return Transfer(total, 0, 0, requests, time.perf_counter() - started)

    def close(self) -> None:
        if self._drain is not None:
            self._drain.close()
        if self._sock is not None:
            self._sock.close()
