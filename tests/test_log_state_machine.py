"""Log semantics as a Hypothesis state machine against a real broker, plus topic-name rules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from hypothesis.stateful import rule

from pytest_logbench.client import HarnessClient, KafkaError
from pytest_logbench.statemachine import LogStateMachine, run_log_state_machine
from pytest_logbench.strategies import (
    BatchSpec,
    batches,
    examples,
    invalid_topic_names,
    shrink_timeout,
    topic_names,
)
from reference_broker.errors import ErrorCode
from reference_broker.records import Record

pytestmark = pytest.mark.conformance

pytest_plugins = ["pytester"]

BATCH = BatchSpec((Record(0, 1_000, b"key", b"value", []),))


@pytest.mark.slow
@shrink_timeout()
def test_log_semantics_hold_after_every_step(broker_factory: Any) -> None:
    """LogStateMachine on reference brokers with 1 KiB segments and retention.bytes."""
    run_log_state_machine(broker_factory)


class RepeatedProduceLog(LogStateMachine):
    """The README's example of a rule added by a subclass: the same batch produced twice is
    stored twice, at consecutive offsets (no deduplication without idempotence)."""

    @rule(spec=batches(max_records=3))
    def produce_twice(self, spec: BatchSpec) -> None:
        first = self.produce(0, [spec])
        second = self.produce(0, [spec])
        if first is not None and second is not None:
            assert second == first + len(spec)
            self.read(0, first)


@pytest.mark.slow
@shrink_timeout()
def test_a_subclass_adds_rules(broker_factory: Any) -> None:
    run_log_state_machine(broker_factory, RepeatedProduceLog, settings=examples(10))


@examples(40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    valid=st.lists(topic_names(), max_size=3), invalid=st.lists(invalid_topic_names(), max_size=3)
)
def test_topic_names_follow_kafkas_rule(broker: Any, valid: list[str], invalid: list[str]) -> None:
    """Valid names can be created; invalid ones get INVALID_TOPIC_EXCEPTION from CreateTopics,
    and a produce to one fails (Kafka says UNKNOWN_TOPIC_OR_PARTITION: it auto-creates topics
    on Metadata, not on Produce). One broker serves every example."""
    with HarnessClient(broker.bootstrap) as client:
        for name in invalid:
            with pytest.raises(KafkaError) as refused:
                client.create_topic(name)
            assert refused.value.code == ErrorCode.INVALID_TOPIC_EXCEPTION
            with pytest.raises(KafkaError) as refused:
                client.produce(name, 0, BATCH.encode())
            assert refused.value.code in (
                ErrorCode.INVALID_TOPIC_EXCEPTION,
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            )
        for name in valid:
            try:
                client.create_topic(name)
            except KafkaError as exc:  # Kafka refuses names that collide in '.' versus '_'
                assert exc.code == ErrorCode.INVALID_TOPIC_EXCEPTION and "collides" in str(exc)


BROKEN_MACHINE = """
from hypothesis.stateful import rule

from pytest_logbench.statemachine import LogStateMachine, run_log_state_machine
from pytest_logbench.strategies import batches


class BrokenLog(LogStateMachine):
    shrink_seconds = {shrink_seconds}

    @rule(spec=batches(max_records=5))
    def produce_small_batches_only(self, spec):
        self.produce(0, [spec])
        assert len(spec) < 3, "a deliberate failure"


def test_broken(broker_factory):
    run_log_state_machine(broker_factory, BrokenLog)
"""


@pytest.mark.slow
def test_a_failing_machine_prints_its_blob_and_stops_shrinking_at_its_bound(pytester):
    """With ``shrink_seconds = 0`` Hypothesis stops at its first shrink step and says so; the
    report carries the ``@reproduce_failure`` blob either way."""
    pytester.makepyfile(BROKEN_MACHINE.format(shrink_seconds=0))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*a deliberate failure*", "*stopped because it is making very slow progress*"]
    )
    result.stdout.fnmatch_lines(["*@reproduce_failure(*"])
