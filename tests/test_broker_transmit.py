"""How the transmitters behave at the edges: a client that leaves while its fetch waits."""

from __future__ import annotations

import time

import pytest

from pytest_logbench.client import HarnessClient, Producer
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
