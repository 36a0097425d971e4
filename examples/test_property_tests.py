"""Tutorial: property tests — state what the log promises, let Hypothesis look for the exception.

The seed's log is "append-only": whatever is produced gets the next offsets, and a consumer
reading from any offset gets exactly the records from there on, in order. An example-based test
checks that for the few batches its author thought of; a property test states it for *all*
batches and lets Hypothesis generate them (records with and without keys, values, headers,
compression codecs, batch sizes, timestamps out of order) and, when one breaks the property,
shrink it to the smallest case that still does.

Two runs against one reference broker, each example in a fresh topic:

1. The promise: produce 1-4 random batches, fetch from a random offset, decode what comes back,
   and compare record by record with a model (``BatchSpec.at``: the records the batches must
   hold once they got their offsets). It holds in every example (asserted: any counterexample
   fails the test, printed minimal, with the blob to reproduce it).
2. A belief that is wrong: "a fetch at offset N starts with record N". Kafka answers from the
   batch that holds N (whole batches, KIP-74: the broker never cuts one open), so the first
   record can be older. ``hypothesis.find`` looks for a case where the belief fails and shrinks
   it: the minimal one is printed, and asserted to be the smallest possible — one batch of two
   records, fetched at offset 1.

``LOGBENCH_HYPOTHESIS_PROFILE=nightly`` runs ten times as many examples.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from pytest_logbench.client import HarnessClient
from pytest_logbench.log_model import fetch_batches
from pytest_logbench.strategies import BatchSpec, batches, examples
from reference_broker.records import Record

topics = itertools.count()
log_contents = st.tuples(st.lists(batches(max_records=4), min_size=1, max_size=4), st.data())


def _produce(client: HarnessClient, specs: list[BatchSpec]) -> tuple[str, list]:
    """Produce ``specs`` into a fresh topic; its name and the model of what it holds."""
    topic = f"property-{next(topics)}"
    client.ensure_topic(topic)
    model = []
    for spec in specs:
        model += spec.at(client.produce(topic, 0, spec.encode()))
    return topic, model


def _fetched(client: HarnessClient, topic: str, offset: int) -> list:
    return [
        r for _, batch in fetch_batches(client, topic, 0, offset) for _, rs in batch for r in rs
    ]


@pytest.mark.slow
def test_the_log_keeps_its_promise_and_a_wrong_belief_is_shrunk(broker):
    client = HarnessClient(broker.bootstrap)
    tried = {"examples": 0, "records": 0}

    @examples(25, deadline=None)  # each example talks to a real broker
    @given(log_contents)
    def reading_from_any_offset_returns_the_rest_in_order(contents) -> None:
        specs, data = contents
        topic, model = _produce(client, specs)
        offset = data.draw(st.integers(0, len(model)), label="fetch offset")
        got = [r for r in _fetched(client, topic, offset) if r.offset >= offset]
        assert got == model[offset:]
        tried["examples"] += 1
        tried["records"] += len(model)

    def starts_elsewhere(contents: tuple[list[int], int]) -> bool:
        sizes, offset = contents
        specs = [BatchSpec(tuple(Record(i, 0, None, b"", []) for i in range(n))) for n in sizes]
        topic, _ = _produce(client, specs)
        fetched = _fetched(client, topic, offset)
        return bool(fetched) and fetched[0].offset != offset

    try:
        reading_from_any_offset_returns_the_rest_in_order()
        # Only the shape matters to the belief: batch sizes and an offset (records are empty).
        shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).flatmap(
            lambda sizes: st.tuples(st.just(sizes), st.integers(0, sum(sizes) - 1))
        )
        wrong = find(shapes, starts_elsewhere, settings=settings(database=None))
    finally:
        client.close()

    sizes, offset = wrong
    print(
        f"\nThe promise held in {tried['examples']} generated logs ({tried['records']} records "
        "in all): a fetch from any offset returned exactly the records from there on."
    )
    print(
        f"The belief 'a fetch at offset N starts with record N' failed; Hypothesis shrank the "
        f"counterexample to {len(sizes)} batch(es) of {sizes} record(s), "
        f"fetched at offset {offset}: the broker answered from the start of the batch holding "
        "it, as Kafka does."
    )
    assert tried["examples"] > 0
    assert sizes == [2] and offset == 1
