"""One blocking connection to a broker: whole request frames out, whole response frames in.

The harness client (``client.py``) and the tests that speak the wire directly share it; it
uses the broker's own sans-IO codec for the frames, so there is one codec with two users.
"""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

from reference_broker.protocol import decode_response, encode_request, read_frame_size

_CORRELATION = struct.Struct(">i")
_CORRELATION_POS = 8  # size prefix (4), api key (2), api version (2)


class Connection:
    """One blocking connection to a broker, one request in flight at a time."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "logbench",
        ssl_context: ssl.SSLContext | None = None,
        cafile: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        host, port = bootstrap.rsplit(":", 1)
        if cafile is not None and ssl_context is None:
            # A file name, unlike a context, pickles: members in other processes get this.
            ssl_context = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection((host, int(port)), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context else raw
        self.client_id = client_id
        self.timeout = timeout
        self._correlation = 0
        self._prefix = bytearray(4)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_correlation_id(self) -> int:
        self._correlation = (self._correlation + 1) & 0x7FFFFFFF
        return self._correlation

    def request(self, api_key: int, version: int, body: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return the decoded response body."""
        correlation = self.next_correlation_id()
        self.sock.sendall(encode_request(api_key, version, correlation, self.client_id, body))
        return self.read_response(api_key, version, correlation)

    def send_frame(self, frame: bytearray, correlation: int) -> None:
        """Send a prebuilt request frame after stamping ``correlation`` into it."""
        _CORRELATION.pack_into(frame, _CORRELATION_POS, correlation)
        self.sock.sendall(frame)

    def read_response(self, api_key: int, version: int, correlation: int) -> dict[str, Any]:
        frame = self.read_frame()
        got, body = decode_response(api_key, version, frame)
        if got != correlation:
            raise ConnectionError(f"response correlation id {got}, expected {correlation}")
        return body

    def read_frame(self) -> memoryview:
        """One response frame (without its size prefix), received into a fresh buffer."""
        self._recv_exactly(memoryview(self._prefix))
        frame = bytearray(read_frame_size(bytes(self._prefix)))
        view = memoryview(frame)
        self._recv_exactly(view)
        return view

    def _recv_exactly(self, view: memoryview) -> None:
        while view:
            received = self.sock.recv_into(view)
            if received == 0:
                raise ConnectionError("broker closed the connection")
            view = view[received:]
