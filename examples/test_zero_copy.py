"""Tutorial: zero-copy with sendfile(2), and the TLS tax.

The seed: "To ship bytes to a consumer, Kafka asks the kernel to copy straight from the page
cache to the socket — bypassing user space entirely ... Enabling TLS disables zero-copy, because
the bytes must be encrypted in user space — a real, measurable cost of encryption."

Three reference brokers hold the same kind of data: one ships fetches with ``os.sendfile``, one
with ``pread`` + ``send`` (``--copy``), one over TLS (which must copy and encrypt). The harness
consumer reads 128 MiB from each, warm in the page cache, in interleaved rounds (zero-copy,
other, zero-copy, other, ...) so the machine's drift hits both alike. Two figures per set-up:
MB/s as the consumer saw it, and the broker's CPU seconds per GB sent — the seed's claim is
about the sender's work, and on loopback the receiver shares the same two cores, so CPU per GB
shows the saving more clearly than MB/s does.

Then the proof that the bytes really took the path the counters claim: ``assert_zero_copy``
checks the broker's counters and, where the kernel lets us watch, its system calls.
"""

from __future__ import annotations

import pytest

from pytest_logbench.assertions import assert_zero_copy
from pytest_logbench.client import Consumer
from pytest_logbench.tables import print_comparison
from pytest_logbench.workloads import FetchWorkload, client_options

SIZE = "128 MiB"
ROUNDS = 5


@pytest.mark.parametrize("other", ["copy", "tls"])
def test_zero_copy_against(broker_factory, measure, other):
    zero_copy = broker_factory()
    slow_path = broker_factory(copy=other == "copy", tls=other == "tls")
    workloads = (FetchWorkload(zero_copy, SIZE), FetchWorkload(slow_path, SIZE))
    a, b = measure.compare(*workloads, rounds=ROUNDS, names=("zerocopy", other))
    ratios = print_comparison(f"fetching {SIZE} warm: sendfile vs {other}", a, b)

    speed, cpu = ratios["throughput"], ratios.get("cpu")
    print(f"sendfile moved the bytes {speed:.2f}x as fast as the {other} path", end="")
    if cpu is None:
        print(" (broker CPU not measured here).")
    else:
        print(f" and cost the broker {cpu:.2f}x the CPU per GB.")

    for broker, workload, name in ((zero_copy, workloads[0], "zerocopy"),
                                   (slow_path, workloads[1], other)):
        consumer = Consumer(broker.bootstrap, **client_options(broker))
        try:
            report = assert_zero_copy(broker, during=lambda c=consumer, t=workload.topic:
                                      c.consume(t))
        except AssertionError as verdict:
            print(f"{name} broker, checked: {str(verdict).splitlines()[0]}")
            assert name != "zerocopy", verdict
        else:
            print(f"{name} broker, checked: {report.message().splitlines()[0]}")
            assert name == "zerocopy"
        finally:
            consumer.close()
