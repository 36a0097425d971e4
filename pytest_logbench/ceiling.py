"""The machine's own ceilings: a broker's data paths with everything but the syscalls removed.

A figure means little until it is set against what the machine can do at that moment. The raw
peer here is that reference: a process that serves a file with bare ``os.sendfile`` (or
``preadv`` + ``sendall``) and appends received bytes to a file with ``os.write``, with no Kafka
framing, index, CRC or Python request handling. Its workloads drive it the way the harness
drives a broker (8 MiB fetches read by the same receiver, 256 KiB appends with 5 in flight).

Measured in the same round as a broker workload, the raw peer is also a *control*: a machine
that is slower because it is busy slows the control as well; a broker that regressed does not.
The gate then judges the broker's throughput as a fraction of the control's.

``python -m pytest_logbench.ceiling serve FILE`` runs the peer and prints its port.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

from pytest_logbench.client import Transfer
from pytest_logbench.receive import Drain, make_drain, use_kernel_timeouts

_REQUEST = struct.Struct(">cqq")  # kind, offset or length, length
FETCH_BYTES = 8 << 20
PRODUCE_BYTES = 256 << 10
IN_FLIGHT = 5
COPY_CHUNK = 1 << 20
SENDFILE_CHUNK = 1 << 20
FetchMode = Literal["sendfile", "copy"]


def serve(path: str) -> None:
    """The peer: ``F``/``C`` + offset + length sends that slice of FILE by sendfile / by
    pread + send (1 MiB at a time); ``P`` + length + bytes appends the bytes and answers one
    byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    sock, _ = listener.accept()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    buffer = memoryview(bytearray(max(PRODUCE_BYTES, COPY_CHUNK)))
    header = bytearray(_REQUEST.size)
    while _recv_exactly(sock, memoryview(header)):
        kind, first, second = _REQUEST.unpack(header)
        if kind == b"F":
            _send_file(sock, fd, first, second)
        elif kind == b"C":
            while second:
                read = os.preadv(fd, [buffer[: min(second, COPY_CHUNK)]], first)
                sock.sendall(buffer[:read])
                first, second = first + read, second - read
        else:
            view = buffer[:first]
            _recv_exactly(sock, view)
            os.write(fd, view)
            sock.sendall(b"k")


def _send_file(sock: socket.socket, fd: int, offset: int, remaining: int) -> None:
    """``os.sendfile`` in 1 MiB calls on a non-blocking socket, polling when it is full: the
    fastest loop measured on this project's machine (blocking calls, or 8 MiB ones, moved
    0.5-0.6x as much; see docs/performance.md)."""
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    try:
        while remaining:
            try:
                sent = os.sendfile(sock.fileno(), fd, offset, min(remaining, SENDFILE_CHUNK))
            except BlockingIOError:
                poller.poll()
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
    """The peer process serving ``path``; ``pid`` lets a meter charge its CPU as a broker's."""

    def __init__(self, path: Path) -> None:
        from pytest_logbench.brokers import die_with_parent

        self.path = path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest_logbench.ceiling", "serve", str(path)],
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        assert self.process.stdout is not None
        try:
            port = int(self.process.stdout.readline())
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        except BaseException:
            self.process.kill()
            self.process.wait()
            raise
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pid = self.process.pid
        self.log_dir = path.parent

    def segment_files(self, *_: Any) -> list[Path]:
        """The one file it serves (so page-cache helpers treat it like a broker's log)."""
        return [self.path]

    def close(self) -> None:
        self.sock.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _scratch_file(near: Path, size: int) -> Path:
    """A file of ``size`` random-looking bytes in a new directory beside ``near`` (the same
    filesystem as the broker's log, so cold reads come from the same device)."""
    directory = Path(tempfile.mkdtemp(prefix="logbench-ceiling-", dir=near))
    path = directory / "ceiling.bin"
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
        out.write(block[: size % len(block)])
    return path


