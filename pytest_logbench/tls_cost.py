"""The TLS zero-copy tax on this machine: the same warm bytes sent by sendfile and through TLS.

Why: the seed says enabling TLS disables zero-copy, "a real, measurable cost of encryption". A
broker that serves TLS must read each slice into user space, encrypt it and write it (Kafka's
SslTransportLayer; the reference broker's TlsTransmitter), where a plaintext broker hands the
page cache to the socket with sendfile. ``measure_tls_cost`` times both paths for a warm file
over loopback, in alternating rounds, with a receiver thread that drains (and, for TLS,
decrypts) every byte, and reports the sender's CPU per GB, which is what a broker pays per
consumer. Python's ssl has no kernel-TLS option before 3.12, so this is user-space TLS.
"""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

CHUNK = 1 << 20
Contexts = tuple[ssl.SSLContext, ssl.SSLContext]  # (server, client)


def _contexts() -> Contexts:
    import trustme  # a throwaway CA and certificate for 127.0.0.1

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def _drain(sock: socket.socket, total: int) -> None:
    buf = bytearray(CHUNK)
    got = 0
    while got < total:
        n = sock.recv_into(buf)
        if not n:
            raise ConnectionError(f"sender closed after {got} of {total} bytes")
        got += n


def _one_round(
    size: int, send: Callable[[socket.socket], None], tls: Contexts | None
) -> tuple[float, float]:
    """(seconds, sender CPU seconds) to move ``size`` bytes from ``fd`` to a receiver."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        errors: list[BaseException] = []

        def receive() -> None:
            try:
                with socket.create_connection(("127.0.0.1", port)) as raw:
                    sock = raw
                    if tls is not None:
                        sock = tls[1].wrap_socket(raw, server_hostname="127.0.0.1")
                    _drain(sock, size)
            except BaseException as exc:  # reported by the sender's thread
                errors.append(exc)

        receiver = threading.Thread(target=receive)
        receiver.start()
        raw, _ = listener.accept()
        with raw:
            sock = raw if tls is None else tls[0].wrap_socket(raw, server_side=True)
            started, cpu = time.perf_counter(), time.thread_time()
            send(sock)
            cpu = time.thread_time() - cpu
            receiver.join()
            seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return seconds, cpu


def measure_tls_cost(size: int = 64 << 20, rounds: int = 3) -> dict[str, float]:
    """Median MB/s and sender CPU s/GB of sendfile and TLS for ``size`` warm bytes."""
    contexts = _contexts()
    with tempfile.TemporaryFile() as f:
        f.write(os.urandom(CHUNK) * (size // CHUNK))
        f.flush()
        fd = f.fileno()
        os.pread(fd, size, 0)  # warm: both paths read from the page cache

        def by_sendfile(sock: socket.socket) -> None:
            offset = 0
            while offset < size:
                offset += os.sendfile(sock.fileno(), fd, offset, size - offset)

        def by_tls(sock: socket.socket) -> None:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            for offset in range(0, size, CHUNK):
                n = os.preadv(fd, [buf], offset)
                sock.sendall(view[:n])

        figures: dict[str, list[tuple[float, float]]] = {"sendfile": [], "tls": []}
        for _ in range(rounds):
            figures["sendfile"].append(_one_round(size, by_sendfile, None))
            figures["tls"].append(_one_round(size, by_tls, contexts))
    result = {}
    for path, samples in figures.items():
        result[f"{path}_mb_s"] = statistics.median(size / s / 1e6 for s, _ in samples)
        result[f"{path}_cpu_s_per_gb"] = statistics.median(c / (size / 1e9) for _, c in samples)
    return result
