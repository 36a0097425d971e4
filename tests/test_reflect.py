"""``logbench reflect`` against a live reference broker: real groups, real lags, real page cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_logbench.client import Consumer, HarnessClient, fill
from pytest_logbench.reflect import reflect, render

MIB = 1 << 20
LOGBENCH = Path(sys.executable).with_name("logbench")


@pytest.fixture
def busy(broker_factory):
    """32 MiB in one topic; group 'nightly-batch' committed at 0, 'dashboard' at the end; one
    replay of history and one tail read already served."""
    broker = broker_factory(segment_bytes=8 * MIB, tail_window_bytes=4 * MIB)
    fill(broker.bootstrap, "events", 32 * MIB)
    with HarnessClient(broker.bootstrap) as client:
        end = client.list_offset("events", 0, -1)[0]
        client.commit("nightly-batch", "events", 0, 0)
        client.commit("dashboard", "events", 0, end)
    consumer = Consumer(broker.bootstrap)
    try:
        consumer.consume("events", until_offset=end // 2)  # history
        consumer.consume("events", offset=end - 100)  # tail
    finally:
        consumer.close()
    return broker


def test_reflect_with_metrics_finds_the_replaying_group(busy):
    reflection = reflect(busy.bootstrap, metrics=busy.metrics_url, interval=0.2)
    assert "metrics" in reflection.sources["io"]
    assert reflection.history_total >= 16 * MIB > reflection.tail_total > 0
    [far, near] = reflection.groups  # sorted: furthest behind first
    assert (far.group, near.group) == ("nightly-batch", "dashboard")
    assert far.lag_bytes > 30 * MIB and near.lag_records == 0
    text = render(reflection, far_bytes=16 * MIB)
    assert "nightly-batch" in text and "REPLAYING from far behind" in text
    assert "dashboard" in text.split("REPLAYING")[1]  # listed after, near the tail


def test_reflect_without_metrics_reads_lags_and_the_page_cache(busy, page_cache):
    page_cache.evict(busy.segment_files("events")[:-1])
    reflection = reflect(
        busy.bootstrap, log_dir=busy.log_dir, groups=["nightly-batch", "dashboard"]
    )
    assert reflection.tail_bytes is None and "OffsetFetch" in reflection.sources["groups"]
    far = reflection.groups[0]
    assert far.group == "nightly-batch" and 28 * MIB < far.lag_bytes < 36 * MIB
    [events] = reflection.residency
    assert events.partition == "events-0" and events.sealed_resident < 0.1
    assert events.active_resident > 0.9
    text = render(reflection, far_bytes=16 * MIB)
    assert "1 of 2 group partitions are more than 16 MiB behind" in text


def test_the_console_script_answers_and_explains_what_it_cannot_see(busy):
    run = subprocess.run(
        [str(LOGBENCH), "reflect", "--bootstrap", busy.bootstrap, "--far", "16"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "no ListGroups" not in run.stdout  # the broker lists its groups: no --group needed
    assert "1 of 2 group partitions are more than 16 MiB behind" in run.stdout
    assert "3. Is traffic paying the TLS zero-copy tax?" in run.stdout
    run = subprocess.run(
        [
            str(LOGBENCH),
            "reflect",
            "--bootstrap",
            busy.bootstrap,
            "--metrics",
            busy.metrics_url,
            "--interval",
            "0.1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["groups"][0]["group"] == "nightly-batch"


def test_an_unreachable_broker_is_a_clear_error():
    run = subprocess.run(
        [str(LOGBENCH), "reflect", "--bootstrap", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("logbench reflect: 127.0.0.1:1:") and "Traceback" not in run.stderr


@pytest.mark.slow
def test_tls_cost_is_measured_when_asked(busy):
    reflection = reflect(busy.bootstrap, tls_cost=True)
    tls = reflection.tls
    assert tls is not None and tls["tls_mb_s"] > 0 and tls["sendfile_mb_s"] > 0
    # Encrypting in user space costs the sender more CPU per byte than handing pages over.
    assert tls["tls_cpu_s_per_gb"] > tls["sendfile_cpu_s_per_gb"]
    assert "sendfile" in render(reflection)


@pytest.mark.slow
def test_reflect_answers_from_group_lags_on_apache_kafka(broker_factory):
    """Kafka has no logbench metrics: the lags come from OffsetFetch and ListOffsets."""
    from pytest_logbench import kafka

    if (reason := kafka.unavailable_reason()) is not None:
        pytest.skip(reason)
    broker = broker_factory(kind="kafka")
    fill(broker.bootstrap, "events", 8 * MIB)
    with HarnessClient(broker.bootstrap) as client:
        end = client.list_offset("events", 0, -1)[0]
        client.commit("nightly-batch", "events", 0, 0)
        client.commit("dashboard", "events", 0, end)
    reflection = reflect(broker.bootstrap, groups=["dashboard", "nightly-batch"])
    assert [(g.group, g.lag_records) for g in reflection.groups] == [
        ("nightly-batch", end),
        ("dashboard", 0),
    ]
    assert 7 * MIB < reflection.groups[0].lag_bytes < 9 * MIB
    print(render(reflection, far_bytes=4 * MIB))
