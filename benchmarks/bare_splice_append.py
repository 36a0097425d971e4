"""The other socket-to-file ceiling: ``splice`` socket -> pipe -> file, no byte in user space.

``RawAppendWorkload`` (``pytest_logbench.ceiling``) receives each 256 KiB request into a buffer
and ``write``s it: what any broker that looks at the bytes must at least pay. A receiver that
never looks at them can splice them from the socket into the file through a pipe instead. The
broker cannot (it validates every record), but the issue asks for the faster of the two as the
ceiling, so this peer speaks the raw peer's protocol (``P`` + length, the bytes, a one-byte
ack) and moves the bytes with ``os.splice``.

``python benchmarks/bare_splice_append.py FILE`` runs the peer and prints its port.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

from pytest_logbench.ceiling import _REQUEST, RawAppendWorkload, _recv_exactly

_F_SETPIPE_SZ = 1031
PIPE_BYTES = 1 << 20


def serve(path: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    sock, _ = listener.accept()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # splice refuses O_APPEND
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_BYTES)
    header, position = bytearray(_REQUEST.size), 0
    while _recv_exactly(sock, memoryview(header)):
        _, remaining, _ = _REQUEST.unpack(header)
        while remaining:
            piped = os.splice(sock.fileno(), write_end, min(remaining, PIPE_BYTES))
            if not piped:
                return
            remaining -= piped
            while piped:
                written = os.splice(read_end, fd, piped, offset_dst=position)
                position, piped = position + written, piped - written
        sock.sendall(b"k")


class _SplicePeer:
    """The peer process; ``pid`` lets the meter charge its CPU."""

    def __init__(self, path: Path) -> None:
        from pytest_logbench.brokers import die_with_parent

        self.process = subprocess.Popen(
            [sys.executable, __file__, str(path)],
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline())
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pid = self.process.pid
        self.log_dir = path.parent

    def close(self) -> None:
        self.sock.close()
        self.process.wait(timeout=10)


class SpliceAppendWorkload(RawAppendWorkload):
    """``RawAppendWorkload``'s requests, received by the splice peer."""

    name = "raw-splice-append"

    def setup(self) -> None:
        super().setup()  # the scratch directory, and a recv_into peer we swap for ours
        self.broker.close()
        self.broker = _SplicePeer(self.path)


if __name__ == "__main__":
    serve(sys.argv[1])
