"""Tutorial: Reflect — ask a busy broker the seed's three questions.

The seed closes with: "Look at your worst-performing broker. How much of its IO is tail reads vs
history replays right now? Which batch job replays from offset 0 during peak — and could it run
off-peak? Are you paying the TLS zero-copy tax on internal traffic?"

``logbench reflect --bootstrap HOST:PORT [--metrics URL] [--log-dir DIR] [--tls-cost]`` asks a
live broker. Here the broker is made to look like the seed's worst one: a 128 MiB topic, a
producer and two consumers at the tail (group ``dashboard``, caught up), and a batch job
(group ``nightly-batch``, committed at offset 0) replaying history, all at once. While they run,
``reflect`` samples the broker's metrics for a second and reads the page cache of its log dir;
then it prints its answers, as the console script does.

Asserted: reflect sees what was staged. The replay's share of the fetch bytes "right now" is
the larger one: the replay is paced to 20 MB/s, the two tail consumers read what the producer
writes (4 MB/s, so 8 MB/s together); measured here 27 MB/s of history against 8 MB/s of tail,
a margin that one 1-second sample, taken once all three read, decides. And ``nightly-batch``
is the group named as replaying from far behind, ``dashboard`` as near the tail (exact:
committed offsets).
"""

from __future__ import annotations

import threading
import time

import pytest

from pytest_logbench.client import HarnessClient, fill
from pytest_logbench.lag import Fleet
from pytest_logbench.reflect import reflect, render

MIB = 1 << 20


def _await_reads(broker, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reads = [broker.metric("logbench_fetch_reads_total", read=r) for r in ("tail", "history")]
        if min(reads) >= 10:
            return
        time.sleep(0.1)
    raise AssertionError(f"the fleet did not start reading within {timeout} s")


@pytest.mark.slow
def test_reflect_on_a_broker_with_a_replay_at_peak(broker_factory):
    broker = broker_factory(segment_bytes=8 * MIB, tail_window_bytes=8 * MIB)
    fill(broker.bootstrap, "events", 128 * MIB)
    with HarnessClient(broker.bootstrap) as client:
        end = client.list_offset("events", 0, -1)[0]
        client.commit("nightly-batch", "events", 0, 0)
        client.commit("dashboard", "events", 0, end)

    peak = Fleet(broker.bootstrap, "events").producer(rate_mb_s=4).tail(2)
    peak.replay(1, until=0.25, rate_mb_s=20)  # paced, so it is still replaying when sampled
    running = threading.Thread(target=peak.run, kwargs={"seconds": 8.0})
    running.start()
    try:
        _await_reads(broker)  # members start in processes of their own: wait for all three
        reflection = reflect(
            broker.bootstrap,
            metrics=broker.metrics_url,
            log_dir=broker.log_dir,
            interval=1.0,
            tls_cost=True,
        )
    finally:
        running.join()

    print(
        f"\n$ logbench reflect --bootstrap {broker.bootstrap} --metrics ... --log-dir ... "
        "--tls-cost --far 32"
    )
    print(render(reflection, far_bytes=32 * MIB))
    assert reflection.history_bytes > reflection.tail_bytes > 0
    assert [g.group for g in reflection.groups] == ["nightly-batch", "dashboard"]
    assert reflection.groups[0].lag_bytes > 32 * MIB > reflection.groups[1].lag_bytes
