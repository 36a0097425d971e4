"""The consumer's receive path: fetch responses read at the machine's speed, or as a client pays.

A measuring instrument must be faster than what it measures. A Python consumer that copies every
fetched byte into a fresh buffer reads ~1.6 GB/s on a machine whose broker serves 5 GB/s from the
page cache, and then sendfile's advantage over a copying broker disappears in the receiver's
noise. So the harness reads a fetch response as a stream and touches only what it must: the
response and partition headers, and the 61-byte header of each record batch (to count records
and learn the next offset). Everything else leaves the socket by one of two ``Drain``s:

- ``SpliceDrain``: ``splice(2)`` socket -> pipe -> /dev/null. The record bytes never enter user
  space; the receive costs the kernel's socket-to-pipe page moves and two syscalls per MiB.
- ``CopyDrain``: ``recv_into`` one reused buffer: what a real client pays (it must have the
  bytes to decode them), and the only way through TLS, which decrypts in user space.

``FetchStream`` also pipelines: once it has read the header of the last whole batch of a
response it knows the next offset, and sends the next fetch before draining that batch, as
librdkafka keeps a fetch outstanding while the application works through the previous one.
Counting stays exact: a batch counts when it is whole and at or after the position.
"""

from __future__ import annotations

import fcntl
import os
import socket
import ssl
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pytest_logbench.errors import KafkaError
from reference_broker.protocol import ApiKey, encode_request
from reference_broker.records import HEADER_SIZE, LOG_OVERHEAD

if TYPE_CHECKING:
    from pytest_logbench.latency import Latency

FETCH_VERSION = 11
Receive = Literal["auto", "splice", "copy"]

_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ arrived in Python 3.10 but not on every platform
PIPE_BYTES = 1 << 20
COPY_BUFFER_BYTES = 1 << 20
# A batch header as the receiver needs it: base offset, batch length, last offset delta
# (at byte 23) and record count (the last 4 bytes).
_BASE_AND_LENGTH = struct.Struct(">qi")
_LAST_OFFSET_DELTA = struct.Struct(">i")
_LAST_OFFSET_DELTA_POS = 23
_RECORD_COUNT = struct.Struct(">i")
_RECORD_COUNT_POS = HEADER_SIZE - 4
_RESPONSE_HEAD = struct.Struct(">iihi")  # correlation id, throttle, error code, session id
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
# Partition index, error code, high watermark, last stable offset, log start offset.
_PARTITION_HEAD = struct.Struct(">ihqqq")
_ABORTED_TXN_BYTES = 16
_OFFSET = struct.Struct(">q")
# A fetch offset no real request uses, found in the encoded request to learn where to patch.
_SENTINEL = 0x4C4F_4742_0000_0000


def splice_supported() -> tuple[bool, str]:
    """Whether ``os.splice`` can drain sockets here, and if not, why."""
    if not hasattr(os, "splice"):
        return False, "os.splice needs Linux and Python >= 3.10"
    try:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
    except OSError as exc:
        return False, f"cannot create a pipe: {exc}"
    os.close(read_end)
    os.close(write_end)
    return True, "splice(2) socket -> pipe -> /dev/null"


