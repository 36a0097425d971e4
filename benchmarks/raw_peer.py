"""The machine's own ceilings: the broker's data paths with everything but the syscalls removed.

``python benchmarks/raw_peer.py serve FILE`` runs a peer that speaks a two-message protocol on
127.0.0.1 and prints its port:

- ``F`` + offset + length (fetch): the peer ``os.sendfile``s that slice of FILE to the socket —
  the zero-copy fetch path without Kafka framing, indexes or Python request handling.
- ``P`` + length + bytes (produce): the peer receives the bytes into one reused buffer, appends
  them to FILE with ``os.write`` (O_APPEND) and answers one byte — the produce path without
  CRC checks, offsets or protocol decoding.

The workloads below drive it exactly as the harness client drives the broker (8 MiB fetches,
256 KiB produce requests with 5 in flight), so a broker/raw ratio says what the broker adds.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from pytest_logbench.brokers import die_with_parent
from pytest_logbench.client import Transfer

_REQUEST = struct.Struct(">cqq")
FETCH_BYTES = 8 << 20
PRODUCE_BYTES = 256 << 10
IN_FLIGHT = 5


def serve(path: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    sock, _ = listener.accept()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    buffer = memoryview(bytearray(PRODUCE_BYTES))
    header = bytearray(_REQUEST.size)
    while _recv_exactly(sock, memoryview(header)):
        kind, first, second = _REQUEST.unpack(header)
        if kind == b"F":
            _send_slice(sock, fd, first, second)
        else:
            view = buffer[:first]
            _recv_exactly(sock, view)
            os.write(fd, view)
            sock.sendall(b"k")


def _send_slice(sock: socket.socket, fd: int, offset: int, remaining: int) -> None:
    """sendfile on a non-blocking socket, waiting for writability between partial sends: the
    same loop asyncio runs for the broker (a blocking sendfile measured slower here)."""
    sock.setblocking(False)
    try:
        while remaining:
            try:
                sent = os.sendfile(sock.fileno(), fd, offset, remaining)
            except BlockingIOError:
                select.select([], [sock], [])
                continue
            offset, remaining = offset + sent, remaining - sent
    finally:
        sock.setblocking(True)


def _recv_exactly(sock: socket.socket, view: memoryview) -> bool:
    while view:
        received = sock.recv_into(view)
        if not received:
            return False
        view = view[received:]
    return True


class RawPeer:
    """The peer process: ``pid`` lets the meter charge its CPU the way it charges a broker's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.process = subprocess.Popen([sys.executable, __file__, "serve", str(path)],
                                        stdout=subprocess.PIPE, preexec_fn=die_with_parent)
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline())
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pid = self.process.pid

    def close(self) -> None:
        self.sock.close()
        self.process.wait(timeout=10)


class RawFetchWorkload:
    """Read ``size`` bytes of a file through the raw peer's sendfile, in 8 MiB requests."""

    name = "raw-sendfile"

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self.broker: Any = None

    def describe(self) -> dict[str, Any]:
        return {"kind": "raw-sendfile", "bytes": self.size}

    def setup(self) -> None:
        self.broker = RawPeer(self.path)

    def prepare(self) -> None:
        """Nothing: the caller warms the file once; fetching keeps it warm."""

    def run(self) -> Transfer:
        sock, moved, requests = self.broker.sock, 0, 0
        started = time.perf_counter()
        while moved < self.size:
            length = min(FETCH_BYTES, self.size - moved)
            sock.sendall(_REQUEST.pack(b"F", moved, length))
            _recv_exactly(sock, memoryview(bytearray(length)))  # a fresh buffer, as the consumer
            moved, requests = moved + length, requests + 1
        return Transfer(moved, 0, 0, requests, time.perf_counter() - started)

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()


class RawAppendWorkload:
    """Append ``size`` bytes to a file through the raw peer, 256 KiB per request, 5 in flight."""

    name = "raw-append"

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self.broker: Any = None
        self._payload = os.urandom(PRODUCE_BYTES)

    def describe(self) -> dict[str, Any]:
        return {"kind": "raw-append", "bytes": self.size}

    def setup(self) -> None:
        self.broker = RawPeer(self.path)

    def prepare(self) -> None:
        """Nothing: appends go to the page cache whatever its state."""

    def run(self) -> Transfer:
        sock, pending, ack = self.broker.sock, deque[int](), bytearray(1)
        frame = _REQUEST.pack(b"P", len(self._payload), 0) + self._payload
        requests = -(-self.size // len(self._payload))
        started = time.perf_counter()
        for index in range(requests):
            sock.sendall(frame)
            pending.append(index)
            if len(pending) >= IN_FLIGHT:
                _recv_exactly(sock, memoryview(ack))
                pending.popleft()
        for _ in pending:
            _recv_exactly(sock, memoryview(ack))
        return Transfer(requests * len(self._payload), 0, 0, requests,
                        time.perf_counter() - started)

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"] or len(sys.argv) != 3:
        raise SystemExit("usage: raw_peer.py serve FILE")
    serve(sys.argv[2])
