"""Tutorial: keep consumers caught up — throttle the replay, or run it off-peak.

The seed's design consequence: "keep consumers caught up. A fleet reading the tail is cheap; a
fleet replaying history competes for page cache and IO with everyone else", and its question:
"Which batch job replays from offset 0 during peak — and could it run off-peak?"

A broker with a commodity disk (``disk="hdd"``) and a finite page cache (a 64 MiB memory
budget) serves its peak traffic: a producer at 4 MB/s and two consumers at the tail. A batch
job must replay the topic from offset 0. Three ways to run it, in interleaved rounds:

- **unthrottled, at peak**: the replay reads as fast as the disk lets it, beside the peak;
- **throttled, at peak**: the same replay paced to 10 MB/s (``Fleet.replay(rate_mb_s=10)``,
  what a consumer quota or a rate-limited job does);
- **off-peak**: the peak runs alone, and the replay runs afterwards on its own.

Each phase prints the producer's ack latency (what the peak's users feel), the tail consumers'
fetch latency, and the replay's rate. Asserted: the peak's producer has a lower mean ack latency
beside the throttled replay than beside the unthrottled one, in every one of 4 rounds (a sign
test: 93.75 % confidence against "throttling makes no difference").
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
THROTTLE_MB_S = 10


def _peak(broker, replay: dict | None) -> FleetResult:
    fleet = Fleet(broker.bootstrap, "events").producer(rate_mb_s=4).tail(2)
    if replay is not None:
        fleet.replay(1, start="earliest", until=0.1, **replay)
    return fleet.run(seconds=PHASE_SECONDS)


@pytest.mark.slow
def test_a_throttled_replay_spares_the_peak(broker_factory, page_cache):
    broker = broker_factory(
        disk="hdd", memory_limit_bytes=BUDGET, segment_bytes=SEGMENT, tail_window_bytes=SEGMENT
    )
    fill(broker.bootstrap, "events", TOPIC_BYTES)
    os.sync()  # the fill's writeback would otherwise land in the first phase

    plans = {"unthrottled": {}, "throttled": {"rate_mb_s": THROTTLE_MB_S}, "off-peak": None}
    rows: list[tuple[int, str, FleetResult, float]] = []
    for round_ in range(ROUNDS):
        for name, replay in plans.items():
            page_cache.evict(broker.segment_files("events", 0)[:-2])  # history is on the disk
            peak = _peak(broker, replay)
            if replay is None:  # off-peak: the replay runs alone, after the peak
                alone = Fleet(broker.bootstrap, "events").replay(1, until=0.1)
                rate = alone.run(seconds=PHASE_SECONDS).median_mb_per_s("replay")
            else:
                rate = peak.median_mb_per_s("replay")
            rows.append((round_, name, peak, rate))

    print(
        f"\n--- keep consumers caught up: hdd profile, page cache {BUDGET // MIB} MiB, peak = "
        f"producer 4 MB/s + 2 tail consumers; one replay from offset 0 ---"
    )
    print(
        f"{'round':>5} {'replay':<12} {'produce mean/p99 ms':>20} {'tail p99 ms':>12} "
        f"{'replay MB/s':>12}"
    )
    for round_, name, peak, rate in rows:
        print(
            f"{round_:>5} {name:<12} {peak.mean_latency('producer') * 1e3:9.1f} / "
            f"{peak.latency('producer', 0.99) * 1e3:7.1f} {peak.latency('tail', 0.99) * 1e3:12.1f} "
            f"{rate:12.0f}"
        )
    means = {
        name: [peak.mean_latency("producer") for _, n, peak, _ in rows if n == name]
        for name in plans
    }
    for name, values in means.items():
        print(
            f"{name:<12} producer mean ack, median of rounds: "
            f"{sorted(values)[ROUNDS // 2] * 1e3:.1f} ms"
        )
    print(
        "Off-peak, the replay had the disk to itself; throttled, it took longer but left the "
        "peak's event loop free most of the time."
    )
    wins = [t < u for t, u in zip(means["throttled"], means["unthrottled"], strict=True)]
    assert all(wins), means
