"""The broker's admission bookkeeping on its own: connection quotas and the request memory
budget (the wire tests in test_broker_limits.py show both at work in a broker process)."""

import asyncio

import pytest

from reference_broker.admission import ConnectionQuotas, RequestMemory


def test_quotas_count_per_address_and_in_total() -> None:
    quotas = ConnectionQuotas(max_connections=3, max_per_ip=2)
    assert [quotas.admit("a"), quotas.admit("a"), quotas.admit("a")] == [
        None,
        None,
        "max.connections.per.ip",
    ]
    assert quotas.admit("b") is None
    assert quotas.admit("c") == "max.connections"
    quotas.release("a")
    assert quotas.admit("c") is None


async def _reserve(
    memory: RequestMemory, size: int, log: list[str], name: str, release: asyncio.Event
) -> None:
    async with memory.reserve(size):
        log.append(name)
        await release.wait()


def test_reservations_that_fit_are_served_in_arrival_order() -> None:
    async def scenario() -> None:
        memory = RequestMemory(100)
        log: list[str] = []
        events = {name: asyncio.Event() for name in "abcde"}
        sizes = [("a", 60), ("b", 60), ("c", 10), ("d", 30), ("e", 10)]
        tasks = [
            asyncio.create_task(_reserve(memory, size, log, name, events[name]))
            for name, size in sizes
        ]
        await asyncio.sleep(0)
        # b does not fit next to a; c and d do and are not held up behind b; e no longer fits.
        assert (log, memory.in_use, memory.waiting) == (["a", "c", "d"], 100, 2)
        events["a"].set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert (log, memory.in_use) == (["a", "c", "d", "b"], 100)
        for event in events.values():
            event.set()
        await asyncio.gather(*tasks)
        assert log[-1] == "e" and (memory.in_use, memory.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_cancelled_waiter_gives_up_its_place() -> None:
    async def scenario() -> None:
        memory = RequestMemory(100)
        log: list[str] = []
        hold, never = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(_reserve(memory, 90, log, "first", hold))
        blocked = asyncio.create_task(_reserve(memory, 50, log, "blocked", never))
        await asyncio.sleep(0)
        assert (log, memory.waiting) == (["first"], 1)
        blocked.cancel()  # e.g. the broker stops while it waits
        await asyncio.gather(blocked, return_exceptions=True)
        assert (memory.in_use, memory.waiting) == (90, 0)
        hold.set()
        await first
        assert (memory.in_use, memory.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_reservation_larger_than_the_budget_is_a_bug() -> None:
    async def scenario() -> None:
        async with RequestMemory(10).reserve(11):
            pass

    with pytest.raises(ValueError, match="can never fit"):
        asyncio.run(scenario())
