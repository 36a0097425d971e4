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

What is asserted is what the seed predicts for the broker as is: its producer's acks are
slower with the replays than without them in every one of 4 rounds (a sign test: 93.75 %
confidence against "the replays make no difference"). The verdict is on the mean ack latency,
which the replays' stalls move in every round; the p99 (KAFKA-7504's figure, printed) also
moves with a single stall from elsewhere on a shared machine, so a calm phase can show a
worse p99 by chance. Whether the warming restores the latency
is printed, not asserted: it is the question the experiment asks.

Measured on the project's 2-core VM (2026-11-30, load average ~6 from other jobs), two runs of
4 rounds: as is, the producer's mean ack went from 1-2 ms calm to 13-16 ms with the replays,
and its p99 (median of rounds) from 19-30 ms to 105-132 ms, KAFKA-7504's range; with the
warming, the mean went from 1-2 ms to 3-8 ms and the p99 from 12-29 ms to 77-88 ms. The
mitigation takes away most of the average harm, not the p99 stalls. Why not is not
established: not the memory budget's reclaim (the same run without the budget: p99 48 -> 111
ms as is, 12 -> 72 ms warmed), and replays served from memory (no disk at all) raised the p99
too in some rounds (7 -> 18 ms, 21 -> 92 ms; not in every round), so the replays' share of 2
shared cores is the first suspect.
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
            rows.append(
                {
                    "round": round_,
                    "warm": warm,
                    "mean": (calm.mean_latency("producer"), busy.mean_latency("producer")),
                    "p99": (_p99(calm, "producer"), _p99(busy, "producer")),
                    "tail": (_p99(calm, "tail"), _p99(busy, "tail")),
                    "replay": sum(m.bytes for m in busy.by_role("replay")) / PHASE_SECONDS / 1e6,
                }
            )

    print(
        f"\n--- KAFKA-7504: hdd profile, page cache {BUDGET // MIB} MiB, topic "
        f"{TOPIC_BYTES // MIB} MiB, producer 4 MB/s + 2 tail consumers, then + 2 replays ---"
    )
    print(
        f"{'round':>5} {'broker':<13} {'produce mean ms':>16} {'produce p99 ms':>16} "
        f"{'tail p99 ms':>14} {'replay MB/s':>12}   (calm -> with replays)"
    )
    for row in rows:
        (m0, m1), (p0, p1), (t0, t1) = row["mean"], row["p99"], row["tail"]
        print(
            f"{row['round']:>5} {'warm-history' if row['warm'] else 'as is':<13} "
            f"{m0 * 1e3:6.1f} -> {m1 * 1e3:5.1f} {p0:7.1f} -> {p1:6.1f} {t0:6.1f} -> {t1:5.1f} "
            f"{row['replay']:12.0f}"
        )
    for warm in (False, True):
        mine = [row for row in rows if row["warm"] == warm]
        calm, busy = (sorted(row["p99"][i] for row in mine)[len(mine) // 2] for i in (0, 1))
        print(
            f"{'with warming' if warm else 'as is'}: producer p99, median of rounds, "
            f"{calm:.1f} ms calm -> {busy:.1f} ms with the replays"
        )
    assert all(row["replay"] > 0 for row in rows), "the replays must have read history"
    as_is = [row["mean"] for row in rows if not row["warm"]]
    assert all(busy > calm for calm, busy in as_is), as_is