class Drain:
    """Takes ``length`` bytes off a socket and throws them away (subclasses decide how)."""

    kind = "abstract"

    def discard(self, sock: socket.socket, length: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the drain holds."""


class CopyDrain(Drain):
    """``recv_into`` one reused buffer: the bytes cross into user space, as a client's do."""

    kind = "copy"

    def __init__(self, buffer_bytes: int = COPY_BUFFER_BYTES) -> None:
        self._buffer = memoryview(bytearray(buffer_bytes))

    def discard(self, sock: socket.socket, length: int) -> None:
        buffer = self._buffer
        while length > 0:
            received = sock.recv_into(buffer[: min(length, len(buffer))])
            if received == 0:
                raise ConnectionError(f"broker closed the connection {length} bytes short")
            length -= received


class SpliceDrain(Drain):
    """``splice(2)`` socket -> pipe -> /dev/null: the bytes never enter this process.

    The socket must be in blocking mode (``FetchStream`` sets kernel timeouts instead of
    Python's, which would make the descriptor non-blocking and every splice a poll).
    """

    kind = "splice"

    def __init__(self) -> None:
        self._read_end, self._write_end = os.pipe2(os.O_CLOEXEC)
        try:
            self.pipe_bytes = fcntl.fcntl(self._write_end, _F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:  # above /proc/sys/fs/pipe-max-size for this user: keep the default
            self.pipe_bytes = 64 << 10
        self._null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)

    def discard(self, sock: socket.socket, length: int) -> None:
        fd = sock.fileno()
        while length > 0:
            moved = os.splice(fd, self._write_end, min(length, self.pipe_bytes))
            if moved == 0:
                raise ConnectionError(f"broker closed the connection {length} bytes short")
            length -= moved
            while moved > 0:
                moved -= os.splice(self._read_end, self._null, moved)

    def close(self) -> None:
        for fd in (self._read_end, self._write_end, self._null):
            os.close(fd)


def make_drain(receive: Receive, sock: socket.socket) -> Drain:
    """The drain ``receive`` asks for: ``auto`` splices where it can (plaintext on Linux)."""
    if receive not in ("auto", "splice", "copy"):
        raise ValueError(f"receive must be 'auto', 'splice' or 'copy', got {receive!r}")
    tls = isinstance(sock, ssl.SSLSocket)
    if receive == "splice" and tls:
        raise ValueError(
            "receive='splice' is impossible over TLS: the client must decrypt "
            "in user space (use receive='copy' or 'auto')"
        )
    if receive == "copy" or tls:
        return CopyDrain()
    supported, reason = splice_supported()
    if not supported:
        if receive == "splice":
            raise RuntimeError(f"receive='splice' unavailable: {reason}")
        return CopyDrain()
    return SpliceDrain()


@dataclass
class PartitionProgress:
    """One partition a stream reads: where it is, where it stops, and what it counted."""

    partition: int
    position: int
    end: int | None
    bytes: int = 0
    records: int = 0
    batches: int = 0

    @property
    def done(self) -> bool:
        return self.end is not None and self.position >= self.end


class FetchStream:
    """Fetches partitions of one topic over a connection, reading responses as a stream.

    ``sock`` is a connected socket (plain or TLS); the stream sends prebuilt Fetch v11
    requests whose offsets it patches in place, so a fetch allocates nothing.
    """

    def __init__(
        self,
        sock: socket.socket,
        drain: Drain,
        topic: str,
        partitions: Sequence[int],
        *,
        client_id: str = "logbench",
        max_bytes: int = 8 << 20,
        max_wait_ms: int = 100,
        pipeline: bool = True,
    ) -> None:
        self.sock, self.drain, self.topic = sock, drain, topic
        self.pipeline = pipeline and len(partitions) == 1
        self._frame, self._offset_at = fetch_frame(
            topic, partitions, client_id, max_bytes, max_wait_ms
        )
        self._header = bytearray(HEADER_SIZE)
        self._scratch = bytearray(4096)
        self._correlation = 0
        self._sent_ns = 0
        self.requests = 0

    def read(self, progress: Sequence[PartitionProgress], latency: Latency | None = None) -> None:
        """Fetch until every partition reached its end (an end of None is taken from the
        high watermark of the first response); ``latency`` gets each response's latency, from
        its request's send to its last byte."""
        in_flight = False
        try:
            while not all(p.done for p in progress):
                if not in_flight:
                    self._send(progress)
                sent = self._sent_ns  # a pipelined send while reading replaces it
                in_flight = self._read_response(progress)
                if latency is not None:
                    latency.record_since(sent)
        except BlockingIOError as exc:  # SO_RCVTIMEO / SO_SNDTIMEO expired
            raise TimeoutError(f"Fetch {self.topic}: the broker stopped answering") from exc

    def _send(self, progress: Sequence[PartitionProgress]) -> None:
        frame = self._frame
        for at, part in zip(self._offset_at, progress, strict=True):
            _OFFSET.pack_into(frame, at, part.position)
        self._correlation = (self._correlation + 1) & 0x7FFFFFFF
        _INT32.pack_into(frame, 8, self._correlation)
        self._sent_ns = time.monotonic_ns()
        self.sock.sendall(frame)
        self.requests += 1

    def _read_response(self, progress: Sequence[PartitionProgress]) -> bool:
        """Read one response; True when it already sent the next request (pipelining)."""
        (size,) = _INT32.unpack(self._recv(4))
        correlation, _, error, _ = _RESPONSE_HEAD.unpack(self._recv(_RESPONSE_HEAD.size))
        if correlation != self._correlation:
            raise ConnectionError(
                f"response correlation id {correlation}, expected {self._correlation}"
            )
        if error:
            raise KafkaError(error, f"Fetch {self.topic}")
        remaining = size - _RESPONSE_HEAD.size - 4
        by_partition = {p.partition: p for p in progress}
        sent_next = False
        for _ in range(self._int32()):
            name_length = _INT16.unpack(self._recv(2))[0]
            self._skip(name_length)
            partitions = self._int32()
            remaining -= 2 + name_length + 4
            for _ in range(partitions):
                index, code, high_watermark, _, _ = _PARTITION_HEAD.unpack(
                    self._recv(_PARTITION_HEAD.size)
                )
                aborted = self._int32()
                self._skip(max(0, aborted) * _ABORTED_TXN_BYTES)
                self._recv(4)  # preferred read replica
                length = self._int32()
                remaining -= _PARTITION_HEAD.size + 12 + max(0, aborted) * _ABORTED_TXN_BYTES
                part = by_partition[index]
                if code:
                    raise KafkaError(code, f"Fetch {self.topic}-{index} at {part.position}")
                if part.end is None:
                    part.end = high_watermark
                if length > 0:
                    sent_next |= self._read_records(part, length, progress)
                    remaining -= length
        if remaining != 0:
            raise ConnectionError(f"fetch response framing is off by {remaining} bytes")
        return sent_next

    def _read_records(
        self, part: PartitionProgress, length: int, progress: Sequence[PartitionProgress]
    ) -> bool:
        """Walk the batches of one partition's records; count the whole ones at or after the
        position; drain the rest. A trailing partial batch (a fetch may cut the last one) is
        drained uncounted, and so are batches past the end. True when the next fetch was sent
        while draining."""
        header, at, sent_next = self._header, 0, False
        while length - at >= HEADER_SIZE:
            self._recv_into(memoryview(header))
            base, batch_length = _BASE_AND_LENGTH.unpack_from(header)
            size = batch_length + LOG_OVERHEAD
            if size < HEADER_SIZE:
                raise ConnectionError(f"batch at offset {base} claims {size} bytes")
            whole = at + size <= length
            if whole:
                last = base + _LAST_OFFSET_DELTA.unpack_from(header, _LAST_OFFSET_DELTA_POS)[0]
                if last >= part.position and not part.done:
                    part.bytes += size
                    part.records += _RECORD_COUNT.unpack_from(header, _RECORD_COUNT_POS)[0]
                    part.batches += 1
                    part.position = last + 1
            body = (size if whole else length - at) - HEADER_SIZE
            if self.pipeline and at + size + HEADER_SIZE > length and not part.done:
                self._send(progress)  # the next offset is known: overlap it with the drain
                sent_next = True
            self.drain.discard(self.sock, body)
            at += HEADER_SIZE + body
        if at < length:
            self.drain.discard(self.sock, length - at)
        return sent_next

    def _int32(self) -> int:
        return _INT32.unpack(self._recv(4))[0]

    def _recv(self, length: int) -> memoryview:
        view = memoryview(self._scratch)[:length]
        self._recv_into(view)
        return view

    def _skip(self, length: int) -> None:
        while length > 0:
            step = min(length, len(self._scratch))
            self._recv(step)
            length -= step

    def _recv_into(self, view: memoryview) -> None:
        while view:
            received = self.sock.recv_into(view)
            if received == 0:
                raise ConnectionError("broker closed the connection")
            view = view[received:]


def fetch_body(
    topic: str,
    offsets: Sequence[tuple[int, int]],
    *,
    max_bytes: int,
    max_wait_ms: int,
    min_bytes: int = 1,
) -> dict[str, Any]:
    """A Fetch v11 request body for ``(partition, offset)`` pairs of one topic, as a consumer
    outside any group sends it (no session, no leader epoch)."""
    return {
        "replica_id": -1,
        "max_wait_ms": max_wait_ms,
        "min_bytes": min_bytes,
        "max_bytes": max_bytes,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {
                        "partition": partition,
                        "fetch_offset": offset,
                        "log_start_offset": -1,
                        "partition_max_bytes": max_bytes,
                        "current_leader_epoch": -1,
                    }
                    for partition, offset in offsets
                ],
            }
        ],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def fetch_frame(
    topic: str, partitions: Sequence[int], client_id: str, max_bytes: int, max_wait_ms: int
) -> tuple[bytearray, list[int]]:
    """A Fetch v11 request frame for ``partitions`` and where each one's fetch offset sits."""
    sentinels = [(p, _SENTINEL + i) for i, p in enumerate(partitions)]
    body = fetch_body(topic, sentinels, max_bytes=max_bytes, max_wait_ms=max_wait_ms)
    frame = bytearray(encode_request(ApiKey.FETCH, FETCH_VERSION, 0, client_id, body))
    offsets = [frame.find(_OFFSET.pack(_SENTINEL + i)) for i in range(len(partitions))]
    if -1 in offsets:
        raise AssertionError("fetch offset not found in the encoded request")
    return frame, offsets


def use_kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking with ``SO_RCVTIMEO``/``SO_SNDTIMEO``: Python's own timeouts put
    the descriptor in non-blocking mode, which splice(2) cannot wait on."""
    sock.settimeout(None)
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
