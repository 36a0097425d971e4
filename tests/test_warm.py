"""--warm-history-fetches: history fetch ranges are read into the page cache off the event loop."""

from __future__ import annotations

import pytest

from pytest_logbench.client import Consumer, fill

MIB = 1 << 20


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "off"])
def test_history_fetches_are_warmed_only_when_asked(broker_factory, page_cache, warm):
    broker = broker_factory(
        warm_history_fetches=warm, segment_bytes=8 * MIB, tail_window_bytes=4 * MIB
    )
    fill(broker.bootstrap, "events", 24 * MIB)
    files = broker.segment_files("events")
    assert page_cache.evict(files).complete
    consumer = Consumer(broker.bootstrap)
    try:
        history = consumer.consume("events", until_offset=8000)  # from 0: history
        tail = consumer.consume("events", offset=history.next_offset + 15_000)  # the last MiBs
    finally:
        consumer.close()
    assert history.bytes > 7 * MIB and tail.bytes > 0
    warmed = broker.metric("logbench_fetch_warmed_bytes_total")
    served = broker.metric("logbench_fetch_bytes_total", read="history")
    if warm:
        assert warmed == served > 0  # every history byte, and no tail byte, was warmed first
    else:
        assert warmed == 0