class RawFetchWorkload:
    """Read ``size`` bytes of a file from the raw peer in 8 MiB requests, one request ahead,
    with the harness consumer's receive path (splice by default): the machine's fetch ceiling.

    ``path`` is an existing file, or None to create one of ``size`` bytes under ``near``.
    ``cache`` warms or evicts the file before each round, as ``FetchWorkload`` does.
    """

    def __init__(
        self,
        path: Path | None,
        size: int,
        *,
        near: Path | None = None,
        mode: FetchMode = "sendfile",
        cache: str = "warm",
        receive: str = "auto",
    ) -> None:
        if mode not in ("sendfile", "copy"):
            raise ValueError(f"mode must be 'sendfile' or 'copy', got {mode!r}")
        self.path, self.size, self.near, self.mode = path, size, near, mode
        self.cache, self.receive = cache, receive
        self.name = f"raw-{mode}"
        self.broker: Any = None
        self._drain: Drain | None = None
        self._owned: Path | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "bytes": self.size, "cache": self.cache}

    def setup(self) -> None:
        if self.path is None:
            self.path = _scratch_file(self.near or Path(tempfile.gettempdir()), self.size)
            self._owned = self.path.parent
        self.broker = RawPeer(self.path)
        self._drain = make_drain(self.receive, self.broker.sock)  # type: ignore[arg-type]
        use_kernel_timeouts(self.broker.sock, 30.0)

    def prepare(self) -> None:
        from pytest_logbench import pagecache

        if self.cache == "warm":
            pagecache.warm([self.path])
        elif self.cache == "cold":
            pagecache.evict([self.path])

    def run(self) -> Transfer:
        return self.run_part(0, 1)

    def run_part(self, part: int, parts: int) -> Transfer:
        """Bytes ``[size * part / parts, size * (part + 1) / parts)`` of the file."""
        assert self._drain is not None, "setup() not called"
        sock, kind = self.broker.sock, b"F" if self.mode == "sendfile" else b"C"
        first, last = self.size * part // parts, self.size * (part + 1) // parts
        pieces = [(at, min(FETCH_BYTES, last - at)) for at in range(first, last, FETCH_BYTES)]
        started = time.perf_counter()
        for index, (at, length) in enumerate(pieces):
            if index == 0:
                sock.sendall(_REQUEST.pack(kind, at, length))
            if index + 1 < len(pieces):  # one request ahead, as the consumer pipelines
                sock.sendall(_REQUEST.pack(kind, *pieces[index + 1]))
            self._drain.discard(sock, length)
        return Transfer(last - first, 0, 0, len(pieces), time.perf_counter() - started)

    def close(self) -> None:
        if self._drain is not None:
            self._drain.close()
        if self.broker is not None:
            self.broker.close()
        if self._owned is not None:
            shutil.rmtree(self._owned, ignore_errors=True)


class RawAppendWorkload:
    """Append ``size`` bytes through the raw peer, 256 KiB per request, 5 in flight: the
    machine's produce ceiling (receive into a buffer, ``write`` to an O_APPEND file)."""

    name = "raw-append"

    def __init__(self, path: Path | None, size: int, *, near: Path | None = None) -> None:
        self.path, self.size, self.near = path, size, near
        self.broker: Any = None
        self._payload = os.urandom(PRODUCE_BYTES)
        self._owned: Path | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "bytes": self.size}

    def setup(self) -> None:
        if self.path is None:
            self._owned = Path(
                tempfile.mkdtemp(prefix="logbench-ceiling-", dir=self.near or tempfile.gettempdir())
            )
            self.path = self._owned / "appended.bin"
        self.broker = RawPeer(self.path)

    def prepare(self) -> None:
        """Nothing: appends go to the page cache whatever its state."""

    def run(self) -> Transfer:
        return self.run_part(0, 1)

    def run_part(self, part: int, parts: int) -> Transfer:
        """Append ``size / parts`` bytes."""
        sock, pending, ack = self.broker.sock, deque[int](), bytearray(1)
        frame = _REQUEST.pack(b"P", len(self._payload), 0) + self._payload
        requests = -(-(self.size // parts) // len(self._payload))
        started = time.perf_counter()
        for index in range(requests):
            sock.sendall(frame)
            pending.append(index)
            if len(pending) >= IN_FLIGHT:
                _recv_exactly(sock, memoryview(ack))
                pending.popleft()
        for _ in pending:
            _recv_exactly(sock, memoryview(ack))
        return Transfer(
            requests * len(self._payload), 0, 0, requests, time.perf_counter() - started
        )

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()
        if self._owned is not None:
            shutil.rmtree(self._owned, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"] or len(sys.argv) != 3:
        raise SystemExit("usage: python -m pytest_logbench.ceiling serve FILE")
    serve(sys.argv[2])
