"""Tutorial: KAFKA-7504 — a replay on a slow disk stalls everyone, and warming it off the loop.

The seed: "lagging consumers ... force cold-segment reads that evict the hot pages everyone
else relies on", and "a fleet replaying history competes for page cache and IO with everyone
else". KAFKA-7504 measured the worst of it in Kafka: when lagging consumers make the network
threads' ``sendfile`` wait for the disk, every other client on those threads waits too, and the
producers' p99 went from under 20 ms to 50-200 ms. The fix proposed there (never merged into
Kafka) reads the cold range into the page cache on another thread first, so the network thread
only ever sends from memory.

The reference broker has the same shape: one event loop sends every fetch with ``sendfile``.
The experiment gives it a commodity disk (``disk="hdd"``: 150 MB/s, 180 IOPS) and a finite page
cache (a 64 MiB memory budget), fills a topic far larger than that, and runs a producer (4 MB/s,
acks=1) with two tail consumers, alone ("calm") and with two consumers replaying most
of the log from offset 0 ("replay"). It does that on two brokers side by side, phase by phase:
one as is, one with ``warm_history_fetches=True`` (``reference_broker/warm.py``: a worker thread
sendfiles each history range to /dev/null, which waits for the disk there, before the loop sends
it). Rounds alternate between the brokers, so load on the machine hits both alike.

What is asserted is what the seed predicts for the broker as is: its producer's ack p99 is
worse with the replay than without it in every one of 4 rounds (a sign test: 93.75 %
confidence against "the replay makes no difference"). Whether the warming restores the latency
is printed, not asserted: it is the question the experiment asks.

Measured on the project's 2-core VM (2026-11-30, load average ~6 from other jobs), medians of 4
rounds: as is, the producer's ack p99 went from 30 ms calm to 132 ms with the replays (tail
consumers' fetch p99 from ~45 to ~140 ms), KAFKA-7504's range; with the warming, from 29 to
77 ms (tail ~60 to ~85 ms). The mitigation took away about half of what the replays added,
not all of it. Why is not established: not the memory budget's reclaim (without the budget,
same run: as is 48 -> 111 ms, warmed 12 -> 72 ms); the suspects left are the replays' share of
2 cores shared with other jobs, and the broker's loop taking the GIL back from the warming
threads at every handoff.
"""

from __future__ import annotations

import os

import pytest

from pytest_logbench.client import fill
from pytest_logbench.lag import Fleet, FleetResult

MIB = 1 << 20
BUDGET = 64 * MIB
TOPIC_BYTES = 192 * MIB
SEGMENT = 16 * MIB
PHASE_SECONDS = 1.5
ROUNDS = 4


def _p99(result: FleetResult, role: str) -> float:
    return result.latency(role, 0.99) * 1e3


def _phase(broker, page_cache, replay: bool) -> FleetResult:
    page_cache.evict(broker.segment_files("events", 0)[:-2])  # history is on the disk
    fleet = Fleet(broker.bootstrap, "events").producer(rate_mb_s=4).tail(2)
    if replay:
        # Two replays of different history (the older and the newer half), each its own disk reads.
        fleet.replay(1, start="earliest", until=0.5).replay(1, start=0.5, until=0.1)
    return fleet.run(seconds=PHASE_SECONDS)


@pytest.mark.slow
def test_a_replay_on_a_slow_disk_stalls_the_producer(broker_factory, page_cache):
    brokers = {
        warm: broker_factory(
            disk="hdd",
            memory_limit_bytes=BUDGET,
            segment_bytes=SEGMENT,
            tail_window_bytes=SEGMENT,
            warm_history_fetches=warm,
        )
        for warm in (False, True)
    }
    for broker in brokers.values():
        fill(broker.bootstrap, "events", TOPIC_BYTES)
    os.sync()  # the fill's writeback would otherwise land in the first phase

    rows = []
    for round_ in range(ROUNDS):
        for warm, broker in brokers.items():
            calm = _phase(broker, page_cache, replay=False)
            busy = _phase(broker, page_cache, replay=True)
            replayed = sum(m.bytes for m in busy.by_role("replay"))
            rows.append(
                (
                    round_,
                    warm,
                    _p99(calm, "producer"),
                    _p99(busy, "producer"),
                    _p99(calm, "tail"),
                    _p99(busy, "tail"),
                    replayed / PHASE_SECONDS / 1e6,
                )
            )

    print(
        f"\n--- KAFKA-7504: hdd profile, page cache {BUDGET // MIB} MiB, topic "
        f"{TOPIC_BYTES // MIB} MiB, producer 4 MB/s + 2 tail consumers, then + 2 replays ---"
    )
    print(
        f"{'round':>5} {'broker':<16} {'produce p99 calm':>17} {'replay':>8} "
        f"{'tail p99 calm':>14} {'replay':>8} {'replay MB/s':>12}"
    )
    for round_, warm, p_calm, p_busy, t_calm, t_busy, rate in rows:
        name = "warm-history" if warm else "as is"
        print(
            f"{round_:>5} {name:<16} {p_calm:14.1f} ms {p_busy:5.1f} ms "
            f"{t_calm:11.1f} ms {t_busy:5.1f} ms {rate:12.0f}"
        )
    for warm in (False, True):
        mine = [r for r in rows if r[1] == warm]
        name = "with warming" if warm else "as is"
        worse = sum(r[3] > r[2] for r in mine)
        print(
            f"{name}: producer p99 rose with the replay in {worse} of {len(mine)} rounds "
            f"(median {sorted(r[2] for r in mine)[len(mine) // 2]:.1f} -> "
            f"{sorted(r[3] for r in mine)[len(mine) // 2]:.1f} ms)"
        )
    as_is = [r for r in rows if not r[1]]
    assert all(r[6] > 0 for r in rows), "the replays must have read history"
    assert all(r[3] > r[2] for r in as_is), as_is
