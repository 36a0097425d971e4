"""How the transmitters behave at the edges: a client that leaves while its fetch waits, a
slow reader, a client that leaves in the middle of a response."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from pytest_logbench.client import HarnessClient, Producer
from pytest_logbench.receive import fetch_frame
from pytest_logbench.workloads import client_options
from reference_broker.protocol import ApiKey, encode_request


@pytest.mark.parametrize("options", [{}, {"copy": True}], ids=["zerocopy", "copy"])
def test_a_client_leaving_during_a_parked_fetch_is_not_an_error(broker_factory, options):
    """The fetch waits at the log end (long polling); the client hangs up; an append wakes the
    fetch, whose answer has no one to go to. That is an ordinary end of a connection: no
    traceback in the broker's log, and the broker keeps serving."""
    broker = broker_factory(**options)
    producer = Producer(broker.bootstrap, **client_options(broker))
    producer.produce("parked", 1 << 20)
    with HarnessClient(broker.bootstrap) as waiting:
        end = waiting.list_offset("parked", 0, -1)[0]
        body = {
            "replica_id": -1,
            "max_wait_ms": 1500,
            "min_bytes": 1 << 30,
            "max_bytes": 8 << 20,
            "isolation_level": 0,
            "session_id": 0,
            "session_epoch": -1,
            "forgotten_topics_data": [],
            "rack_id": "",
            "topics": [
                {
                    "topic": "parked",
                    "partitions": [
                        {
                            "partition": 0,
                            "fetch_offset": end - 1,
                            "log_start_offset": -1,
                            "partition_max_bytes": 8 << 20,
                            "current_leader_epoch": -1,
                        }
                    ],
                }
            ],
        }
        waiting.sock.sendall(encode_request(ApiKey.FETCH, 11, 1, "leaver", body))
        time.sleep(0.3)  # the fetch is parked, waiting for 1 GiB that will not come
    producer.produce("parked", 4 << 20)  # wakes the parked fetch: it answers when max_wait ends
    time.sleep(2.0)
    producer.produce("parked", 1 << 20)  # the broker still serves
    producer.close()
    log = broker.stderr_tail()
    assert "Traceback" not in log and "ERROR" not in log, log


def _fetch_everything(broker, topic: str) -> tuple[socket.socket, int]:
    """A connection that asked for ``topic``'s whole partition 0 in one fetch (offset 0), and
    the size of the response it will receive."""
    sock = socket.create_connection((broker.host, broker.port), timeout=30)
    frame, [at] = fetch_frame(topic, [0], "slow-reader", 64 << 20, 100)
    frame[at : at + 8] = (0).to_bytes(8, "big")
    sock.sendall(frame)
    head = sock.recv(4, socket.MSG_WAITALL)
    return sock, int.from_bytes(head, "big")


def _read(sock: socket.socket, size: int, pause: float = 0.0) -> bytearray:
    """``size`` bytes from ``sock``, 256 KiB at a time, sleeping ``pause`` after each."""
    received = bytearray()
    while len(received) < size:
        piece = sock.recv(min(256 << 10, size - len(received)))
        assert piece, f"connection closed after {len(received)} of {size} bytes"
        received += piece
        time.sleep(pause)
    return received


def test_a_slow_reader_gets_a_large_zero_copy_response_whole(broker):
    """A response far larger than the socket buffers, read slowly: the broker waits for room
    again and again (a partial sendfile each time) and every byte of the segment arrives, in
    order, after the response header."""
    Producer(broker.bootstrap).produce("slow", 16 << 20)
    [segment] = broker.segment_files("slow")
    stored = segment.read_bytes()
    sock, size = _fetch_everything(broker, "slow")
    with sock:
        response = _read(sock, size, pause=0.002)
    assert size > len(stored) and response.endswith(stored)


def test_a_client_leaving_in_the_middle_of_a_zero_copy_response_ends_only_its_connection(
    broker,
):
    """The client reads 1 MiB of a 16 MiB response and hangs up while the broker waits for
    room in the socket: that connection ends quietly, and the broker serves the next one."""
    Producer(broker.bootstrap).produce("leaver", 16 << 20)
    sock, _ = _fetch_everything(broker, "leaver")
    with sock:
        sock.recv(1 << 20, socket.MSG_WAITALL)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    time.sleep(0.5)
    sock, size = _fetch_everything(broker, "leaver")
    with sock:
        assert len(_read(sock, size)) == size
    log = broker.stderr_tail()
    assert "Traceback" not in log and "ERROR" not in log, log
