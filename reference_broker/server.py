"""The broker process: connections, framing, dispatch, long polling, background duties.

One asyncio event loop plays the part of Kafka's network and request threads. A connection's
requests are handled one at a time, in order (Kafka mutes a connection while its request is
processed), which keeps responses in request order without any bookkeeping.

A cold ``sendfile`` blocks this loop while the kernel reads from disk — exactly the effect
KAFKA-7504 describes for lagging consumers on Kafka's network threads. It is kept on purpose:
the lagging-consumer experiments measure it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from reference_broker.admission import ConnectionQuotas, RequestMemory, default_max_connections
from reference_broker.config import BrokerConfig
from reference_broker.connection import Connection, Idle
from reference_broker.errors import ErrorCode
from reference_broker.groups import consumer_lag, open_offset_store
from reference_broker.handlers import (
    ADVERTISED,
    HANDLERS,
    CloseConnection,
    Request,
    api_versions_body,
)
from reference_broker.log import LogStore
from reference_broker.metrics import Labels, Metrics
from reference_broker.protocol import (
    ApiKey,
    ProtocolError,
    RequestHeader,
    UnsupportedVersion,
    decode_request,
    encode_response,
    read_frame_size,
)
from reference_broker.transmit import make_transmitter
from reference_broker.warm import FetchWarmer

if TYPE_CHECKING:
    from reference_broker.groups import GroupCoordinator

log = logging.getLogger("reference_broker")

FRAME_PIECE_BYTES = 1 << 20
"""A frame's buffer is made this large at once (or the frame's size, if smaller)."""


class AppendNotifier:
    """Wakes long-polling fetches when a partition they wait on gets new records."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, int], set[asyncio.Future[None]]] = defaultdict(set)

    def notify(self, topic: str, partition: int) -> None:
        for waiter in self._waiters.pop((topic, partition), ()):
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, partitions: Iterable[tuple[str, int]], timeout: float) -> None:
        """Return when any of ``partitions`` was appended to, or after ``timeout`` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        keys = list(partitions)
        for key in keys:
            self._waiters[key].add(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            pass
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[key]


class Broker:
    """A running reference broker: the log store, the group coordinator and the listeners."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store = LogStore(config.log_dir, config.log)
        self.offsets = open_offset_store(self.store, config.offsets_topic_num_partitions)
        self.appends = AppendNotifier()
        self.transmitter = make_transmitter(
            config.transmit_mode, self.metrics, config.fetch_slowdown
        )
        self.warmer = FetchWarmer() if config.warm_history_fetches else None
        # Never repeated, across restarts too: each partition's duplicate detection keys on them.
        self.producer_ids = self.store.producer_ids
        self.host, self.port = config.host, config.port
        self.metrics_port: int | None = None
        self._servers: list[asyncio.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self.quotas = ConnectionQuotas(
            config.max_connections or default_max_connections(), config.max_connections_per_ip
        )
        self.request_memory = RequestMemory(config.queued_max_request_bytes)
        self.metrics.gauge_source(self._log_gauges)
        self.metrics.gauge_source(self._broker_gauges)

    @functools.cached_property
    def coordinator(self) -> GroupCoordinator:
        """The group coordinator, made at the first group request: its modules cost about
        7 ms of every start that serves no group."""
        from reference_broker.groups import GroupCoordinator

        coordinator = GroupCoordinator(
            self.offsets,
            min_session_timeout_ms=self.config.group_min_session_timeout_ms,
            max_session_timeout_ms=self.config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms=self.config.group_initial_rebalance_delay_ms,
        )
        self._tasks.append(asyncio.create_task(coordinator.run(), name="group-coordinator"))
        return coordinator

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listeners and start the background duties."""
        server = await asyncio.get_running_loop().create_server(
            lambda: Connection(self._serve_connection, self.config.connections_max_idle_ms / 1000),
            self.config.host,
            self.config.port,
            ssl=self._tls_context(),
        )
        self._servers.append(server)
        self.host, self.port = server.sockets[0].getsockname()[:2]
        if self.config.metrics_port is not None:
            metrics_server = await asyncio.start_server(
                self._serve_metrics, self.config.metrics_host, self.config.metrics_port
            )
            self._servers.append(metrics_server)
            self.metrics_port = metrics_server.sockets[0].getsockname()[1]
        self._tasks += [
            asyncio.create_task(self._periodic_duties(), name="log-duties"),
        ]

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    async def stop(self) -> None:
        """Stop serving, release waiting clients, and close the log cleanly."""
        for server in self._servers:
            server.close()
        if "coordinator" in self.__dict__:  # made at the first group request
            self.coordinator.close()
        for task in [*self._tasks, *self._connections]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self.store.close()
        if self.warmer is not None:
            self.warmer.close()

    async def _periodic_duties(self) -> None:
        """Retention and, for ``fsync=interval``, the periodic flush."""
        config = self.config
        interval_ms = config.retention_check_interval_ms
        if config.log.fsync == "interval":
            interval_ms = min(interval_ms, config.log.fsync_interval_ms)
        last_retention = time.monotonic()
        while True:
            await asyncio.sleep(interval_ms / 1000)
            if config.log.fsync == "interval":
                self.store.flush()
            if time.monotonic() - last_retention >= config.retention_check_interval_ms / 1000:
                self.store.enforce_retention()
                last_retention = time.monotonic()

    # --- the Kafka listener --------------------------------------------------------------

    async def _serve_connection(self, connection: Connection) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = connection.peer()
        client = f"{peer[0]}:{peer[1]}"
        refused_by = self.quotas.admit(peer[0])
        if refused_by is not None:
            log.warning("refusing connection from %s: %s reached", client, refused_by)
            self.metrics.add("logbench_connections_refused_total", limit=refused_by)
            connection.transport.abort()
            return
        self._connections.add(task)
        self.metrics.add("logbench_connections", 1)
        try:
            while await self._serve_one(connection, peer[0], client):
                pass
        except asyncio.CancelledError:
            pass
        except Idle:
            log.info(
                "closing connection from %s: idle for connections.max.idle.ms=%d",
                client,
                self.config.connections_max_idle_ms,
            )
            self.metrics.add("logbench_idle_connections_closed_total")
        except (ConnectionError, ssl.SSLError, TimeoutError) as exc:
            log.info("connection from %s ended: %s", client, exc)
        finally:
            self.quotas.release(peer[0])
            self.metrics.add("logbench_connections", -1)
            self._connections.discard(task)
            with contextlib.suppress(Exception):
                await connection.close()

    async def _serve_one(self, connection: Connection, host: str, client: str) -> bool:
        """Read, handle and answer one request; False when the connection must close."""
        prefix = bytearray(4)
        received = await connection.receive_into(memoryview(prefix))
        if received < len(prefix):
            if received:
                self._refuse(client, "truncated", "connection ended inside a frame size")
            return False
        try:
            size = read_frame_size(prefix)
        except ProtocolError as exc:
            return self._refuse(client, "bad_frame", str(exc))
        if size > self.config.max_request_bytes:
            return self._refuse(
                client,
                "too_large",
                f"frame of {size} bytes exceeds max_request_bytes={self.config.max_request_bytes}",
            )
        # The frame's memory is reserved before its body is read: while it does not fit, this
        # connection's socket is not read (the connection reads only when asked).
        async with self.request_memory.reserve(size):
            frame = await self._read_body(connection, size)
            if frame is None:
                return self._refuse(
                    client, "truncated", f"connection ended inside a {size}-byte frame"
                )
            return await self._handle(frame, connection.writer, host, client)

    async def _read_body(self, connection: Connection, size: int) -> bytearray | None:
        """The frame's ``size`` bytes (None if the client left first), received straight into
        the frame's buffer. The buffer grows with the bytes that arrive, not with the size
        claimed: past its first ``FRAME_PIECE_BYTES`` it doubles as the bytes come, so a client
        that claims 100 MB and sends 10 bytes holds request memory budget, not memory."""
        frame = bytearray(min(size, FRAME_PIECE_BYTES))
        filled = 0
        while True:
            with memoryview(frame) as view:
                wanted = len(frame) - filled
                got = await connection.receive_into(view[filled:])
            filled += got
            if got < wanted:
                return None
            if filled == size:
                return frame
            frame += bytes(min(size - filled, filled))

    async def _handle(
        self, frame: bytearray, writer: asyncio.StreamWriter, host: str, client: str
    ) -> bool:
        started = time.perf_counter()
        try:
            header, body = decode_request(frame)
        except UnsupportedVersion as exc:
            return await self._unsupported(writer, exc.header, client)
        except ProtocolError as exc:
            return self._refuse(client, "malformed", str(exc))
        api = ApiKey(header.api_key)
        lo, hi = ADVERTISED[api]
        if not lo <= header.api_version <= hi:
            return await self._unsupported(writer, header, client)
        name = api.name
        try:
            response = await HANDLERS[api](self, Request(header, body, host))
            chunks = (
                None
                if response is None
                else encode_response(
                    header.api_key, header.api_version, header.correlation_id, response
                )
            )
        except CloseConnection as exc:
            return self._refuse(client, "closed_by_handler", str(exc))
        except Exception:
            log.exception("handler for %s v%d failed; closing %s", name, header.api_version, client)
            self.metrics.add("logbench_request_errors_total", cause="handler_error")
            return False
        if chunks is not None:
            await self.transmitter.send(writer, chunks)
        self.metrics.add("logbench_requests_total", api=name)
        self.metrics.observe("logbench_request_seconds", time.perf_counter() - started, api=name)
        return True

    def _refuse(self, client: str, cause: str, message: str) -> bool:
        log.warning("closing connection from %s: %s", client, message)
        self.metrics.add("logbench_request_errors_total", cause=cause)
        return False

    async def _unsupported(
        self, writer: asyncio.StreamWriter, header: RequestHeader, client: str
    ) -> bool:
        """ApiVersions gets a v0 answer with UNSUPPORTED_VERSION and our ranges (KIP-511), so
        the client can retry with a version we speak; anything else closes, as Kafka does."""
        if header.api_key != ApiKey.API_VERSIONS:
            return self._refuse(
                client,
                "unsupported_version",
                f"api key {header.api_key} version {header.api_version} is not supported",
            )
        body = api_versions_body(ErrorCode.UNSUPPORTED_VERSION)
        chunks = encode_response(ApiKey.API_VERSIONS, 0, header.correlation_id, body)
        await self.transmitter.send(writer, chunks)
        return True

    # --- the metrics listener ------------------------------------------------------------

    async def _serve_metrics(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A minimal HTTP/1.0 endpoint: ``/metrics`` (Prometheus text), ``/metrics.json``."""
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if path == "/metrics":
                status, kind, payload = (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    (self.metrics.to_prometheus()),
                )
            elif path == "/metrics.json":
                status, kind, payload = "200 OK", "application/json", self.metrics.to_json()
            else:
                status, kind, payload = "404 Not Found", "text/plain", "try /metrics\n"
            data = payload.encode()
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(data)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _broker_gauges(self) -> Iterator[tuple[str, Labels, float]]:
        yield "logbench_offsets_skipped_records", (), self.offsets.skipped_records
        yield "logbench_request_memory_bytes", (), self.request_memory.in_use
        yield "logbench_request_memory_waiting", (), self.request_memory.waiting

    def _log_gauges(self) -> Iterator[tuple[str, Labels, float]]:
        for topic, count in sorted(self.store.topics().items()):
            for index in range(count):
                partition = self.store.partition(topic, index)
                if partition is None:
                    continue
                labels = (("partition", str(index)), ("topic", topic))
                yield "logbench_log_end_offset", labels, partition.log_end_offset
                yield "logbench_log_start_offset", labels, partition.log_start_offset
                yield "logbench_log_size_bytes", labels, partition.size_bytes
        for row in consumer_lag(self.offsets, self._log_end):
            labels = (
                ("group", row.group_id),
                ("partition", str(row.partition)),
                ("topic", row.topic),
            )
            yield "logbench_consumer_group_lag_records", labels, row.lag_records
            yield "logbench_consumer_group_lag_bytes", labels, row.lag_bytes

    def _log_end(self, topic: str, partition: int, committed: int) -> tuple[int, int] | None:
        found = self.store.partition(topic, partition)
        if found is None:
            return None
        committed = max(committed, found.log_start_offset)
        return found.log_end_offset, found.size_from(committed)
