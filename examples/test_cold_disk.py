"""Tutorial: cold is cold — the page cache against a commodity disk.

The seed: "Recently written segments are still in the kernel page cache, so consumers reading
the tail almost never touch disk — they read from RAM the producer just warmed", and its bakery:
"The moment someone orders a loaf from last week (a lagging consumer), staff must go to the cold
cellar".

On a virtual machine the cellar is often not cold: the virtual disk is backed by the host's
cache and reads 0.5-2 GB/s even after the guest evicted the pages, so warm and cold fetches
differ little (``test_page_cache.py`` prints how little here). A disk profile gives the broker
the disk the seed talks about: ``broker_factory(disk="hdd")`` puts the broker process in a
block-IO-throttled cgroup (a 7,200 rpm disk: ~150 MB/s, ~180 IOPS) for the disk holding its log
dir. Page-cache hits are untouched by the throttle; only reads that go to the disk are slowed.

Two brokers, each measured in interleaved rounds of one consumer reading 64 MiB from the page
cache (warm: a consumer at the tail) and the same 64 MiB after eviction (cold: a consumer
replaying history): one on this machine's own disk, one on the "hdd" profile. On the profile,
warm must be at least 3x cold, per round, with 95 % confidence (sign test on the median of the
round-by-round ratios; rounds are added while undecided).

Measured on the project's VM (2026-11-30): on its own disk warm 788 MB/s, cold 726 MB/s (1.0x);
on the hdd profile warm 1,037 MB/s, cold 145 MB/s (7.2x).
"""

from __future__ import annotations

import pytest

from pytest_logbench.assertions import assert_faster
from pytest_logbench.tables import print_comparison
from pytest_logbench.workloads import FetchWorkload

SIZE = "64 MiB"
ROUNDS = 5


@pytest.mark.slow
def test_warm_beats_cold_on_a_commodity_disk(broker_factory, measure):
    own_disk = broker_factory()
    hdd = broker_factory(disk="hdd")
    print(f"\nThe profile: {hdd.disk_throttle.profile}, on {hdd.disk_throttle.device.how}.")

    figures = {}
    for label, broker in (("this machine's disk", own_disk), ("hdd profile", hdd)):
        warm, cold = (
            FetchWorkload(broker, SIZE, cache="warm"),
            FetchWorkload(broker, SIZE, cache="cold"),
        )
        a, b = measure.compare(
            warm, cold, rounds=ROUNDS, names=(f"warm, {label}", f"cold, {label}")
        )
        ratios = print_comparison(f"one consumer reading {SIZE}, {label}", a, b)
        figures[label] = (a, b, ratios["throughput"])

    print(f"\n{'disk':<22} {'warm MB/s':>10} {'cold MB/s':>10} {'warm / cold':>12}")
    for label, (a, b, ratio) in figures.items():
        print(f"{label:<22} {a.mb_per_s.median:10,.0f} {b.mb_per_s.median:10,.0f} {ratio:11.1f}x")
    own_ratio, hdd_ratio = figures["this machine's disk"][2], figures["hdd profile"][2]
    print(
        f"On this machine's own disk a warm fetch was {own_ratio:.1f}x a cold one; on the "
        f"7,200 rpm profile {hdd_ratio:.1f}x: the cold rounds ran at the disk's pace, the warm "
        "ones at the page cache's, as the seed's consumers at the tail do."
    )
    warm_hdd, cold_hdd, _ = figures["hdd profile"]
    assert_faster(warm_hdd, cold_hdd, by=3.0, confidence=0.95)
